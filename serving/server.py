"""Run the service with the HTTP settings it was measured with (`bench/results/serving.md`)."""

from __future__ import annotations

from fastapi import FastAPI


def run_server(*, app: FastAPI, host: str, port: int) -> None:
    """Serve the app with uvicorn until interrupted.

    One process, uvloop and httptools, no access log: the access log alone costs about as much
    per request as the online read, and a second worker would need its own model and store
    connections for no gain on two cores shared with the load.

    Args:
        app: The application from `serving.app.create_app`.
        host: Interface to listen on.
        port: TCP port.
    """
    import uvicorn

    uvicorn.run(
        app, host=host, port=port, access_log=False, log_level="warning", loop="uvloop", http="httptools"
    )
