"""Commands for ingesting landing files and checking contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from churnops.commands.alerts import clear_alert, raise_alert
from churnops.commands.common import (
    HomeOption,
    WaitOption,
    console,
    err_console,
    fail,
    workspace,
    writer_lock,
)
from churnops.errors import ChurnopsError
from churnops.settings import Workspace

if TYPE_CHECKING:
    from churnops.ingestion.ingest import IngestReport

contracts_app = typer.Typer(
    help="Data contracts: run the source contracts' checks on the lake.", no_args_is_help=True
)


def ingest(
    ctx: typer.Context,
    home: HomeOption = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--source", help="Landing folder to read (default: <home>/data/landing).", show_default=False
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Ingest only this source (repeatable), e.g. --only usage_events.",
            show_default=False,
        ),
    ] = None,
    backfill: Annotated[
        bool | None,
        typer.Option(
            "--backfill/--live",
            help="Historical load (freshness skipped) or live batch (freshness enforced). Default: a batch "
            "whose ingested_at spans more than the contract's backfill_span is a backfill.",
            show_default=False,
        ),
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Validate landing files against the source contracts and merge accepted rows into the lake."""
    from churnops.ingestion.ingest import ingest as run_ingest

    # Files from elsewhere may start a new workspace; the home's own landing folder needs the home.
    ws = workspace(home, create=source is not None)
    writer_lock(ctx, ws, wait=wait)
    landing = source or ws.landing
    try:
        report = run_ingest(
            landing_dir=landing,
            lake_dir=ws.lake,
            quarantine_dir=ws.quarantine,
            log_db=ws.ingestion_log,
            sources=only or None,
            backfill=backfill,
        )
    except ChurnopsError as exc:
        raise fail(" ".join(str(exc).split())) from exc
    console.print(_batch_table(report, landing=landing))
    _print_notes(report, landing=landing)
    _batch_alerts(ws, report)
    if not report.ok:
        raise fail(_failure_message(report))


def _batch_alerts(ws: Workspace, report: IngestReport) -> None:
    """Alert `contract_batch_failed:<source>` per source with a failed batch; resolve the others."""
    failed: dict[str, list[str]] = {}
    for batch in report.failed:
        failed.setdefault(batch.source, []).extend(
            f"{batch.file.name}: {failure.message}" for failure in batch.failures
        )
    for source in dict.fromkeys(b.source for b in report.batches):
        condition = f"contract_batch_failed:{source}"
        if source in failed:
            raise_alert(
                ws,
                condition=condition,
                severity="critical",
                summary=f"a {source} batch failed its contract; nothing of it reached the lake",
                details="; ".join(failed[source]) + f". Rejected rows and reasons: {ws.quarantine / source}",
            )
        elif any(b.source == source and b.status == "ok" for b in report.batches):
            clear_alert(ws, condition=condition, summary=f"{source} batches pass their contract again")


_BATCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source", "left"),
    ("file", "left"),
    ("mode", "left"),
    ("received", "right"),
    ("accepted", "right"),
    ("quarantined", "right"),
    ("duplicates", "right"),
    ("late", "right"),
    ("status", "left"),
)
_STATUS_COLOUR = {"ok": "green", "failed": "red", "skipped": "yellow"}


def _batch_table(report: IngestReport, *, landing: Path) -> Table:
    """One row per batch: its counts and status."""
    table = Table(title=f"Ingested {landing}")
    for name, justify in _BATCH_COLUMNS:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for batch in report.batches:
        table.add_row(
            batch.source,
            batch.file.name,
            batch.mode,
            f"{batch.received:,}",
            f"{batch.accepted:,}",
            f"{batch.quarantined:,}",
            f"{batch.duplicates:,}",
            f"{batch.late:,}",
            f"[{_STATUS_COLOUR[batch.status]}]{batch.status}[/]",
        )
    return table


def _print_notes(report: IngestReport, *, landing: Path) -> None:
    """The sentences under the table: recovery, skips, backfills, quarantine files, sources without files."""
    for line in report.recovery.messages():
        console.print(f"recovery: {line}", highlight=False)
    for batch in report.batches:
        if batch.status == "skipped":
            console.print(f"[yellow]{batch.source}[/]: {batch.message}", highlight=False)
        if batch.mode == "backfill" and batch.status == "ok":
            console.print(
                f"{batch.source}: backfill, freshness not enforced ({batch.backfill_reason})", highlight=False
            )
        if batch.quarantine_file is not None:
            rules = ", ".join(f"{rule} {count:,}" for rule, count in batch.quarantine_rules.items())
            console.print(
                f"{batch.source}: quarantined rows ({rules}) → {batch.quarantine_file}", highlight=False
            )
    for name in report.missing:
        console.print(f"{name}: no landing file in {landing}", highlight=False)


def _failure_message(report: IngestReport) -> str:
    """Every failed check of every failed batch, in one paragraph."""
    lines = [
        f"{b.source} ({b.file.name}): {failure.message}" for b in report.failed for failure in b.failures
    ]
    message = "batch(es) failed their contract, nothing of them reached the lake: " + "; ".join(lines)
    # Each batch commits on its own: say which of this run's files did reach the lake.
    committed = [f"{b.source} ({b.file.name})" for b in report.batches if b.status == "ok"]
    return message + (f". Committed in this run: {', '.join(committed)}" if committed else "")


@contracts_app.command("check")
def check(
    home: HomeOption = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Check only this source, e.g. billing.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of a table.")
    ] = False,
) -> None:
    """Run the source contracts' batch checks on what is in the lake; exit 1 when any fails, 2 when the
    lake is empty or missing."""
    from churnops.ingestion.checks import check_lake
    from churnops.ingestion.log import unsettled_batches

    ws = workspace(home)
    # A reader does not recover (that is a writer's job, under the lock); it says what it may see.
    unsettled = [row["id"] for row in unsettled_batches(ws.ingestion_log)]
    if unsettled:
        err_console.print(
            f"[yellow]note:[/] {len(unsettled)} batch(es) of an ingest that is running or was killed are "
            f"not settled ({', '.join(unsettled)}): the lake may hold part of one. Run any writer "
            "(`churnops ingest`, `features build`) to recover first, then check again.",
            highlight=False,
            soft_wrap=True,
        )
    try:
        report = check_lake(lake_dir=ws.lake, source=source)
    except ChurnopsError as exc:
        raise fail(" ".join(str(exc).split())) from exc
    if not any(ws.lake.glob("*/date=*/data.parquet")):
        # Every check would be "skipped" and the gate green: most likely the wrong workspace.
        raise fail(
            f"the lake {ws.lake} holds no data (no <source>/date=*/data.parquet partition): nothing to "
            "check. Is --home / $CHURNOPS_HOME the workspace you meant? Run `churnops ingest` first.",
            code=2,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table(title=f"Contract checks on {ws.lake}")
        for name in ("source", "rule", "column", "figure", "threshold", "result"):
            table.add_column(name, overflow="fold")
        for r in report.results:
            result = "[yellow]skipped[/]" if r.skipped else "[green]pass[/]" if r.passed else "[red]FAIL[/]"
            table.add_row(
                r.source,
                r.rule,
                r.column or "",
                "" if r.figure is None else f"{r.figure:.4g}",
                "" if r.threshold is None else f"{r.threshold:g}",
                result,
            )
        console.print(table)
        # The table stays narrow; the sentences that matter (failures, skips) follow it.
        for r in report.results:
            if r.skipped or not r.passed:
                console.print(f"{r.source}: {r.message}", highlight=False)
    if not report.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command("ingest")(ingest)
    app.add_typer(contracts_app, name="contracts")
