"""The FastAPI intake service: `create_app` wires settings, contracts, keys, broker and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.broker import BrokerError, BrokerNames, stream_retention
from churnops.ingestion.intake.errors import install_exception_handlers
from churnops.ingestion.intake.metrics import IntakeMetrics, RequestCounter
from churnops.ingestion.intake.publisher import Publisher
from churnops.ingestion.intake.routes import IntakeState, deliveries, probes, registry
from churnops.ingestion.intake.settings import IntakeSettings
from churnops.storage.keys import KeyRing

log = logging.getLogger(__name__)

TITLE = "churnops intake"
DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs` from the installed `fastapi-offline` files: no CDN, works offline."""
    folder = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(folder), check_dir=True), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=TITLE,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )


def create_app(
    *,
    settings: IntakeSettings,
    contracts: Mapping[str, SourceContract],
    names: BrokerNames,
) -> FastAPI:
    """Build the intake service; the broker connection opens when the app starts (its lifespan).

    A broker that is down at start-up does not stop the service: deliveries get 503 until it
    answers, and the connection is retried on each delivery.

    Args:
        settings: The service's settings.
        contracts: The source contracts, by name (the sources it accepts).
        names: Where the records go on the broker.

    Returns:
        The FastAPI application; serve it with uvicorn.
    """
    publisher = Publisher(
        names=names,
        url=settings.nats_url,
        max_age=stream_retention(contracts),
        connect_timeout_s=settings.connect_timeout_s,
        ack_timeout_s=settings.ack_timeout_s,
    )
    metrics = IntakeMetrics(sources=contracts.keys(), connected=lambda: publisher.connected)
    keys = (
        KeyRing(keys_file=settings.keys_file, interval_s=settings.keys_reload_interval_s)
        if settings.require_keys and settings.keys_file is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await publisher.open()
        except BrokerError as exc:
            log.warning("intake started without the broker; deliveries get 503 until it answers: %s", exc)
        try:
            yield
        finally:
            await publisher.close()

    app = FastAPI(
        title=TITLE,
        version="1",
        description="Deliveries of the source records (events, webhooks, CSV/Parquet exports) to the "
        f"broker stream {names.stream}; the source contracts, as JSON Schema, at /v1/schemas/{{source}}.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.intake = IntakeState(
        settings=settings, contracts=dict(contracts), keys=keys, publisher=publisher, metrics=metrics
    )
    app.add_middleware(RequestCounter, metrics=metrics)
    install_exception_handlers(app)
    for router in (deliveries, registry, probes):
        app.include_router(router)
    _install_docs(app)
    return app
