"""The FastAPI prediction service.

Endpoints are `async def` on purpose: the online read (~0.4 ms) and the compiled scoring of
one row (~0.4 ms, `serving.scoring`) are short, and running them on the event loop avoids the
thread-pool hand-off that caps a plain `def` endpoint at ~50-100 requests/s on this machine.
Everything that can wait (the prediction log, shadow scoring, alias polling) runs in
background threads, and does little there: a background thread holding the GIL stalls every
request in flight.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.serving.features import OnlineFeatureReader, probe_frame
from churnops.serving.metrics import MetricsMiddleware, ServingMetrics
from churnops.serving.models import NO_CHAMPION_HINT, LoadedModel, ModelSet, ModelWatcher
from churnops.serving.prediction_log import LogEntry, PredictionLog
from churnops.serving.settings import ServingSettings
from churnops.storage.keys import hash_key, load_key_hashes

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
# Module level: FastAPI resolves the (string) annotations of endpoints and dependencies here.
_API_KEY = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when keys are required.")
CustomerId = Annotated[StrictStr, Field(min_length=1, max_length=128, examples=["CUST-000001"])]


class PredictRequest(BaseModel):
    """One customer to score."""

    model_config = ConfigDict(extra="forbid")
    customer_id: CustomerId


class BatchRequest(BaseModel):
    """Customers to score in one request (1 to the service's `max_batch`)."""

    model_config = ConfigDict(extra="forbid")
    customer_ids: list[CustomerId]


class Prediction(BaseModel):
    """The champion's prediction for one customer."""

    customer_id: str
    churn_probability: float = Field(ge=0, le=1)
    risk_band: Literal["low", "medium", "high"]
    model_version: str
    snapshot_ts: datetime | None = Field(description="The online snapshot used; null when none exists.")
    feature_status: Literal["present", "default", "stale"] = Field(
        description="present: fresh online features; stale: older than the contract's freshness bound; "
        "default: no usable snapshot, the contract's defaults were used."
    )


class PredictResponse(Prediction):
    """A single prediction and the id it is logged under."""

    request_id: str


class BatchResponse(BaseModel):
    """Predictions in request order, and the id they are logged under."""

    request_id: str
    model_version: str
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    """Every error response: a short code and a sentence saying what to do."""

    error: str
    detail: str


@dataclass
class _Runtime:
    reader: OnlineFeatureReader
    watcher: ModelWatcher
    log: PredictionLog
    key_hashes: dict[str, str]


class ServiceError(Exception):
    """An error with an HTTP status and a message for the client."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return (
            400,
            "malformed_json",
            f"the request body is not valid JSON ({ctx.get('error', 'parse error')})",
        )
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "missing" and where == "body":
            parts.append('the request needs a JSON body, e.g. {"customer_id": "CUST-000001"}')
        else:
            got = repr(e.get("input"))
            parts.append(f"{where}: {e.get('msg')} (got {got if len(got) <= 80 else got[:77] + '...'})")
    return 422, "invalid_request", "; ".join(parts)


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
    metrics = ServingMetrics(
        endpoints={"/predict", "/predict/batch", "/health", "/ready", "/metrics", "/docs", "/openapi.json"}
    )
    state: dict[str, _Runtime] = {}

    def models_changed(models: ModelSet) -> None:
        metrics.models_changed(models)
        gc.freeze()  # the new model, like the first, lives until the next swap

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        feature_store = store if store is not None else store_factory()  # type: ignore[misc]
        reader = OnlineFeatureReader(
            store=feature_store, contract=contract, feature_service=settings.feature_service
        )
        columns = [*contract.feature_names, reader.default_flag]
        prediction_log = PredictionLog(
            folder=settings.predictions_dir,
            feature_columns=columns,
            feature_dtypes={
                **{f.name: {"string": "object"}.get(f.dtype, f.dtype) for f in contract.features},
                reader.default_flag: "int64",
            },
            flush_interval_s=settings.log_flush_interval_s,
            batch_rows=settings.log_batch_rows,
        )
        metrics.watch_log(prediction_log)
        watcher = ModelWatcher(
            tracking_uri=tracking_uri,
            model_name=settings.model_name,
            champion_alias=settings.champion_alias,
            challenger_alias=settings.challenger_alias,
            with_challenger=settings.shadow,
            available_columns=columns,
            interval_s=settings.poll_interval_s,
            probe=probe_frame(contract),
            on_change=models_changed,
            on_error=lambda _message: metrics.model_errors.inc(),
        )
        key_hashes = load_key_hashes(keys_file=settings.keys_file) if settings.require_keys else {}
        prediction_log.start()
        watcher.start()
        # What start-up loaded (Feast, MLflow, the models) lives as long as the process. Frozen
        # out of the garbage collector, it is no longer walked by every full collection, which
        # took ~200 ms every ~2 s at 200 requests/s and stalled every request in flight.
        gc.freeze()
        state["runtime"] = _Runtime(reader=reader, watcher=watcher, log=prediction_log, key_hashes=key_hashes)
        try:
            yield
        finally:
            watcher.stop()
            prediction_log.stop()
            state.clear()

    app = FastAPI(
        title="churnops prediction service",
        version="1",
        description=f"Churn probability per customer from Feast online features "
        f"({contract.name} v{contract.version}) and the `{settings.model_name}@{settings.champion_alias}` "
        "model.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_describe_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": API_KEY_HEADER} if exc.status == 401 else None
        return _error(exc.status, exc.error, exc.detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(
            500, "internal_error", f"unexpected {type(exc).__name__}; the service log has the details"
        )

    def runtime() -> _Runtime:
        if "runtime" not in state:
            raise ServiceError(503, "starting", "the service is starting; retry shortly")
        return state["runtime"]

    async def authorize(key: Annotated[str | None, Depends(_API_KEY)]) -> None:
        if not settings.require_keys:
            return
        if not key:
            raise ServiceError(
                401, "unauthorized", f"this service requires an API key in the {API_KEY_HEADER} header"
            )
        if hash_key(key) not in runtime().key_hashes:
            raise ServiceError(
                401, "unauthorized", f"the {API_KEY_HEADER} header does not hold a valid API key"
            )

    def request_id(request: Request) -> str:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        return given if 0 < len(given) <= 128 else uuid.uuid4().hex

    def score(
        customer_ids: list[str], request_ids: list[str], items: list[int]
    ) -> tuple[LoadedModel, list[Prediction]]:
        """Read, score and log a list of customers (synchronously, on the event loop)."""
        rt = runtime()
        models = rt.watcher.current
        champion = models.champion
        if champion is None:
            problem = rt.watcher.last_error
            raise ServiceError(
                503,
                "no_champion",
                f"no model has alias {settings.model_name}@{settings.champion_alias} yet: {NO_CHAMPION_HINT}"
                + (f" (last registry error: {problem})" if problem else ""),
            )
        now = datetime.now(UTC)
        try:
            features = rt.reader.read(customer_ids, now=now)
        except Exception as exc:
            log.exception("online store read failed")
            raise ServiceError(
                503, "online_store_unavailable", f"the online feature store cannot be read: {exc}"
            ) from exc
        probabilities = [float(p) for p in champion.predict(features.columns)]
        bands = [settings.risk_band(p) for p in probabilities]
        predictions = []
        for i, cid in enumerate(customer_ids):
            status = features.statuses[i]
            snapshot = features.snapshot_ts[i]
            metrics.predictions.labels(feature_status=status).inc()
            if snapshot is not None:
                metrics.snapshot_age.observe((now - snapshot).total_seconds())
            predictions.append(
                Prediction(
                    customer_id=cid,
                    churn_probability=probabilities[i],
                    risk_band=bands[i],  # type: ignore[arg-type]
                    model_version=champion.version,
                    snapshot_ts=snapshot,
                    feature_status=status,
                )
            )
        rt.log.submit(
            LogEntry(
                request_ids=request_ids,
                items=items,
                predicted_at=now,
                customer_ids=customer_ids,
                features=features.columns,
                statuses=list(features.statuses),
                snapshot_ts=features.snapshot_ts,
                champion=champion,
                probabilities=probabilities,
                risk_bands=bands,
                challenger=models.challenger if settings.shadow else None,
            )
        )
        return champion, predictions

    # Single predictions that arrive while the event loop is busy are scored together: each
    # request queues itself and the first schedules a flush for the loop's next turn, by which
    # time every request parsed in this turn has queued too. One online read and one
    # `predict_proba` then serve them all (their fixed costs dominate at one row), and an idle
    # service adds no delay, since the flush runs on the very next turn.
    pending: list[tuple[str, str, asyncio.Future[Prediction]]] = []

    def flush() -> None:
        batch = pending[:]
        pending.clear()
        try:
            _, predictions = score([b[0] for b in batch], [b[1] for b in batch], [0] * len(batch))
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), prediction in zip(batch, predictions, strict=True):
            if not future.done():
                future.set_result(prediction)

    async def score_one(customer_id: str, rid: str) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        if not pending:
            loop.call_soon(flush)
        pending.append((customer_id, rid, future))
        return await future

    @app.post("/predict", response_model=PredictResponse, dependencies=[Depends(authorize)])
    async def predict(body: PredictRequest, request: Request, response: Response) -> PredictResponse:
        """Score one customer with the champion model."""
        rid = request_id(request)
        prediction = await score_one(body.customer_id, rid)
        response.headers[REQUEST_ID_HEADER] = rid
        return PredictResponse(request_id=rid, **prediction.model_dump())

    @app.post("/predict/batch", response_model=BatchResponse, dependencies=[Depends(authorize)])
    async def predict_batch(body: BatchRequest, request: Request, response: Response) -> BatchResponse:
        """Score up to `max_batch` customers in one request, in order."""
        n = len(body.customer_ids)
        if n == 0:
            raise ServiceError(
                422, "empty_batch", f"customer_ids is empty: send 1 to {settings.max_batch} customer ids"
            )
        if n > settings.max_batch:
            raise ServiceError(
                413,
                "batch_too_large",
                f"customer_ids holds {n} ids, more than the limit of {settings.max_batch}: split the batch",
            )
        rid = request_id(request)
        champion, predictions = score(body.customer_ids, [rid] * n, list(range(n)))
        response.headers[REQUEST_ID_HEADER] = rid
        return BatchResponse(request_id=rid, model_version=champion.version, predictions=predictions)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorBody}})
    async def ready() -> JSONResponse:
        """The champion is loaded and the online store answers (readiness)."""
        checks: dict[str, Any] = {}
        rt = state.get("runtime")
        if rt is None:
            return JSONResponse({"ready": False, "checks": {"started": False}}, status_code=503)
        champion = rt.watcher.current.champion
        if champion is None:
            checks["model"] = {"ok": False, "detail": f"no champion: {NO_CHAMPION_HINT}"}
        elif champion.compiled is not None:
            checks["model"] = {"ok": True, "version": champion.version, "scoring": "compiled"}
        else:
            checks["model"] = {
                "ok": True,
                "version": champion.version,
                "scoring": "predict_proba",
                "scoring_note": champion.fast_path_note,
            }
        if rt.watcher.last_error is not None:
            # Still ready when a champion is loaded: the previous model keeps serving.
            checks["model"]["refresh_error"] = rt.watcher.last_error
        try:
            rt.reader.ping()
            checks["online_store"] = {"ok": True}
        except Exception as exc:
            checks["online_store"] = {"ok": False, "detail": str(exc)}
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
