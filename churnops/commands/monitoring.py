"""Commands for data quality, drift, promotion, rollback and audit.

Wiring only: resolve the workspace, read the frames and reports the monitoring stage needs
(feature table, lake contract checks, the challenger's logged datasets), call `monitoring.*`,
print Rich tables. Exit status: 0 fine (warnings printed), 1 a rule, drift block or gate refusal,
2 bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from churnops.commands.common import HomeOption, console, err_console, fail, workspace
from churnops.settings import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from churnops.contracts.feature_contract import FeatureContract
    from churnops.monitoring.drift import DriftRun
    from churnops.monitoring.gate import GateDecision
    from churnops.monitoring.quality import QualityReport

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


class InputProblem(Exception):
    """A frame or store the command needs is missing or unusable (exit 2)."""


@dataclass(frozen=True)
class GateRun:
    """Everything `promote` computed: the decision and the drift run behind it."""

    decision: GateDecision
    drift: DriftRun
    audit_id: int | None


# ---------------------------------------------------------------- inputs


def read_frame(path: Path) -> pd.DataFrame:
    """Read a user-supplied frame.

    Args:
        path: A `.parquet` or `.csv` file.

    Returns:
        The frame.

    Raises:
        InputProblem: When the file is missing or of another type.
    """
    import pandas as pd

    if not path.is_file():
        raise InputProblem(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise InputProblem(f"{path}: expected a .parquet or .csv file")


def mlflow_client(ws: Workspace) -> Any:
    """An MLflow client on the workspace's store, refusing to create a store that is not there.

    Args:
        ws: The workspace.

    Returns:
        The client.

    Raises:
        InputProblem: When the workspace has no MLflow store yet.
    """
    db = ws.tracking_db
    if db is not None and not db.is_file():
        raise InputProblem(f"no MLflow store at {db}: train a model first (churnops train)")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)


def challenger_dataset(ws: Workspace, artifact: str) -> tuple[pd.DataFrame, str]:
    """A dataset logged by the challenger's training run.

    Args:
        ws: The workspace.
        artifact: The artifact path, e.g. `datasets/train.parquet`.

    Returns:
        The frame and a label naming where it came from.
    """
    from churnops.monitoring.gate import load_run_frame, resolve_versions

    client = mlflow_client(ws)
    versions = resolve_versions(client=client)
    frame = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=artifact)
    return frame, f"{versions.model} v{versions.challenger} ({artifact})"


def current_features(ws: Workspace, contract: FeatureContract) -> tuple[pd.DataFrame, str]:
    """The latest snapshot of every active customer.

    Args:
        ws: The workspace.
        contract: The feature contract.

    Returns:
        The frame and a label naming where it came from.

    Raises:
        InputProblem: When no feature table was built.
    """
    from churnops.features.table import read_latest
    from churnops.monitoring.drift import select_active
    from churnops.storage.lake import read_source

    latest = read_latest(features_dir=ws.features, contract=contract)
    if latest.empty:
        raise InputProblem(f"no feature table under {ws.features}: build features first, or pass --current")
    customers = read_source(ws.lake, "customers")
    if customers.empty:
        return latest, f"latest snapshot of all {len(latest)} customers (no customers source in the lake)"
    active = select_active(latest=latest, customers=customers, join_key=contract.entity.join_key)
    return active, f"latest snapshot of the {len(active)} active customers"


def feature_table(ws: Workspace, contract: FeatureContract) -> pd.DataFrame:
    """The whole offline feature table.

    Args:
        ws: The workspace.
        contract: The feature contract.

    Returns:
        The table.

    Raises:
        InputProblem: When no feature table was built.
    """
    from churnops.features.table import read_table

    table = read_table(features_dir=ws.features, contract=contract)
    if table.empty:
        raise InputProblem(f"no feature table under {ws.features}: build features first, or pass --table")
    return table


def lake_contract_report(ws: Workspace) -> Any:
    """The source-contract checks of the whole lake.

    Args:
        ws: The workspace.

    Returns:
        The `ingestion.checks` report (`.passed`, `.results`).
    """
    from churnops.ingestion.checks import check_lake

    return check_lake(lake_dir=ws.lake)


# ---------------------------------------------------------------- printing


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


# ---------------------------------------------------------------- the gate


def run_gate(
    ws: Workspace,
    *,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    current_file: Path | None = None,
    now: datetime | None = None,
) -> GateRun:
    """Gather the gate's inputs from the workspace, decide, and (unless a dry run) act.

    `churnops promote` and the demo pipeline both call this.

    Args:
        ws: The workspace.
        dry_run: Decide without moving an alias, logging or auditing.
        force: Promote even if a check fails (needs `reason`).
        reason: Why (recorded in the audit table).
        current_file: A current frame instead of the latest snapshot of every active customer.
        now: The decision time (default: now, UTC).

    Returns:
        The decision, the drift run and the audit id (None for a dry run).

    Raises:
        InputProblem: When an input is missing.
        monitoring.gate.GateError: When the gate cannot run (no challenger, force without reason).
    """
    import tempfile

    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.monitoring.audit import current_user
    from churnops.monitoring.drift import compute_drift, write_drift_html, write_drift_json
    from churnops.monitoring.gate import (
        TEST_ARTIFACT,
        TRAIN_ARTIFACT,
        apply_decision,
        compare_models,
        contract_check,
        decide,
        drift_check,
        load_run_frame,
        quality_check,
        require_reason,
        resolve_versions,
    )
    from churnops.monitoring.quality import check_feature_table, check_training_set

    now = now or datetime.now(UTC)
    require_reason(force=force, reason=reason)
    contract = load_feature_contract()
    client = mlflow_client(ws)
    versions = resolve_versions(client=client)
    train = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=TRAIN_ARTIFACT)
    window = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=TEST_ARTIFACT)
    if current_file is not None:
        current, current_label = read_frame(current_file), str(current_file)
        table = current
    else:
        current, current_label = current_features(ws, contract)
        table = feature_table(ws, contract)

    drift = compute_drift(
        reference=train,
        current=current,
        contract=contract,
        reference_label=f"challenger v{versions.challenger} training set",
        current_label=current_label,
    )
    checks = [
        contract_check(report=lake_contract_report(ws)),
        quality_check(
            reports=[
                check_feature_table(frame=table, contract=contract, now=now, label=current_label),
                check_training_set(frame=train, contract=contract),
            ]
        ),
        drift_check(result=drift.result),
        compare_models(tracking_uri=ws.tracking_uri, versions=versions, window=window, contract=contract),
    ]
    decision = decide(versions=versions, checks=checks, dry_run=dry_run, force=force, reason=reason)
    audit_id = None
    if not dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            html = write_drift_html(run=drift, path=Path(tmp) / "drift.html")
            summary = write_drift_json(result=drift.result, path=Path(tmp) / "drift.json")
            audit_id = apply_decision(
                client=client,
                decision=decision,
                audit_db=ws.audit_db,
                user=current_user(),
                now=now,
                artifacts=[html, summary],
            )
    return GateRun(decision=decision, drift=drift, audit_id=audit_id)


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
    from churnops.monitoring.drift import DriftInputError, compute_drift, write_drift_html, write_drift_json
    from churnops.monitoring.gate import GateError

    ws = workspace(home)
    contract = load_feature_contract()
    try:
        if reference is not None:
            ref, ref_label = read_frame(reference), str(reference)
        else:
            ref, ref_label = challenger_dataset(ws, "datasets/train.parquet")
        if current is not None:
            cur, cur_label = read_frame(current), str(current)
        else:
            cur, cur_label = current_features(ws, contract)
        run = compute_drift(
            reference=ref, current=cur, contract=contract, reference_label=ref_label, current_label=cur_label
        )
    except (InputProblem, DriftInputError, GateError) as exc:
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
    from churnops.monitoring.quality import (
        QualityInputError,
        check_feature_table,
        check_training_set,
        write_quality_json,
    )

    ws = workspace(home)
    contract = load_feature_contract()
    now = datetime.now(UTC)
    try:
        if table is not None:
            frame, label = read_frame(table), str(table)
        else:
            frame, label = feature_table(ws, contract), f"feature table under {ws.features}"
        reports = [check_feature_table(frame=frame, contract=contract, now=now, label=label)]
        titles = [f"Feature table ({label})"]
        train, train_label = None, None
        if training_set is not None:
            train, train_label = read_frame(training_set), str(training_set)
        elif ws.tracking_db is None or ws.tracking_db.is_file():
            try:
                train, train_label = challenger_dataset(ws, "datasets/train.parquet")
            except GateError as exc:
                err_console.print(f"[yellow]note:[/] training-set checks skipped: {exc}", highlight=False)
        if train is not None:
            reports.append(check_training_set(frame=train, contract=contract, label=str(train_label)))
            titles.append(f"Training set ({train_label})")
    except (InputProblem, QualityInputError) as exc:
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
) -> None:
    """Run the promotion gate; move alias `champion` to the challenger when it passes (exit 1 if refused)."""
    from churnops.monitoring.drift import DriftInputError
    from churnops.monitoring.gate import GateError
    from churnops.monitoring.quality import QualityInputError

    ws = workspace(home)
    try:
        gate = run_gate(ws, dry_run=dry_run, force=force, reason=reason, current_file=current)
    except (InputProblem, GateError, DriftInputError, QualityInputError) as exc:
        raise fail(str(exc), code=BAD_INPUT) from exc
    print_decision(gate.decision)
    if gate.audit_id is not None:
        console.print(f"audit record #{gate.audit_id} in {ws.audit_db}", highlight=False)
    if gate.decision.decision == "refused":
        raise typer.Exit(1)


def rollback(
    home: HomeOption = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (recorded in the audit).", show_default=False)
    ] = None,
) -> None:
    """Move alias `champion` back to the previous champion (audited)."""
    from churnops.monitoring.audit import current_user
    from churnops.monitoring.gate import GateError
    from churnops.monitoring.gate import rollback as run_rollback

    ws = workspace(home)
    try:
        done = run_rollback(
            client=mlflow_client(ws),
            audit_db=ws.audit_db,
            user=current_user(),
            now=datetime.now(UTC),
            reason=reason,
        )
    except (InputProblem, GateError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"champion of {done.model}: v{done.from_version} → v{done.to_version} "
        f"(audit record #{done.audit_id})",
        highlight=False,
    )


def audit(
    home: HomeOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many decisions.", min=1)] = 20,
    checks: Annotated[bool, typer.Option("--checks", help="Also list each decision's checks.")] = False,
) -> None:
    """List the promotion and rollback decisions, newest first."""
    from churnops.monitoring.audit import list_decisions

    ws = workspace(home)
    rows = list_decisions(db_path=ws.audit_db, limit=limit)
    if not rows:
        console.print(f"no decisions recorded in {ws.audit_db}", highlight=False)
        return
    table = Table(title=f"Audit ({ws.audit_db})")
    for column in ("id", "time", "user", "action", "model", "challenger", "champion", "decision", "reason"):
        table.add_column(column)
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
