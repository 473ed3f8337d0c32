"""Prometheus metrics of one intake service (its own registry, so apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

# Paths whose last segment is a source; any other path is labelled by itself or `other`.
_SOURCE_ROUTES = ("/v1/events/", "/v1/uploads/", "/v1/schemas/")
_PLAIN_ROUTES = frozenset({"/health", "/metrics", "/docs", "/openapi.json"})


class IntakeMetrics:
    """The intake's counters.

    Args:
        sources: The sources with a contract; any other name is labelled `unknown`, which keeps
            label cardinality bounded whatever clients request.
        connected: Reports whether the broker connection is up (for a gauge).
    """

    def __init__(self, *, sources: Collection[str], connected: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        self.sources = frozenset(sources)
        r = self.registry
        self.requests = Counter(
            "churnops_intake_requests",
            "HTTP requests by route, source and status.",
            ["route", "source", "status"],
            registry=r,
        )
        self.published = Counter(
            "churnops_intake_rows_published", "Records the broker stored, by source.", ["source"], registry=r
        )
        self.duplicates = Counter(
            "churnops_intake_rows_duplicate",
            "Records the broker already had (a re-sent request or upload), by source.",
            ["source"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "churnops_intake_upload_bytes", "Bytes of accepted uploads, by source.", ["source"], registry=r
        )
        broker = Gauge("churnops_intake_broker_connected", "1 while the broker connection is up.", registry=r)
        broker.set_function(lambda: float(connected()))

    def labels(self, path: str) -> tuple[str, str]:
        """The route and source labels of a request path.

        Args:
            path: The request's path.

        Returns:
            (route, source): e.g. `("/v1/events", "billing")`; source `-` for routes without one.
        """
        for prefix in _SOURCE_ROUTES:
            if path.startswith(prefix):
                source = path[len(prefix) :]
                return prefix.rstrip("/"), source if source in self.sources else "unknown"
        return (path if path in _PLAIN_ROUTES else "other"), "-"

    def counted(self, *, source: str, published: int, duplicates: int) -> None:
        """Count the records of one accepted request.

        Args:
            source: The source.
            published: Records stored now.
            duplicates: Records the broker already had.
        """
        self.published.labels(source).inc(published)
        self.duplicates.labels(source).inc(duplicates)


class RequestCounter:
    """ASGI middleware counting every HTTP response by route, source and status.

    Args:
        app: The wrapped application.
        metrics: Where to count.
    """

    def __init__(self, app: ASGIApp, *, metrics: IntakeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Serve one scope, counting the status of an HTTP response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, source = self.metrics.labels(scope["path"])
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(route, source, str(status)).inc()
