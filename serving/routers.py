"""The service's HTTP routes: predictions, liveness/readiness probes, Prometheus metrics.

Endpoints are `async def` on purpose: the online read and the compiled scoring of a few rows
are short, and running them on the event loop avoids the thread-pool hand-off that caps a plain
`def` endpoint far below the service's target rate (`bench/results/serving.md`). Everything that
can wait (the prediction log, shadow scoring, alias polling) runs in background threads, and
does little there: a background thread holding the GIL stalls every request in flight.

An endpoint's docstring up to the form feed is its OpenAPI description.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from churnops.serving.auth import authorize
from churnops.serving.errors import ServiceError
from churnops.serving.models import NO_CHAMPION_HINT, ModelWatcher
from churnops.serving.schemas import BatchRequest, BatchResponse, ErrorBody, PredictRequest, PredictResponse
from churnops.serving.scorer import SingleRequest
from churnops.serving.state import Runtime, service_state

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_MAX = 128

predictions = APIRouter(dependencies=[Depends(authorize)])
probes = APIRouter()
metrics = APIRouter()


def request_id(request: Request) -> str:
    """The id a request's predictions are logged under.

    Args:
        request: The request.

    Returns:
        The client's `X-Request-ID` when it holds 1 to 128 characters, otherwise a new id.
    """
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if 0 < len(given) <= _REQUEST_ID_MAX else uuid.uuid4().hex


@predictions.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request, response: Response) -> PredictResponse:
    """Score one customer with the champion model.\f

    Args:
        body: The customer.
        request: The request (for its id and the app's runtime).
        response: Where the request id header is set.

    Returns:
        The prediction and its request id.
    """
    rid = request_id(request)
    runtime = service_state(request).running()
    prediction = await runtime.batcher.submit(SingleRequest(customer_id=body.customer_id, request_id=rid))
    response.headers[REQUEST_ID_HEADER] = rid
    return PredictResponse(request_id=rid, **prediction.model_dump())


@predictions.post("/predict/batch", response_model=BatchResponse, responses={413: {"model": ErrorBody}})
async def predict_batch(body: BatchRequest, request: Request, response: Response) -> BatchResponse:
    """Score up to `max_batch` customers in one request, in order.\f

    Args:
        body: The customers.
        request: The request (for its id and the app's runtime).
        response: Where the request id header is set.

    Returns:
        The predictions in request order and their request id.

    Raises:
        ServiceError: 422 `empty_batch` or 413 `batch_too_large` when the batch size is out of bounds.
    """
    service = service_state(request)
    limit = service.settings.max_batch
    n = len(body.customer_ids)
    if n == 0:
        raise ServiceError(422, "empty_batch", f"customer_ids is empty: send 1 to {limit} customer ids")
    if n > limit:
        raise ServiceError(
            413,
            "batch_too_large",
            f"customer_ids holds {n} ids, more than the limit of {limit}: split the batch",
        )
    rid = request_id(request)
    scored = service.running().scorer.score(
        customer_ids=body.customer_ids, request_ids=[rid] * n, items=list(range(n))
    )
    response.headers[REQUEST_ID_HEADER] = rid
    return BatchResponse(
        request_id=rid, model_version=scored.champion.version, predictions=scored.predictions
    )


@probes.get("/health")
async def health() -> dict[str, str]:
    """The process is up (liveness).\f

    Returns:
        Always `{"status": "ok"}`.
    """
    return {"status": "ok"}


def model_check(watcher: ModelWatcher) -> dict[str, Any]:
    """The readiness check of the served champion.

    Args:
        watcher: The champion/challenger watcher.

    Returns:
        `ok`, and the version and scoring path of the champion (or why there is none); a failed
        last refresh, or a champion alias moved without the gate (`unaudited`: its version and
        why it is not served), is reported but keeps the check ok while a previous model serves.
    """
    models = watcher.current
    champion = models.champion
    if champion is None and models.unaudited is not None:
        check: dict[str, Any] = {"ok": False, "detail": models.unaudited.reason}
    elif champion is None:
        check = {"ok": False, "detail": f"no champion: {NO_CHAMPION_HINT}"}
    elif champion.compiled is not None:
        check = {
            "ok": True,
            "version": champion.version,
            "scoring": "compiled",
            "engine": champion.compiled.engine,
        }
    else:
        check = {
            "ok": True,
            "version": champion.version,
            "scoring": "predict_proba",
            "scoring_note": champion.fast_path_note,
        }
    if models.unaudited is not None and champion is not None:
        check["unaudited"] = {"version": models.unaudited.version, "reason": models.unaudited.reason}
    if watcher.last_error is not None:
        check["refresh_error"] = watcher.last_error
    return check


def online_store_check(runtime: Runtime) -> dict[str, Any]:
    """The readiness check of the online store: one read of an absent customer.

    Args:
        runtime: The running service.

    Returns:
        `{"ok": True}`, or `ok` false and the store's error.
    """
    try:
        runtime.reader.ping()
    except Exception as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True}


@probes.get("/ready", responses={503: {"model": ErrorBody}})
async def ready(request: Request) -> JSONResponse:
    """The champion is loaded and the online store answers (readiness).\f

    Args:
        request: The request (for the app's runtime).

    Returns:
        200 with each check when all pass, 503 otherwise.
    """
    runtime = service_state(request).runtime
    if runtime is None:
        return JSONResponse({"ready": False, "checks": {"started": False}}, status_code=503)
    checks = {"model": model_check(runtime.watcher), "online_store": online_store_check(runtime)}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@metrics.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text exposition.\f

    Args:
        request: The request (for the app's metrics).

    Returns:
        Every metric of this service instance.
    """
    return Response(service_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
