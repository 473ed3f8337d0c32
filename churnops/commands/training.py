"""Commands for training and registering models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace, writer_lock
from churnops.commands.progress import progress

if TYPE_CHECKING:
    from churnops.training.train import TrainResult

_SHORT = {"logistic_regression": "LR", "hist_gradient_boosting": "HGB"}


def summary_tables(result: TrainResult) -> list[Table]:
    """The split and the metrics of a training, as Rich tables.

    Args:
        result: What `training.train.train` returned.

    Returns:
        The split table, then the metrics table.
    """
    from churnops.training.evaluate import METRIC_NAMES

    dates = result.split_dates
    split = Table(title="Out-of-time split (observation dates, UTC)")
    for column in ("window", "from", "to", "rows", "churn rate"):
        split.add_column(column, justify="right" if column in ("rows", "churn rate") else "left")
    for window, start, end in (
        ("train", dates.train_start, dates.train_end),
        ("validation", dates.validation_start, dates.validation_end),
        ("test", dates.test_start, dates.test_end),
    ):
        split.add_row(
            window,
            f"{start:%Y-%m-%d}",
            f"{end:%Y-%m-%d}",
            f"{result.rows[window]:,}",
            f"{result.positive_rates[window]:.1%}",
        )

    metrics = Table(
        title=f"Metrics (chosen by validation PR AUC: {result.chosen})",
        caption="LR = logistic_regression, HGB = hist_gradient_boosting, * = chosen",
    )
    metrics.add_column("metric", no_wrap=True)
    columns = [(name, window) for name in result.metrics for window in ("validation", "test")]
    for name, window in columns:
        marker = "*" if name == result.chosen else ""
        metrics.add_column(f"{_SHORT.get(name, name)}{marker}\n{window}", justify="right", no_wrap=True)
    metrics.add_column("constant\ntest", justify="right", no_wrap=True)
    for metric in METRIC_NAMES:
        values = [result.metrics[name][window][metric] for name, window in columns]
        metrics.add_row(metric, *(f"{v:.4f}" for v in values), f"{result.constant_test[metric]:.4f}")
    return [split, metrics]


def train_command(
    ctx: typer.Context,
    home: HomeOption = None,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same data and seed give the same metrics.")
    ] = 42,
    feature_service: Annotated[
        str, typer.Option(help="The Feast feature service to train on.")
    ] = "customer_profile_v1",
    wait: WaitOption = 0.0,
) -> None:
    """Train a logistic-regression baseline and gradient boosting on an out-of-time split, log the
    run in MLflow, and register the better one as `churn-model@challenger`."""
    ws = workspace(home)
    # Before the slow imports (Feast, MLflow): a second writer learns at once that it must wait.
    writer_lock(ctx, ws, wait=wait)
    with progress("train") as step:
        with step("loading Feast, MLflow and scikit-learn"):
            from churnops.features.store import apply, is_applied, open_store
            from churnops.training.train import train

            store = open_store(home=ws.home)
            if not is_applied(store):
                apply(store)
        with step("labels, point-in-time training set, two models, MLflow run and registration"):
            try:
                result = train(
                    store=store,
                    lake_dir=ws.lake,
                    tracking_uri=ws.tracking_uri,
                    artifact_location=str(ws.artifacts),
                    seed=seed,
                    feature_service=feature_service,
                )
            except ValueError as exc:
                raise fail(str(exc)) from exc
    for table in summary_tables(result):
        console.print(table)
    console.print(
        f"Registered [bold]{result.model_name}[/] version {result.model_version} as @challenger "
        f"(run {result.run_id}, training set sha256 {result.training_set_hash[:12]}…, "
        f"feature service {result.feature_service}).",
        highlight=False,
    )
    console.print(f"Review it: mlflow ui --backend-store-uri {ws.tracking_uri} --port 5000", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command("train")(train_command)
