"""API keys: prediction routes require a valid `X-API-Key` when the service is set to."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from churnops.serving.errors import ServiceError
from churnops.serving.state import service_state

API_KEY_HEADER = "X-API-Key"
# Module level: FastAPI resolves the (string) annotations of dependencies in this module.
_API_KEY = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when keys are required.")
_CHALLENGE = {"WWW-Authenticate": API_KEY_HEADER}


async def authorize(request: Request, key: Annotated[str | None, Depends(_API_KEY)]) -> None:
    """Refuse a request without a valid API key when keys are required (a route dependency).

    Args:
        request: The request (its app holds the settings and the key ring).
        key: The `X-API-Key` header, if any.

    Raises:
        ServiceError: 401 `unauthorized` when the key is missing, unknown or revoked; 503
            `starting` when a key is given before the app has loaded the keys.
    """
    service = service_state(request)
    if not service.settings.require_keys:
        return
    if not key:
        raise ServiceError(
            401,
            "unauthorized",
            f"this service requires an API key in the {API_KEY_HEADER} header",
            headers=_CHALLENGE,
        )
    keys = service.running().keys
    if keys is None or keys.consumer(key) is None:
        raise ServiceError(
            401,
            "unauthorized",
            f"the {API_KEY_HEADER} header does not hold a valid API key",
            headers=_CHALLENGE,
        )
