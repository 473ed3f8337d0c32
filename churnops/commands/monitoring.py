"""Commands for data quality, drift, promotion, rollback and audit.

Wiring only: resolve the workspace, pass its paths to the monitoring stage (`monitoring.inputs`
reads the frames, `monitoring.registry` the challenger's logged datasets, `monitoring.promotion`
runs the gate), print Rich tables. Exit status: 0 fine (warnings printed), 1 a rule, drift block
or gate refusal, 2 bad input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from churnops.commands.alerts import alerts_app
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
    from mlflow import MlflowClient

    from churnops.monitoring.drift import DriftRun
    from churnops.monitoring.gate import GateDecision
    from churnops.monitoring.promotion import GateRun
    from churnops.monitoring.quality import QualityReport
    from churnops.monitoring.recovery import Resolution

BAD_INPUT = 2
_STATUS_STYLE = {"ok": "green", "warn": "yellow", "block": "bold red"}
_OUTCOME_STYLE = {"pass": "green", "flag": "yellow", "skip": "dim", "fail": "bold red"}

ReferenceOption = Annotated[
    Path | None,
    typer.Option(
        "--reference",
        help="Baseline frame (.parquet or .csv). Default: the challenger's datasets/train.parquet in MLflow.",
        show_default=False,
    ),
]
CurrentOption = Annotated[
    Path | None,
    typer.Option(
        "--current",
        help="Current frame (.parquet or .csv). Default: the latest snapshot of every active customer.",
        show_default=False,
    ),
]


# ---------------------------------------------------------------- workspace adapters


def mlflow_client(ws: Workspace) -> MlflowClient:
    """An MLflow client on the workspace's store (see `monitoring.registry.open_client`).

    Args:
        ws: The workspace.

    Returns:
        The client.

    Raises:
        monitoring.inputs.InputProblem: When the workspace has no MLflow store yet.
    """
    from churnops.monitoring.registry import open_client

    return open_client(tracking_uri=ws.tracking_uri, tracking_db=ws.tracking_db)


def run_gate(
    ws: Workspace,
    *,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    current_file: Path | None = None,
) -> GateRun:
    """Run the promotion gate on the workspace's stores (see `monitoring.promotion.run_gate`).

    Args:
        ws: The workspace.
        dry_run: Decide without moving an alias, logging or auditing.
        force: Promote even if a check fails (needs `reason`).
        reason: Why (recorded in the audit table).
        current_file: A current frame instead of the latest snapshot of every active customer.

    Returns:
        The decision, the drift run and the audit id (None for a dry run).
    """
    from churnops.monitoring.promotion import run_gate as run_promotion_gate

    return run_promotion_gate(
        lake_dir=ws.lake,
        features_dir=ws.features,
        audit_db=ws.audit_db,
        tracking_uri=ws.tracking_uri,
        tracking_db=ws.tracking_db,
        dry_run=dry_run,
        force=force,
        reason=reason,
        current_file=current_file,
    )


def reconcile_pending(ws: Workspace, *, client: MlflowClient | None = None) -> None:
    """Finish or take back the decisions a crash left pending, and say so on stderr.

    Args:
        ws: The workspace.
        client: An MLflow client on its store (opened here when None and a decision is pending).

    Raises:
        monitoring.inputs.InputProblem: When a decision is pending but the MLflow store is missing.
    """
    from churnops.monitoring.audit import current_user, pending_decisions
    from churnops.monitoring.recovery import reconcile

    if not pending_decisions(db_path=ws.audit_db):
        return
    resolutions = reconcile(
        client=client or mlflow_client(ws), audit_db=ws.audit_db, user=current_user(), now=datetime.now(UTC)
    )
    print_recovered(resolutions)


# ---------------------------------------------------------------- printing


def print_recovered(resolutions: Sequence[Resolution]) -> None:
    """Say on stderr what became of each interrupted decision."""
    for r in resolutions:
        err_console.print(f"[yellow]recovered:[/] {r.describe()}", highlight=False, soft_wrap=True)


def print_drift(run: DriftRun, *, reference: str, current: str) -> None:
    """Print the per-feature PSI table and the overall verdict."""
    result = run.result
    table = Table(title=f"PSI drift (warn ≥ {result.warn}, block ≥ {result.block})")
    table.add_column("feature")
    table.add_column("kind")
    table.add_column("PSI", justify="right")
    table.add_column("status")
    for f in result.features:
        style = _STATUS_STYLE[f.status]
        table.add_row(f.feature, f.kind, f"{f.psi:.4f}", f"[{style}]{f.status}[/]")
    console.print(table)
    console.print(f"reference: {reference} — {result.reference_rows} rows", highlight=False)
    console.print(f"current:   {current} — {result.current_rows} rows", highlight=False)
    if result.blocking:
        console.print(f"[bold red]blocked[/]: {', '.join(result.blocking)}")
    if result.warning:
        console.print(f"[yellow]warning[/]: {', '.join(result.warning)}")
    if result.status == "ok":
        console.print("[green]no drift[/]")


def print_quality(report: QualityReport, *, title: str) -> None:
    """Print one quality report (flags and failures, plus a pass count)."""
    table = Table(title=f"{title}: {report.rows} rows")
    table.add_column("rule")
    table.add_column("target")
    table.add_column("figure", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("outcome")
    table.add_column("detail")
    for c in report.checks:
        style = _OUTCOME_STYLE[c.outcome]
        table.add_row(
            c.rule,
            c.target,
            _fmt(c.figure),
            _fmt(c.threshold),
            f"[{style}]{c.outcome}[/]",
            c.message,
        )
    console.print(table)


def print_decision(decision: GateDecision) -> None:
    """Print the gate's checks and its decision."""
    v = decision.versions
    table = Table(
        title=f"Promotion gate: {v.model} challenger v{v.challenger} vs champion "
        f"{'v' + v.champion if v.champion else '(none)'}"
    )
    table.add_column("check")
    table.add_column("figure", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("outcome")
    table.add_column("detail")
    for c in decision.checks:
        outcome = "[green]pass[/]" if c.passed else "[bold red]fail[/]"
        table.add_row(c.name, _fmt(c.figure), _fmt(c.threshold), outcome, c.detail)
    console.print(table)
    prefix = "[bold]dry run[/] — would be: " if decision.dry_run else ""
    verdict = {
        "promoted": f"[green]promoted[/]: champion → v{v.challenger}",
        "forced": f"[yellow]forced[/]: champion → v{v.challenger} despite failed checks "
        f"(reason: {decision.reason})",
        "refused": f"[bold red]refused[/]: champion stays {'v' + v.champion if v.champion else 'unset'}",
        "unchanged": f"unchanged: v{v.challenger} already is champion",
    }[decision.decision]
    console.print(prefix + verdict)
    for c in decision.failures:
        console.print(f"  • {c.name}: {c.detail}", highlight=False)


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4g}"


# ---------------------------------------------------------------- commands


def drift(
    home: HomeOption = None,
    reference: ReferenceOption = None,
    current: CurrentOption = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Evidently HTML report (default: <home>/reports/drift.html).", show_default=False),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="JSON summary (default: <home>/reports/drift.json).", show_default=False),
    ] = None,
) -> None:
    """PSI drift per feature (Evidently); exit 1 when any feature blocks, 2 on bad input."""
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.monitoring.drift import compute_drift, write_drift_html, write_drift_json
    from churnops.monitoring.inputs import current_features, read_frame
    from churnops.monitoring.registry import TRAIN_ARTIFACT, challenger_dataset

    ws = workspace(home)
    contract = load_feature_contract()
    try:
        if reference is not None:
            ref, ref_label = read_frame(path=reference), str(reference)
        else:
            ref, ref_label = challenger_dataset(client=mlflow_client(ws), artifact=TRAIN_ARTIFACT)
        if current is not None:
            cur, cur_label = read_frame(path=current), str(current)
        else:
            cur, cur_label = current_features(features_dir=ws.features, lake_dir=ws.lake, contract=contract)
        run = compute_drift(
            reference=ref, current=cur, contract=contract, reference_label=ref_label, current_label=cur_label
        )
    except ChurnopsError as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    print_drift(run, reference=ref_label, current=cur_label)
    html_path = write_drift_html(run=run, path=html or ws.reports / "drift.html")
    json_path = write_drift_json(result=run.result, path=json_out or ws.reports / "drift.json")
    console.print(f"report: {html_path}\nsummary: {json_path}", highlight=False)
    if run.result.blocking:
        raise typer.Exit(1)


def quality(
    home: HomeOption = None,
    table: Annotated[
        Path | None,
        typer.Option(
            help="Feature table (.parquet or .csv). Default: the workspace's offline feature table.",
            show_default=False,
        ),
    ] = None,
    training_set: Annotated[
        Path | None,
        typer.Option(
            help="Training set to check for join quality. Default: the challenger's, when one is registered.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the reports as JSON here.", show_default=False)
    ] = None,
) -> None:
    """The feature contract's data-quality rules; exit 1 on a failed rule, 2 on bad input."""
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.monitoring.gate import GateError
    from churnops.monitoring.inputs import feature_table, read_frame
    from churnops.monitoring.quality import (
        check_feature_table,
        check_training_set,
        write_quality_json,
    )
    from churnops.monitoring.registry import TRAIN_ARTIFACT, challenger_dataset

    ws = workspace(home)
    contract = load_feature_contract()
    now = datetime.now(UTC)
    try:
        if table is not None:
            frame, label = read_frame(path=table), str(table)
        else:
            frame = feature_table(features_dir=ws.features, contract=contract)
            label = f"feature table under {ws.features}"
        reports = [check_feature_table(frame=frame, contract=contract, now=now, label=label)]
        titles = [f"Feature table ({label})"]
        train, train_label = None, None
        if training_set is not None:
            train, train_label = read_frame(path=training_set), str(training_set)
        elif ws.tracking_db is None or ws.tracking_db.is_file():
            try:
                train, train_label = challenger_dataset(client=mlflow_client(ws), artifact=TRAIN_ARTIFACT)
            except GateError as exc:
                err_console.print(f"[yellow]note:[/] training-set checks skipped: {exc}", highlight=False)
        if train is not None:
            reports.append(check_training_set(frame=train, contract=contract, label=str(train_label)))
            titles.append(f"Training set ({train_label})")
    except ChurnopsError as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    for report, title in zip(reports, titles, strict=True):
        print_quality(report, title=title)
    if json_out is not None:
        console.print(f"json: {write_quality_json(reports=reports, path=json_out)}", highlight=False)
    failed = [c for r in reports for c in r.failures]
    if failed:
        console.print(f"[bold red]{len(failed)} rule(s) failed[/]")
        raise typer.Exit(1)
    console.print("[green]every rule passes[/]")


def promote(
    ctx: typer.Context,
    home: HomeOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the decision; move and record nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if a check fails (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(help="Why (required with --force; recorded in the audit).", show_default=False),
    ] = None,
    current: CurrentOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Run the promotion gate; move alias `champion` to the challenger when it passes (exit 1 if refused)."""
    ws = workspace(home)
    if not dry_run:
        # A dry run moves and records nothing, so it may run beside a writer.
        writer_lock(ctx, ws, wait=wait)
    try:
        gate = run_gate(ws, dry_run=dry_run, force=force, reason=reason, current_file=current)
    except ChurnopsError as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    print_recovered(gate.recovered)
    print_decision(gate.decision)
    if gate.audit_id is not None:
        console.print(f"audit record #{gate.audit_id} in {ws.audit_db}", highlight=False)
    if gate.decision.decision == "refused":
        raise typer.Exit(1)


def rollback(
    ctx: typer.Context,
    home: HomeOption = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (recorded in the audit).", show_default=False)
    ] = None,
    wait: WaitOption = 0.0,
) -> None:
    """Move alias `champion` back to the previous champion (audited)."""
    from churnops.monitoring.audit import current_user
    from churnops.monitoring.registry import rollback as run_rollback

    ws = workspace(home)
    writer_lock(ctx, ws, wait=wait)
    try:
        client = mlflow_client(ws)
        reconcile_pending(ws, client=client)
        done = run_rollback(
            client=client,
            audit_db=ws.audit_db,
            user=current_user(),
            now=datetime.now(UTC),
            reason=reason,
        )
    except ChurnopsError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"champion of {done.model}: v{done.from_version} → v{done.to_version} "
        f"(audit record #{done.audit_id})",
        highlight=False,
    )


def audit(
    ctx: typer.Context,
    home: HomeOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many decisions.", min=1)] = 20,
    checks: Annotated[bool, typer.Option("--checks", help="Also list each decision's checks.")] = False,
    wait: WaitOption = 0.0,
) -> None:
    """List the promotion and rollback decisions, newest first (reconciling interrupted ones first)."""
    from churnops.monitoring.audit import list_decisions, pending_decisions

    ws = workspace(home)
    if pending_decisions(db_path=ws.audit_db):
        # Reconciling writes the registry and the audit: only then is `audit` a writer.
        writer_lock(ctx, ws, wait=wait)
        reconcile_pending(ws)
    rows = list_decisions(db_path=ws.audit_db, limit=limit)
    if not rows:
        console.print(f"no decisions recorded in {ws.audit_db}", highlight=False)
        return
    table = Table(title=f"Audit ({ws.audit_db})")
    for column in ("id", "time", "user", "action", "model", "challenger", "champion", "decision", "reason"):
        table.add_column(column)
    table.add_column("state")
    for row in rows:
        champion = f"{row['champion_before'] or '—'} → {row['champion_after'] or '—'}"
        table.add_row(
            str(row["id"]),
            row["time"],
            row["user"],
            row["action"],
            row["model"],
            row["challenger_version"] or "—",
            champion,
            row["decision"],
            row["reason"] or "",
            row["state"] if row["resolution"] is None else f"{row['state']}: {row['resolution']}",
        )
    console.print(table)
    if checks:
        for row in rows:
            for c in row["checks"]:
                outcome = "pass" if c["passed"] else "fail"
                console.print(f"#{row['id']} {c['check_name']}: {outcome} — {c['detail']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command()(drift)
    app.command()(quality)
    app.command()(promote)
    app.command()(rollback)
    app.command()(audit)
    app.add_typer(alerts_app, name="alerts")
