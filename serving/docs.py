"""The service's OpenAPI document and its Swagger UI, served from installed files only.

`/docs` loads Swagger UI from the `fastapi-offline` package's static files (Swagger UI 5, which
renders OpenAPI 3.1), so the docs work on a machine with no internet and no page of the service
makes the browser contact another host. The OpenAPI document says what the service really does:
the `X-API-Key` scheme and the 401 answer appear only when keys are required, and a batch holds
1 to this service's `max_batch` ids (the route checks both, with its own error codes).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve Swagger UI at `/docs` with its assets from the installed package.

    Args:
        app: The application (created with `docs_url=None, redoc_url=None`).
        title: The page title.
    """
    folder = files("fastapi_offline") / "static"
    assets = StaticFiles(directory=str(folder), check_dir=True)
    app.mount(ASSETS_URL, assets, name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            # Swagger UI would otherwise have the browser fetch a badge from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )


def _without_api_key(schema: dict[str, Any]) -> None:
    schema.get("components", {}).pop("securitySchemes", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop("401", None)


def describe_service(app: FastAPI, *, require_keys: bool, max_batch: int) -> None:
    """Make the OpenAPI document state this service's API-key use and batch limits.

    Args:
        app: The application.
        require_keys: Whether the service refuses requests without a valid key; when not, the
            `X-API-Key` scheme and the 401 answers are left out.
        max_batch: Most ids one `/predict/batch` request may carry.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            if not require_keys:
                _without_api_key(schema)
            ids = schema["components"]["schemas"]["BatchRequest"]["properties"]["customer_ids"]
            ids.update(minItems=1, maxItems=max_batch)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
