"""Commands for data quality, drift, promotion, rollback and audit.

Wiring only: resolve the workspace, pass its paths to the monitoring stage (`monitoring.inputs`
reads the frames, `monitoring.registry` the challenger's logged datasets, `monitoring.promotion`
runs the gate), print Rich tables. Exit status: 0 fine (warnings printed), 1 a rule, drift block
or gate refusal, 2 bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from churnops.commands.alerts import alerts_app, clear_alert, print_wide, raise_alert
from churnops.commands.common import (
    HomeOption,
    WaitOption,
    console,
    err_console,
    fail,
    workspace,
    writer_lock,
)
from churnops.commands.progress import Step, progress
from churnops.errors import ChurnopsError
from churnops.settings import Workspace
from churnops.storage.layout import EVIDENTLY_DIR

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from churnops.monitoring.drift import DriftRun
    from churnops.monitoring.gate import GateDecision
    from churnops.monitoring.monitor import MonitorResult
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
    step: Step | None = None,
) -> GateRun:
    """Run the promotion gate on the workspace's stores (see `monitoring.promotion.run_gate`).

    Args:
        ws: The workspace.
        dry_run: Decide without moving an alias, logging or auditing.
        force: Promote even if a check fails (needs `reason`).
        reason: Why (recorded in the audit table).
        current_file: A current frame instead of the latest snapshot of every active customer.
        step: Wraps each stage of the gate run (progress); None shows nothing.

    Returns:
        The decision, the drift run and the audit id (None for a dry run).
    """
    from contextlib import nullcontext

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
        step=step or nullcontext,
    )


def gate_json(gate: GateRun) -> dict[str, object]:
    """The gate's decision, its reasons and figures, as `promote --json` prints them.

    Args:
        gate: The gate run.

    Returns:
        A JSON-serialisable mapping: the decision (see `GateDecision.to_dict`), `reasons` (one line
        per failed check), the drift summary, the audit record id and what was recovered first.
    """
    decision = gate.decision
    return {
        **decision.to_dict(),
        "reasons": [f"{c.name}: {c.detail}" for c in decision.failures],
        "drift": gate.drift.result.to_dict(),
        "audit_id": gate.audit_id,
        "recovered": [r.describe() for r in gate.recovered],
    }


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
    with progress("drift") as step:
        try:
            with step("reading the reference and current frames"):
                if reference is not None:
                    ref, ref_label = read_frame(path=reference), str(reference)
                else:
                    ref, ref_label = challenger_dataset(client=mlflow_client(ws), artifact=TRAIN_ARTIFACT)
                if current is not None:
                    cur, cur_label = read_frame(path=current), str(current)
                else:
                    cur, cur_label = current_features(
                        features_dir=ws.features, lake_dir=ws.lake, contract=contract
                    )
            with step("PSI per feature (Evidently)"):
                run = compute_drift(
                    reference=ref,
                    current=cur,
                    contract=contract,
                    reference_label=ref_label,
                    current_label=cur_label,
                )
        except ChurnopsError as exc:
            raise fail(str(exc), code=BAD_INPUT) from exc
        with step("writing the HTML report and the JSON summary"):
            html_path = write_drift_html(run=run, path=html or ws.reports / "drift.html")
            json_path = write_drift_json(result=run.result, path=json_out or ws.reports / "drift.json")
    print_drift(run, reference=ref_label, current=cur_label)
    console.print(f"report: {html_path}\nsummary: {json_path}", highlight=False)
    # Only the workspace's own data raises the team's alert; files given by hand are ad-hoc checks.
    alerting = reference is None and current is None
    condition = f"drift_block:{contract.name}"
    if run.result.blocking:
        if alerting:
            raise_alert(
                ws,
                condition=condition,
                severity="critical",
                summary=f"PSI blocks on {', '.join(run.result.blocking)} ({cur_label} vs {ref_label})",
                details=f"block threshold {run.result.block}; report {html_path}",
            )
        raise typer.Exit(1)
    if alerting:
        clear_alert(ws, condition=condition, summary=f"no feature blocks on PSI ({cur_label} vs {ref_label})")


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
    from churnops.monitoring.inputs import ended_customers, feature_table, read_frame
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
        ended = ended_customers(lake_dir=ws.lake, contract=contract, now=now)
        reports = [check_feature_table(frame=frame, contract=contract, now=now, label=label, ended=ended)]
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
    if table is None:
        alert_freshness(ws, reports[0])
    failed = [c for r in reports for c in r.failures]
    if failed:
        console.print(f"[bold red]{len(failed)} rule(s) failed[/]")
        raise typer.Exit(1)
    console.print("[green]every rule passes[/]")


def alert_freshness(ws: Workspace, report: QualityReport) -> None:
    """Alert `online_stale` when the freshness rule fails, resolve it when it passes."""
    fresh = [c for c in report.checks if c.rule == "freshness"]
    if not fresh:
        return
    if fresh[0].outcome == "fail":
        raise_alert(
            ws,
            condition="online_stale",
            severity="critical",
            summary="online features are older than the contract's freshness bound",
            details=f"{fresh[0].message}; run `churnops materialize`",
        )
    elif fresh[0].outcome == "pass":
        clear_alert(ws, condition="online_stale", summary="online features are within the freshness bound")


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
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the decision, its reasons and figures (checks, drift) as JSON on stdout "
            "instead of tables.",
        ),
    ] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Run the promotion gate; move alias `champion` to the challenger when it passes (exit 1 if refused)."""
    ws = workspace(home)
    if not dry_run:
        # A dry run moves and records nothing, so it may run beside a writer.
        writer_lock(ctx, ws, wait=wait)
    with progress("promote") as step:
        try:
            gate = run_gate(ws, dry_run=dry_run, force=force, reason=reason, current_file=current, step=step)
        except ChurnopsError as exc:
            raise fail(str(exc), code=BAD_INPUT) from exc
    print_recovered(gate.recovered)
    if as_json:
        typer.echo(json.dumps(gate_json(gate), indent=2))
        if gate.decision.decision == "refused":
            raise typer.Exit(1)
        return
    print_decision(gate.decision)
    if gate.audit_id is not None:
        console.print(f"audit record #{gate.audit_id} in {ws.audit_db}", highlight=False)
    alert_gate_outcome(ws, gate.decision)
    if gate.decision.decision == "refused":
        raise typer.Exit(1)


def alert_gate_outcome(ws: Workspace, decision: GateDecision) -> None:
    """Alert `gate_failed` on a refused promotion, resolve it on a promotion (dry runs alert nothing)."""
    if decision.dry_run:
        return
    v = decision.versions
    if decision.decision == "refused":
        raise_alert(
            ws,
            condition="gate_failed",
            severity="critical",
            summary=f"promotion of {v.model} v{v.challenger} refused",
            details="; ".join(f"{c.name}: {c.detail}" for c in decision.failures),
        )
    elif decision.decision in ("promoted", "unchanged"):
        clear_alert(ws, condition="gate_failed", summary=f"{v.model} v{v.challenger} passed the gate")


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


def print_monitor(result: MonitorResult) -> None:
    """Print each window's drift and join figures, then realised performance, then the verdict."""
    refs = result.references
    console.print(
        f"champion {refs.model} v{refs.version}; reference {refs.label} — evaluated at "
        f"{result.evaluated_at:%Y-%m-%d %H:%M:%S} UTC",
        highlight=False,
    )
    for w in result.windows:
        table = Table(
            title=f"served, last {w.name}: {w.served:,} known predictions ({w.compared:,} compared)"
        )
        table.add_column("feature")
        table.add_column("PSI", justify="right")
        table.add_column("status")
        for f in [*w.features, *([w.score] if w.score is not None else [])]:
            table.add_row(f.feature, f"{f.psi:.4f}", f"[{_STATUS_STYLE[f.status]}]{f.status}[/]")
        print_wide(table)
        j = w.join
        console.print(
            f"join: {j.rows:,} predictions, match rate {_pct(j.match_rate)} "
            f"(min {_pct(w.match_rate_min)}), present {_pct(j.present_share)}, stale "
            f"{_pct(j.stale_share)}, default {_pct(j.default_share)}, {j.duplicate_rows:,} repeat "
            f"predictions over {j.customers:,} customers (max {j.max_per_customer})",
            highlight=False,
        )
    realised = result.realised
    table = Table(
        title=f"realised performance ({realised.metric} floor {realised.floor}): "
        f"{realised.matured:,} matured, {realised.pending:,} pending, "
        f"{realised.late_labels_ignored} late labels ignored"
    )
    for column in (
        "week",
        "version",
        "rows",
        "churned",
        "ROC AUC",
        "PR AUC",
        "Brier",
        "mean p",
        "rate",
        "test",
    ):
        table.add_column(column, justify="left" if column in ("week", "version") else "right")
    table.add_column("status")
    for wk in realised.weeks:
        style = _STATUS_STYLE.get(wk.status, "dim")
        table.add_row(
            wk.week,
            wk.model_version,
            f"{wk.rows:,}",
            f"{wk.positives:,}",
            _fmt(wk.roc_auc),
            _fmt(wk.pr_auc),
            _fmt(wk.brier),
            _fmt(wk.mean_predicted),
            _fmt(wk.observed_rate),
            _fmt(wk.test_figure),
            f"[{style}]{wk.status}[/]",
        )
    print_wide(table)
    style = _STATUS_STYLE[result.status]
    console.print(f"monitor: [{style}]{result.status}[/]")


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def _monitor_alerts(ws: Workspace, result: MonitorResult, *, feature_set: str) -> None:
    """Raise or resolve the three conditions a monitor run grades."""
    model = result.references.model
    feature_blocks = sorted({f.feature for w in result.windows for f in w.features if f.status == "block"})
    score_blocks = [w.name for w in result.windows if w.score_status == "block"]
    weeks = [f"{w.week} v{w.model_version}" for w in result.realised.weeks if w.status == "block"]
    conditions = [
        (
            f"served_drift_block:{feature_set}",
            feature_blocks,
            "served features drift (PSI ≥ block) from the champion's training set: "
            + ", ".join(feature_blocks),
            "served features are within the drift thresholds",
        ),
        (
            f"prediction_drift_block:{model}",
            score_blocks,
            "served scores drift (PSI ≥ block) from the champion's test scores over "
            + ", ".join(score_blocks),
            "served scores are within the drift thresholds",
        ),
        (
            f"performance_floor:{model}",
            weeks if result.realised.status == "block" else [],
            f"realised {result.realised.metric} below the floor {result.realised.floor}: {', '.join(weeks)}",
            f"realised {result.realised.metric} is above the floor",
        ),
    ]
    for condition, failing, summary, cleared in conditions:
        if failing:
            raise_alert(
                ws, condition=condition, severity="critical", summary=summary, details=_reports_hint(ws)
            )
        else:
            clear_alert(ws, condition=condition, summary=cleared)


def _reports_hint(ws: Workspace) -> str:
    summary = ws.reports / "monitor.json"
    return f"figures: {summary}; over time: evidently ui --workspace {ws.home / EVIDENTLY_DIR}"


def monitor(
    home: HomeOption = None,
    window: Annotated[
        list[str] | None,
        typer.Option(
            "--window",
            help="Trailing window, e.g. 24h or 7d (repeatable). Default: the contract's (24h and 7d).",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Evaluation time, ISO-8601 UTC (default: now).", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON summary instead of tables.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON summary file (default: <home>/reports/monitor.json).", show_default=False),
    ] = None,
    max_rows: Annotated[
        int,
        typer.Option(help="Most known predictions compared per window (more are thinned evenly).", min=1000),
    ] = 500_000,
) -> None:
    """Drift of served features and scores, join figures and realised performance; exit 1 on a block."""
    from churnops.contracts.durations import parse_duration
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.monitoring.inputs import InputProblem
    from churnops.monitoring.monitor import load_references, run_monitor, store_snapshots, write_monitor_json
    from churnops.monitoring.served import log_path
    from churnops.storage.lake import read_source

    ws = workspace(home)
    contract = load_feature_contract()
    try:
        windows = [parse_duration(w) for w in window] if window else list(contract.monitoring.windows)
        when = _utc(at) if at else datetime.now(UTC)
    except ValueError as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    db = log_path(ws.predictions)
    try:
        if not db.is_file():
            raise InputProblem(f"no prediction log at {db}: serve the champion first (churnops serve)")
        references = load_references(
            client=mlflow_client(ws), tracking_uri=ws.tracking_uri, contract=contract
        )
        result = run_monitor(
            predictions_db=db,
            churn_labels=read_source(ws.lake, "churn_labels"),
            references=references,
            contract=contract,
            at=when,
            windows=windows,
            max_rows=max_rows,
        )
    except ChurnopsError as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    store_snapshots(workspace_dir=ws.home / EVIDENTLY_DIR, result=result)
    path = write_monitor_json(result=result, path=out or ws.reports / "monitor.json")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_monitor(result)
        console.print(f"summary: {path}\nsnapshots: {ws.home / EVIDENTLY_DIR}", highlight=False)
    _monitor_alerts(ws, result, feature_set=contract.name)
    if result.status == "block":
        raise typer.Exit(1)


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"--at {text!r}: give a UTC offset (e.g. 2026-06-30T10:00:00Z)")
    return value.astimezone(UTC)


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
    app.command()(monitor)
    app.add_typer(alerts_app, name="alerts")
