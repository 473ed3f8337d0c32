"""Commands for the left end of the flow: generating and ingesting sources."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace, writer_lock


def generate(
    ctx: typer.Context,
    home: HomeOption = None,
    customers: Annotated[int, typer.Option(help="Number of customers.", min=1)] = 2000,
    days: Annotated[int, typer.Option(help="Length of the history window in days.", min=1)] = 120,
    seed: Annotated[int, typer.Option(help="Random seed; same arguments give identical files.")] = 42,
    churn_base_rate: Annotated[
        float, typer.Option(help="Base churn probability before engagement and plan effects.", min=0, max=1)
    ] = 0.35,
    paid_ratio: Annotated[float, typer.Option(help="Share of customers on paid plans.", min=0, max=1)] = 0.35,
    start: Annotated[
        datetime | None,
        typer.Option(help="Window start (UTC). Default: the current hour minus --days.", show_default=False),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Landing file format: csv or parquet.")] = "csv",
    dirty_rate: Annotated[
        float, typer.Option(help="Share of rows given a realistic fault (see _manifest.json).", min=0, max=1)
    ] = 0.0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <home>/data/landing).", show_default=False)
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Write the five synthetic sources (customers, usage_events, support_tickets, billing, churn_labels)."""
    if fmt not in ("csv", "parquet"):
        raise fail(f"--format must be 'csv' or 'parquet', got {fmt!r}.", code=2)
    from churnops.synthetic.generate import generate as run_generate

    ws = workspace(home, create=True)
    if out is None or out.resolve().is_relative_to(ws.home):
        # Files inside a home are what its `ingest` reads: written by one writer at a time.
        writer_lock(ctx, ws, wait=wait)
    file_format: Literal["csv", "parquet"] = "csv" if fmt == "csv" else "parquet"
    try:
        result = run_generate(
            out_dir=out or ws.landing,
            customers=customers,
            days=days,
            seed=seed,
            churn_base_rate=churn_base_rate,
            paid_ratio=paid_ratio,
            start=start,
            fmt=file_format,
            dirty_rate=dirty_rate,
        )
    except ValueError as exc:
        raise fail(str(exc), code=2) from exc
    table = Table(title=f"Generated {result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC")
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for source, path in result.files.items():
        table.add_row(source, f"{result.rows[source]:,}", str(path))
    console.print(table)
    if result.manifest is not None:
        console.print(f"Injected faults listed in {result.manifest}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command()(generate)
