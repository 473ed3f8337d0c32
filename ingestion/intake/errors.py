"""Every error the intake answers with: a JSON body `{"error": code, "detail": sentence}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer.

    Attributes:
        error: A short machine-readable code.
        detail: A sentence saying what went wrong and what to do.
    """

    error: str
    detail: str


class IntakeError(Exception):
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


def error_response(exc: IntakeError) -> JSONResponse:
    """The JSON response of an error.

    Args:
        exc: The error.

    Returns:
        `{"error": ..., "detail": ...}` with the error's status and headers.
    """
    return JSONResponse(
        {"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers
    )


async def _intake(_: Request, exc: IntakeError) -> JSONResponse:
    return error_response(exc)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg')}")
    return error_response(IntakeError(422, "invalid_request", "; ".join(parts)))


async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(IntakeError(exc.status_code, "http_error", str(exc.detail), headers=exc.headers))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(
        IntakeError(500, "internal_error", f"unexpected {type(exc).__name__}; the intake log has the details")
    )


def install_exception_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, with an `ErrorBody` and never a traceback.

    Args:
        app: The application.
    """
    app.add_exception_handler(IntakeError, _intake)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
