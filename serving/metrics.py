"""Prometheus metrics of one service instance (its own registry, so apps in one process never clash)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from churnops.serving.models import ModelSet, UnauditedChampion
from churnops.serving.prediction_log import PredictionLog
from churnops.training.names import CHALLENGER, CHAMPION

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14_400, 43_200, 86_400, 172_800)


class ServingMetrics:
    """The service's counters, histograms and gauges.

    Args:
        endpoints: The paths labelled by name; any other path is labelled `other`, which keeps
            label cardinality bounded whatever clients request.
    """

    def __init__(self, *, endpoints: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.endpoints = endpoints
        r = self.registry
        self.requests = Counter(
            "churnops_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "churnops_request_latency_seconds",
            "Time from request received to response sent, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "churnops_request_errors",
            "Responses with status >= 400, by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.predictions = Counter(
            "churnops_predictions", "Customers scored, by feature status.", ["feature_status"], registry=r
        )
        self.snapshot_age = Histogram(
            "churnops_feature_snapshot_age_seconds",
            "Age of the online snapshot each prediction used (customers with a snapshot only).",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.model_version = Gauge(
            "churnops_model_version",
            "Registered version behind each alias (0: none loaded).",
            ["alias"],
            registry=r,
        )
        self.model_compiled = Gauge(
            "churnops_model_compiled",
            "1 when the model behind the alias is scored by the compiled path, 0 when by predict_proba "
            "(slower; /ready says why) or when none is loaded.",
            ["alias"],
            registry=r,
        )
        self.unaudited = Gauge(
            "churnops_champion_unaudited",
            "1 for the version the champion alias points at without an audited promotion or rollback "
            "(not served: the previous champion keeps answering; /ready says why); 0 once resolved.",
            ["version"],
            registry=r,
        )
        self.model_swaps = Counter("churnops_model_swaps", "Times the served models changed.", registry=r)
        self.model_errors = Counter(
            "churnops_model_refresh_errors", "Alias polls that failed (previous models kept).", registry=r
        )
        for alias in (CHAMPION, CHALLENGER):
            self.model_version.labels(alias=alias).set(0)
            self.model_compiled.labels(alias=alias).set(0)

    def watch_log(self, prediction_log: PredictionLog) -> None:
        """Export the prediction log writer's queue and counters.

        Args:
            prediction_log: The running log.
        """
        r = self.registry
        stats = prediction_log.stats
        Gauge("churnops_prediction_log_queue", "Entries waiting to be written.", registry=r).set_function(
            prediction_log.queue_size
        )
        Gauge("churnops_prediction_log_rows_written", "Rows appended to the log.", registry=r).set_function(
            lambda: stats.rows_written
        )
        Gauge(
            "churnops_shadow_predictions", "Rows the challenger scored in shadow.", registry=r
        ).set_function(lambda: stats.shadow_scored)
        Gauge("churnops_prediction_log_dropped", "Entries dropped on a full queue.", registry=r).set_function(
            lambda: stats.entries_dropped
        )
        Gauge(
            "churnops_prediction_log_write_errors", "Batches that failed to write.", registry=r
        ).set_function(lambda: stats.write_errors)
        Gauge(
            "churnops_prediction_log_rows_recovered",
            "Answered rows replayed from the journal at start-up (the last run ended unclean).",
            registry=r,
        ).set_function(lambda: stats.rows_recovered)

    def models_changed(self, models: ModelSet) -> None:
        """Record a swap of the served models.

        Args:
            models: The models now served.
        """
        for alias, model in ((CHAMPION, models.champion), (CHALLENGER, models.challenger)):
            self.model_version.labels(alias=alias).set(0 if model is None else float(model.version))
            self.model_compiled.labels(alias=alias).set(int(model is not None and model.compiled is not None))
        self.model_swaps.inc()

    def champion_unaudited(self, unaudited: UnauditedChampion | None) -> None:
        """Record that the champion alias points at an unaudited version, or no longer does.

        Args:
            unaudited: The unaudited version, or None once the alias is served again.
        """
        # Earlier reports drop to 0 rather than disappear, so a dashboard still shows the episode.
        for sample in self.unaudited.collect()[0].samples:
            self.unaudited.labels(version=sample.labels["version"]).set(0)
        if unaudited is not None:
            self.unaudited.labels(version=unaudited.version).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware that counts and times every HTTP request.

    Args:
        app: The application to wrap.
        metrics: Where to record.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        metrics = self._metrics
        start = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in metrics.endpoints else "other"
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
            metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            if status >= 400:
                metrics.errors.labels(endpoint=endpoint, status=str(status)).inc()
