"""Commands for features, training sets, materialization and parity."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace, writer_lock
from churnops.commands.progress import progress
from churnops.settings import Workspace
from churnops.storage.layout import MEMORY_LIMIT_ENV

if TYPE_CHECKING:
    from feast import FeatureStore

features_app = typer.Typer(
    help="Build the offline feature table and register the Feast definitions.", no_args_is_help=True
)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        example = "2026-07-24T13:05:00Z"
        raise fail(f"{option} {value!r} is not an ISO-8601 time such as {example}", code=2) from exc


def _recover_lake(ws: Workspace) -> None:
    """Finish or undo what a killed `ingest` left, so the snapshots read a lake of whole batches."""
    from churnops.ingestion.recovery import recover

    done = recover(lake_dir=ws.lake, quarantine_dir=ws.quarantine, log_db=ws.ingestion_log)
    for line in done.messages():
        console.print(f"recovery: {line}", highlight=False)


@features_app.command("build")
def build(
    ctx: typer.Context,
    home: HomeOption = None,
    until: Annotated[
        str | None, typer.Option(help="Build boundaries up to this time (default: now).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every snapshot.")] = False,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            envvar=MEMORY_LIMIT_ENV,
            help="Memory the build may use, e.g. 4GB; it computes in chunks of days sized to it and "
            "spills beyond it (default: a quarter of the machine's memory).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="duckdb (in process) or spark (the same SQL on Spark; always a full build). "
            "Default: $CHURNOPS_ENGINE, else duckdb."
        ),
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Compute customer_profile snapshots from the lake (new days and late-touched snapshots only)."""
    from churnops.config import check_engine
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.build import build_features

    ws = workspace(home)
    until_time = _time(until, "--until")
    chosen = check_engine(engine, origin="--engine") if engine is not None else ws.backends.engine
    writer_lock(ctx, ws, wait=wait)
    _recover_lake(ws)
    with progress("features build") as step, step("computing customer_profile snapshots from the lake"):
        try:
            report = build_features(
                lake_dir=ws.lake,
                features_dir=ws.features,
                contract=load_feature_contract(),
                until=until_time,
                full=full,
                memory_limit=memory_limit,
                engine=chosen,
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
    console.print(
        f"built {report.snapshots_computed:,} snapshots for {report.customers:,} customers up to "
        f"{report.until:%Y-%m-%d %H:%M} UTC with {chosen} ({'full' if report.full else 'incremental'}, "
        f"{report.late_records:,} late records, {report.partitions_written} partitions, "
        f"{report.chunks} chunks) "
        f"in {report.seconds:.1f}s"
    )


@features_app.command("apply")
def apply_command(ctx: typer.Context, home: HomeOption = None, wait: WaitOption = 0.0) -> None:
    """Register the Feast entity, source, view and service and create the online table (`feast apply`)."""
    from churnops.features.store import apply, open_store

    ws = workspace(home)
    writer_lock(ctx, ws, wait=wait)
    apply(open_store(home=ws.home))
    console.print(f"applied the Feast definitions for {ws.home}")


def _store(ctx: typer.Context, ws: Workspace, *, wait: float) -> FeatureStore:
    from churnops.features.store import apply, is_applied, open_store

    store = open_store(home=ws.home)
    if not is_applied(store):
        # Registering the definitions writes the registry, so even a reading command takes the lock
        # for it (re-entrant: `materialize` already holds it).
        writer_lock(ctx, ws, wait=wait)
        apply(store)
    return store


def training_set(
    ctx: typer.Context,
    entities: Annotated[Path, typer.Option(help="Parquet or CSV with customer_id and event_timestamp.")],
    out: Annotated[Path, typer.Option(help="Where to write the training set (.parquet or .csv).")],
    feature_service: Annotated[str, typer.Option(help="The Feast feature service.")] = "customer_profile_v1",
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Point-in-time training set for entity rows, through Feast get_historical_features."""
    import pandas as pd

    from churnops.features.training_set import get_training_set

    ws = workspace(home)
    if not entities.is_file():
        raise fail(f"entity file {entities} does not exist", code=2)
    if entities.suffix not in (".parquet", ".csv") or out.suffix not in (".parquet", ".csv"):
        raise fail("--entities and --out must be .parquet or .csv files", code=2)
    frame = pd.read_parquet(entities) if entities.suffix == ".parquet" else pd.read_csv(entities)
    store = _store(ctx, ws, wait=wait)
    try:
        result = get_training_set(store=store, entities=frame, feature_service=feature_service)
    except ValueError as exc:
        raise fail(f"{entities}: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".parquet":
        result.to_parquet(tmp, index=False)
    else:
        result.to_csv(tmp, index=False)
    tmp.replace(out)
    console.print(
        f"wrote {len(result):,} rows ({int(result['profile_defaulted'].sum()):,} defaulted) to {out}"
    )


def materialize_command(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help="Refresh time, ISO-8601 (default: now).")] = None,
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Snapshot every customer as of --at, append it offline and load the online store."""
    ws = workspace(home)
    at_time = _time(at, "--at")
    # Before the slow imports (Feast): a second writer learns at once that it must wait.
    writer_lock(ctx, ws, wait=wait)
    _recover_lake(ws)
    with progress("materialize") as step:
        with step("loading Feast and the feature store"):
            from churnops.contracts.feature_contract import load_feature_contract
            from churnops.features.materialize import materialize

            store = _store(ctx, ws, wait=wait)
        with step("snapshotting every customer, appending offline, loading online"):
            try:
                report = materialize(
                    store=store,
                    lake_dir=ws.lake,
                    features_dir=ws.features,
                    contract=load_feature_contract(),
                    at=at_time,
                    memory_limit=os.environ.get(MEMORY_LIMIT_ENV) or None,
                )
            except ValueError as exc:
                raise fail(str(exc)) from exc
    console.print(
        f"materialized {report.customers:,} customers at {report.at:%Y-%m-%d %H:%M:%S} UTC "
        f"in {report.seconds:.1f}s "
        f"(build {report.build.seconds:.1f}s, snapshot {report.compute_seconds:.1f}s, online load "
        f"{report.online_seconds:.1f}s)"
    )


def parity_command(
    ctx: typer.Context,
    at: Annotated[
        str | None, typer.Option(help="Time to compare (default: the last materialization).")
    ] = None,
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Compare online values with offline point-in-time values; exit 1 beyond the contract's tolerance."""
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.materialize import last_materialized
    from churnops.features.parity import check_parity

    ws = workspace(home)
    contract = load_feature_contract()
    store = _store(ctx, ws, wait=wait)
    when = _time(at, "--at") or last_materialized(store, contract)
    if when is None:
        raise fail("nothing was materialized yet: run `churnops materialize` first, or pass --at", code=2)
    report = check_parity(
        store=store,
        at=when,
        sample=contract.parity.sample_size,
        tolerance=contract.parity.tolerance,
        features_dir=ws.features,
        contract=contract,
    )
    if not report.worst.empty:
        console.print(report.worst.to_string(index=False))
    verdict = "passed" if report.passed else "FAILED"
    console.print(
        f"parity {verdict} at {report.at:%Y-%m-%d %H:%M:%S} UTC: {report.sampled} customers, "
        f"{report.mismatches} values beyond tolerance {report.tolerance}"
    )
    if not report.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.add_typer(features_app, name="features")
    app.command("training-set")(training_set)
    app.command("materialize")(materialize_command)
    app.command("parity")(parity_command)
