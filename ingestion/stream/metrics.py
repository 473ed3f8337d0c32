"""The consumer's Prometheus metrics: throughput, outcomes, lag; served by `serve_metrics`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from churnops.ingestion.stream.consumer import Committed

_OUTCOMES = ("received", "accepted", "quarantined", "duplicates")


class StreamMetrics:
    """Counters and gauges of one consumer, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "churnops_stream_records",
            "Records the consumer handled, by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.batches = Counter("churnops_stream_batches", "Micro-batches committed.", registry=self.registry)
        self.skipped = Counter(
            "churnops_stream_redelivered_skipped",
            "Redelivered records that were committed already (acknowledged, not written again).",
            registry=self.registry,
        )
        self.dead = Counter(
            "churnops_stream_dead_letters",
            "Records moved to the dead-letter subject.",
            registry=self.registry,
        )
        self.failures = Counter(
            "churnops_stream_batch_failures", "Micro-batches whose processing failed.", registry=self.registry
        )
        self.lag = Gauge(
            "churnops_stream_lag",
            "Messages on the stream the consumer has not received yet.",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "churnops_stream_batch_seconds",
            "Seconds from fetching a micro-batch to acknowledging it.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )

    def count(self, done: Committed, *, seconds: float, lag: int) -> None:
        """Count one acknowledged micro-batch.

        Args:
            done: What it did.
            seconds: Its wall time.
            lag: The broker's pending count after its last message.
        """
        for appended in done.appended:
            for outcome in _OUTCOMES:
                self.records.labels(appended.source, outcome).inc(getattr(appended, outcome))
        self.skipped.inc(done.skipped)
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.lag.set(lag)


def serve_metrics(metrics: StreamMetrics, *, port: int, host: str = "127.0.0.1") -> None:
    """Serve `/metrics` on a background thread.

    Args:
        metrics: The consumer's metrics.
        port: The TCP port.
        host: The address to bind (default: this machine only).
    """
    start_http_server(port, addr=host, registry=metrics.registry)
