"""The intake HTTP API command: `churnops intake`."""

from __future__ import annotations

from typing import Annotated

import typer

from churnops.commands.common import HomeOption, console, fail, workspace
from churnops.commands.serving import keys_file
from churnops.storage.layout import UPLOADS_DIR

_MIB = 1024 * 1024


def intake(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8100,
    require_keys: Annotated[
        bool,
        typer.Option(
            "--require-keys/--no-require-keys",
            help="Answer 401/403 to deliveries without an intake key allowed for the source.",
        ),
    ] = True,
    max_request_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest events request body, in MiB (413 past it).")
    ] = 4.0,
    max_rows: Annotated[int, typer.Option(min=1, help="Most records in one events request.")] = 10_000,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest uploaded file, in MiB (413 as soon as it passes).")
    ] = 256.0,
) -> None:
    """Accept source records over HTTP (events, webhooks, CSV/Parquet uploads) into the broker.

    Records are published to NATS JetStream (CHURNOPS_NATS_URL, default nats://127.0.0.1:4222);
    `churnops stream run` writes them to the lake. OpenAPI docs at /docs; metrics at /metrics.
    """
    ws = workspace(home)
    from pydantic import ValidationError

    from churnops.contracts.source_contract import load_source_contracts
    from churnops.ingestion.broker import BrokerNames, nats_url
    from churnops.ingestion.intake.app import create_app
    from churnops.ingestion.intake.settings import IntakeSettings
    from churnops.storage.keys import load_grants

    try:
        settings = IntakeSettings(
            uploads_dir=ws.home / UPLOADS_DIR,
            keys_file=keys_file(ws),
            require_keys=require_keys,
            max_request_bytes=int(max_request_mb * _MIB),
            max_rows=max_rows,
            max_upload_bytes=int(max_upload_mb * _MIB),
        )
        names = BrokerNames.for_home(ws.home)
    except (ValidationError, ValueError) as exc:
        raise fail(f"invalid intake settings: {exc}", code=2) from exc
    if require_keys:
        try:
            grants = load_grants(keys_file=keys_file(ws))
        except ValueError as exc:
            raise fail(str(exc)) from exc
        if not any(g.sources for g in grants.values()):
            raise fail(
                f"--require-keys is on but {keys_file(ws)} holds no intake key: run "
                "`churnops keys create PRODUCER --source SOURCE` first (or --no-require-keys on a "
                "trusted network)"
            )
    app = create_app(settings=settings, contracts=load_source_contracts(), names=names)
    console.print(
        f"intake on http://{host}:{port} (docs /docs, metrics /metrics) → {nats_url()} stream "
        f"{names.stream}; API keys {'required' if require_keys else 'off'}; uploads kept in "
        f"{settings.uploads_dir}",
        highlight=False,
        soft_wrap=True,
    )
    import uvicorn

    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command("intake")(intake)
