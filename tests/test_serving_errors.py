"""Error responses without a running service: validation wording and the installed handlers."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from churnops.serving.errors import ServiceError, describe_validation, install_exception_handlers


def test_invalid_json_is_a_400_quoting_the_parser() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 16),
                "msg": "JSON decode error",
                "ctx": {"error": "Expecting value"},
            }
        ]
    )
    described = describe_validation(exc)
    assert (described.status, described.error) == (400, "malformed_json")
    assert described.detail == "the request body is not valid JSON (Expecting value)"


def test_a_missing_body_shows_an_example_body() -> None:
    described = describe_validation(
        RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "x"}])
    )
    assert (described.status, described.error) == (422, "invalid_request")
    assert described.detail == 'the request needs a JSON body, e.g. {"customer_id": "CUST-000001"}'


def test_each_bad_field_is_named_and_long_input_is_cut() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "string_type",
                "loc": ("body", "customer_id"),
                "msg": "Input should be a valid string",
                "input": 42,
            },
            {
                "type": "list_type",
                "loc": ("body", "customer_ids"),
                "msg": "Input should be a valid list",
                "input": "C" * 500,
            },
        ]
    )
    first, second = describe_validation(exc).detail.split("; ")
    assert first == "customer_id: Input should be a valid string (got 42)"
    assert second.startswith("customer_ids: Input should be a valid list (got 'CCC")
    assert second.endswith("...)")
    assert len(second) == len("customer_ids: Input should be a valid list (got ") + 80 + 1


def _app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/refuse")
    async def refuse() -> None:
        raise ServiceError(401, "unauthorized", "no key", headers={"WWW-Authenticate": "X-API-Key"})

    @app.get("/crash")
    async def crash() -> None:
        raise KeyError("secret internals")

    return app


def _get(app: FastAPI, *paths: str) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(run())


def test_installed_handlers_answer_every_error_in_one_shape() -> None:
    refused, crashed, missing = _get(_app(), "/refuse", "/crash", "/nope")
    assert refused.status_code == 401
    assert refused.json() == {"error": "unauthorized", "detail": "no key"}
    assert refused.headers["WWW-Authenticate"] == "X-API-Key"
    assert crashed.status_code == 500
    assert crashed.json() == {
        "error": "internal_error",
        "detail": "unexpected KeyError; the service log has the details",
    }
    assert "secret internals" not in crashed.text
    assert (missing.status_code, missing.json()["error"]) == (404, "http_error")
