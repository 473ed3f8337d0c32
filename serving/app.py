"""The FastAPI prediction service: `create_app` wires settings, metrics, start-up and routes.

The parts live in their own modules: request/response bodies in `serving.schemas`, error
responses in `serving.errors`, API keys in `serving.auth`, the routes in `serving.routers`,
scoring in `serving.scorer`, the micro-batcher in `serving.batcher`, the body deadline in
`serving.limits` and the offline Swagger UI and OpenAPI adjustments in `serving.docs`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI

from churnops.contracts.entity import entity_id_format
from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.monitoring.dq_metrics import DataQualityCollector
from churnops.serving import routers
from churnops.serving.batcher import MicroBatcher
from churnops.serving.docs import describe_service, install_docs
from churnops.serving.errors import install_exception_handlers
from churnops.serving.features import OnlineFeatureReader, probe_frame
from churnops.serving.limits import BodyDeadline
from churnops.serving.metrics import MetricsMiddleware, ServingMetrics
from churnops.serving.models import ModelSet, ModelWatcher
from churnops.serving.prediction_log import PredictionLog
from churnops.serving.schemas import CUSTOMER_ID_FORMAT, ErrorBody
from churnops.serving.scorer import Scorer
from churnops.serving.settings import ServingSettings
from churnops.serving.state import Runtime, ServiceState
from churnops.storage.keys import KeyRing

if TYPE_CHECKING:
    from feast import FeatureStore

# Paths labelled by name in the metrics; any other path is `other` (bounded label cardinality).
ENDPOINTS = frozenset(
    {"/predict", "/predict/batch", "/health", "/ready", "/metrics", "/docs", "/openapi.json"}
)


def _models_changed(models: ModelSet, *, metrics: ServingMetrics) -> None:
    metrics.models_changed(models)
    gc.freeze()  # the new model, like the first, lives until the next swap


def _prediction_log(
    *, contract: FeatureContract, reader: OnlineFeatureReader, settings: ServingSettings
) -> PredictionLog:
    return PredictionLog(
        folder=settings.predictions_dir,
        feature_columns=[*contract.feature_names, reader.default_flag],
        feature_dtypes={
            **{f.name: {"string": "object"}.get(f.dtype, f.dtype) for f in contract.features},
            reader.default_flag: "int64",
        },
        flush_interval_s=settings.log_flush_interval_s,
        batch_rows=settings.log_batch_rows,
    )


def _watcher(
    *,
    tracking_uri: str,
    contract: FeatureContract,
    reader: OnlineFeatureReader,
    settings: ServingSettings,
    metrics: ServingMetrics,
) -> ModelWatcher:
    return ModelWatcher(
        tracking_uri=tracking_uri,
        model_name=settings.model_name,
        champion_alias=settings.champion_alias,
        challenger_alias=settings.challenger_alias,
        with_challenger=settings.shadow,
        available_columns=[*contract.feature_names, reader.default_flag],
        interval_s=settings.poll_interval_s,
        audit_db=settings.audit_db,
        probe=probe_frame(contract),
        on_change=partial(_models_changed, metrics=metrics),
        on_error=lambda _message: metrics.model_errors.inc(),
        on_unaudited=metrics.champion_unaudited,
    )


def start_runtime(
    *,
    feature_store: FeatureStore,
    contract: FeatureContract,
    tracking_uri: str,
    settings: ServingSettings,
    metrics: ServingMetrics,
) -> Runtime:
    """Open what the service needs at run time and start its background threads.

    Args:
        feature_store: The open Feast feature store.
        contract: The feature contract.
        tracking_uri: The MLflow tracking (and registry) URI holding the model.
        settings: The service's settings.
        metrics: The service's metrics.

    Returns:
        The running runtime; `stop_runtime` stops it.
    """
    reader = OnlineFeatureReader(
        store=feature_store, contract=contract, feature_service=settings.feature_service
    )
    prediction_log = _prediction_log(contract=contract, reader=reader, settings=settings)
    metrics.watch_log(prediction_log)
    watcher = _watcher(
        tracking_uri=tracking_uri, contract=contract, reader=reader, settings=settings, metrics=metrics
    )
    keys = (
        KeyRing(keys_file=settings.keys_file, interval_s=settings.keys_reload_interval_s)
        if settings.require_keys and settings.keys_file is not None
        else None
    )
    scorer = Scorer(reader=reader, models=watcher, log=prediction_log, settings=settings, metrics=metrics)
    prediction_log.start()
    watcher.start()
    # What start-up loaded (Feast, MLflow, the models) lives as long as the process. Frozen out
    # of the garbage collector, it is no longer walked by every full collection, whose pauses
    # stalled every request in flight (`bench/results/serving.md`).
    gc.freeze()
    return Runtime(
        reader=reader,
        watcher=watcher,
        log=prediction_log,
        keys=keys,
        scorer=scorer,
        batcher=MicroBatcher(score=scorer.score_singles),
    )


def stop_runtime(runtime: Runtime) -> None:
    """Stop the model watcher and flush and close the prediction log.

    Args:
        runtime: The runtime `start_runtime` returned.
    """
    runtime.watcher.stop()
    runtime.log.stop()


def _service_metrics(settings: ServingSettings) -> ServingMetrics:
    """The service's metrics, with the home's data-quality gauges when the settings name a home."""
    metrics = ServingMetrics(endpoints=set(ENDPOINTS))
    if settings.data_quality_home is not None:
        metrics.registry.register(DataQualityCollector(home=settings.data_quality_home))
    return metrics


def create_app(
    *,
    tracking_uri: str,
    settings: ServingSettings,
    store: FeatureStore | None = None,
    store_factory: Callable[[], FeatureStore] | None = None,
    contract: FeatureContract | None = None,
) -> FastAPI:
    """Build the prediction service; nothing is opened until the app starts (its lifespan).

    Args:
        tracking_uri: The MLflow tracking (and registry) URI holding the model.
        settings: The service's settings.
        store: An open Feast feature store, or None to use `store_factory`.
        store_factory: Opens the Feast store at start-up (so `import feast` happens once, there).
        contract: The feature contract (default: `customer_profile` v1).

    Returns:
        The FastAPI application; serve it with uvicorn.

    Raises:
        ValueError: When neither or both of `store` and `store_factory` are given.
    """
    if (store is None) == (store_factory is None):
        raise ValueError("give exactly one of store (an open FeatureStore) or store_factory")
    contract = contract or load_feature_contract()
    if entity_id_format(contract) != CUSTOMER_ID_FORMAT:
        raise ValueError(
            f"contract {contract.name} v{contract.version} gives entity ids the format "
            f"{entity_id_format(contract)!r}, but the request schemas enforce {CUSTOMER_ID_FORMAT!r}"
        )
    service = ServiceState(settings=settings, metrics=_service_metrics(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        feature_store = store if store is not None else store_factory()  # type: ignore[misc]
        runtime = start_runtime(
            feature_store=feature_store,
            contract=contract,
            tracking_uri=tracking_uri,
            settings=settings,
            metrics=service.metrics,
        )
        service.runtime = runtime
        try:
            yield
        finally:
            stop_runtime(runtime)
            service.runtime = None

    title = "churnops prediction service"
    app = FastAPI(
        title=title,
        version="1",
        description=f"Churn probability per customer from Feast online features "
        f"({contract.name} v{contract.version}) and the `{settings.model_name}@{settings.champion_alias}` "
        "model.",
        lifespan=lifespan,
        responses={status: {"model": ErrorBody} for status in (400, 401, 422, 503)},
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyDeadline, timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    install_exception_handlers(app)
    for router in (routers.predictions, routers.probes, routers.metrics):
        app.include_router(router)
    install_docs(app, title=title)
    describe_service(app, require_keys=settings.require_keys, max_batch=settings.max_batch)
    return app
