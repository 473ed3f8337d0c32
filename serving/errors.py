"""Every error the service answers with: a JSON `ErrorBody` (`error` code, `detail` sentence)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

# The logger the service has always written under, so log filters set on it keep working.
log = logging.getLogger("churnops.serving.app")

_QUOTE_MAX = 80


class ServiceError(Exception):
    """An error with an HTTP status and a message for the client.

    Args:
        status: The HTTP status code.
        error: A short machine-readable code.
        detail: A sentence saying what went wrong and what to do.
        headers: Extra response headers (e.g. `WWW-Authenticate` on a 401).
    """

    def __init__(
        self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


class BodyTimeout(HTTPException):
    """The request body did not arrive within the service's deadline (408, connection closed).

    An `HTTPException`, so that FastAPI passes it through while reading the body instead of
    turning it into a 400.

    Args:
        timeout_s: The deadline, in seconds from the start of the request.
    """

    def __init__(self, *, timeout_s: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body did not arrive within {timeout_s:g} s; send it whole and retry",
            headers={"Connection": "close"},
        )


def error_response(
    *, status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Build an error response in the service's one error shape.

    Args:
        status: The HTTP status code.
        error: A short machine-readable code.
        detail: A sentence for the client.
        headers: Extra response headers.

    Returns:
        The JSON response `{"error": ..., "detail": ...}`.
    """
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."


def describe_validation(exc: RequestValidationError) -> ServiceError:
    """Say in one sentence what is wrong with a request FastAPI could not validate.

    Args:
        exc: FastAPI's validation error.

    Returns:
        400 `malformed_json` when the body is not JSON, otherwise 422 `invalid_request` naming
        each offending field and quoting (briefly) what it held.
    """
    errors = exc.errors()
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = broken.get("ctx", {}).get("error", "parse error")
        return ServiceError(400, "malformed_json", f"the request body is not valid JSON ({reason})")
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "missing" and where == "body":
            parts.append('the request needs a JSON body, e.g. {"customer_id": "CUST-000001"}')
        else:
            parts.append(f"{where}: {e.get('msg')} (got {_quote(e.get('input'))})")
    return ServiceError(422, "invalid_request", "; ".join(parts))


def _respond(exc: ServiceError) -> JSONResponse:
    return error_response(status=exc.status, error=exc.error, detail=exc.detail, headers=exc.headers)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    return _respond(describe_validation(exc))


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(
        status=exc.status_code, error="http_error", detail=str(exc.detail), headers=exc.headers
    )


async def _body_timeout(_: Request, exc: BodyTimeout) -> JSONResponse:
    return error_response(
        status=exc.status_code, error="request_timeout", detail=str(exc.detail), headers=exc.headers
    )


async def _service(_: Request, exc: ServiceError) -> JSONResponse:
    return _respond(exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(
        status=500,
        error="internal_error",
        detail=f"unexpected {type(exc).__name__}; the service log has the details",
    )


def install_exception_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, with an `ErrorBody` and never a traceback.

    Args:
        app: The application to install the handlers on.
    """
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(BodyTimeout, _body_timeout)
    app.add_exception_handler(ServiceError, _service)
    app.add_exception_handler(Exception, _unexpected)
