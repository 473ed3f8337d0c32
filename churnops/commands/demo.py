"""`churnops demo`: the whole pipeline on the embedded default, with progress and a summary."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace, writer_lock
from churnops.pipeline import DemoOptions, Step, StepResult, run_pipeline


def demo(
    ctx: typer.Context,
    home: HomeOption = None,
    customers: Annotated[int, typer.Option(help="Customers to generate.", min=1)] = 2000,
    days: Annotated[int, typer.Option(help="Days of history to generate.", min=1)] = 120,
    seed: Annotated[int, typer.Option(help="Random seed for generation and training.")] = 42,
    wait: WaitOption = 0.0,
) -> None:
    """Run every stage in order on the embedded default (no servers), then print a summary."""
    ws = workspace(home, create=True)
    # Taken once for the whole run: the steps call the stages directly and take no lock themselves.
    writer_lock(ctx, ws, wait=wait)
    opts = DemoOptions(customers=customers, days=days, seed=seed)
    console.print(f"[bold]churnops demo[/] in {ws.home}")
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, int] = {}

        def on_start(step: Step) -> None:
            tasks[step.name] = progress.add_task(step.name, total=1)

        def on_done(result: StepResult) -> None:
            task = tasks[result.name]
            progress.update(task, completed=1, description=f"[green]✓[/] {result.name}")
            progress.console.print(f"  {result.summary}", highlight=False)

        try:
            results = run_pipeline(ws, opts, on_start=on_start, on_done=on_done)
        except Exception as exc:
            raise fail(f"the demo stopped: {exc}") from exc

    table = Table(title="churnops demo: done")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for result in results:
        table.add_row(result.name, f"{result.seconds:.1f}", result.summary)
    console.print(table)
    console.print(f"Workspace: {ws.home}")
    console.print(
        f"Review runs and models: mlflow ui --backend-store-uri {ws.tracking_uri} --port 5000",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command()(demo)
