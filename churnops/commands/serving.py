"""Commands for the online prediction service: `churnops serve` and `churnops keys`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace, writer_lock
from churnops.settings import Workspace
from churnops.storage.layout import API_KEYS_FILE

keys_app = typer.Typer(help="API keys for the feature contract's approved consumers (stored hashed).")


def keys_file(ws: Workspace) -> Path:
    """Where a workspace keeps its hashed API keys.

    Args:
        ws: The workspace.

    Returns:
        The keys file's path.
    """
    return ws.home / API_KEYS_FILE


def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    shadow: Annotated[
        bool | None,
        typer.Option(
            "--shadow/--no-shadow",
            help="Also score @challenger and log both (default: the contract's serving.shadow_reads).",
            show_default=False,
        ),
    ] = None,
    require_keys: Annotated[
        bool,
        typer.Option("--require-keys", help="Answer 401 to prediction requests without a valid X-API-Key."),
    ] = False,
    poll_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between checks of where the model aliases point.")
    ] = 5.0,
) -> None:
    """Serve churn predictions over HTTP (Feast online features + the @champion model).

    OpenAPI docs at /docs; Prometheus metrics at /metrics.
    """
    ws = workspace(home)
    from pydantic import ValidationError

    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.serving.settings import ServingSettings

    contract = load_feature_contract()
    try:
        settings = ServingSettings(
            predictions_dir=ws.predictions,
            audit_db=ws.audit_db,
            keys_file=keys_file(ws),
            data_quality_home=ws.home,
            require_keys=require_keys,
            shadow=contract.serving.shadow_reads if shadow is None else shadow,
            poll_interval_s=poll_interval,
        )
    except ValidationError as exc:
        raise fail(f"invalid serving settings: {exc}") from exc
    if require_keys:
        from churnops.storage.keys import load_key_hashes

        try:
            hashes = load_key_hashes(keys_file=settings.keys_file)  # type: ignore[arg-type]
        except ValueError as exc:
            raise fail(str(exc)) from exc
        if not hashes:
            raise fail(
                f"--require-keys is on but {settings.keys_file} holds no keys: run "
                "`churnops keys create CONSUMER` first"
            )
    from churnops.features.store import open_store
    from churnops.serving.app import create_app
    from churnops.serving.server import run_server

    try:
        store = open_store(home=ws.home, fs_yaml=ws.feature_store_yaml)
        store.get_feature_service(settings.feature_service)
    except Exception as exc:
        raise fail(
            f"cannot read feature service {settings.feature_service!r} from the Feast store "
            f"({ws.feature_store_yaml}): {exc}. Run `churnops features apply` and `churnops materialize` "
            "first."
        ) from exc
    app = create_app(store=store, tracking_uri=ws.tracking_uri, settings=settings, contract=contract)
    console.print(
        f"serving on http://{host}:{port} (docs /docs, metrics /metrics); shadow "
        f"{'on' if settings.shadow else 'off'}, API keys {'required' if require_keys else 'off'}; "
        f"prediction log {ws.predictions}",
        highlight=False,
    )
    run_server(app=app, host=host, port=port)


@keys_app.command("create")
def create_key_command(
    ctx: typer.Context,
    consumer: Annotated[
        str,
        typer.Argument(
            help="An approved consumer from the feature contract; with --source, the producer delivering."
        ),
    ],
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="Make an intake key allowed to deliver this source (repeat for several); "
            "without it, a prediction key.",
        ),
    ] = None,
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Create an API key (prediction, or intake with --source); printed once and stored only hashed."""
    ws = workspace(home)
    writer_lock(ctx, ws, wait=wait)
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.contracts.source_contract import SOURCE_NAMES
    from churnops.storage.keys import create_key

    contract = load_feature_contract()
    path = keys_file(ws)
    try:
        key = create_key(
            keys_file=path,
            consumer=consumer,
            approved_consumers=contract.privacy.approved_consumers,
            sources=source or (),
            known_sources=SOURCE_NAMES,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    scope = f" (intake: {', '.join(sorted(set(source)))})" if source else ""
    console.print(
        f"API key for [bold]{consumer}[/]{scope} (shown once; its SHA-256 is in {path}):", highlight=False
    )
    console.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
def list_keys_command(home: HomeOption = None) -> None:
    """List the API keys: consumer, hash prefix, created, active or revoked (never the keys)."""
    ws = workspace(home)
    from churnops.storage.keys import list_keys

    path = keys_file(ws)
    try:
        entries = list_keys(keys_file=path)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if not entries:
        console.print(f"no API keys in {path}; create one with `churnops keys create CONSUMER`")
        return
    # Plain aligned lines, not a Rich table: without a terminal a table is cut to 80 columns.
    width = max(len("consumer"), *(len(e["consumer"]) for e in entries))
    console.print(f"{'consumer':<{width}}  {'sha256 (prefix)':<16}  {'created':<19}  status", highlight=False)
    for entry in sorted(entries, key=lambda e: (e["consumer"], e.get("created_at", ""))):
        revoked = entry.get("revoked_at")
        status = f"revoked {revoked[:19]}" if revoked else "active"
        if entry.get("sources"):
            status += f"  intake: {','.join(entry['sources'])}"
        created = entry.get("created_at", "")[:19]
        console.print(
            f"{entry['consumer']:<{width}}  {entry['sha256'][:16]}  {created:<19}  {status}",
            highlight=False,
            soft_wrap=True,
        )


@keys_app.command("revoke")
def revoke_key_command(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="A consumer (revokes all its keys) or a key's SHA-256 prefix (8+ hex digits)."),
    ],
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Revoke API keys; a running service refuses them within its reload interval (about a second)."""
    ws = workspace(home)
    writer_lock(ctx, ws, wait=wait)
    from churnops.storage.keys import revoke_keys

    path = keys_file(ws)
    try:
        revoked = revoke_keys(keys_file=path, name=name)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    for entry in revoked:
        console.print(
            f"revoked the key of {entry['consumer']} (sha256 {entry['sha256'][:16]}…)", highlight=False
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
