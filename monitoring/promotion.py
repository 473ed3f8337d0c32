"""Running the promotion gate end to end: gather its inputs, check, decide, and (unless a dry run) act.

`churnops promote` and the demo pipeline both call `run_gate` with the workspace's paths; the
checks and the decision are `monitoring.gate`, the registry access `monitoring.registry`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.monitoring.audit import current_user
from churnops.monitoring.drift import DriftRun, compute_drift, write_drift_html, write_drift_json
from churnops.monitoring.gate import (
    GateCheck,
    GateDecision,
    Versions,
    contract_check,
    decide,
    drift_check,
    quality_check,
    require_reason,
)
from churnops.monitoring.inputs import (
    current_features,
    ended_customers,
    feature_table,
    lake_contract_report,
    read_frame,
)
from churnops.monitoring.quality import check_feature_table, check_training_set
from churnops.monitoring.recovery import Resolution, reconcile
from churnops.monitoring.registry import (
    TEST_ARTIFACT,
    TRAIN_ARTIFACT,
    apply_decision,
    compare_models,
    load_run_frame,
    open_client,
    resolve_versions,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class GateRun:
    """Everything a gate run computed: the decision and the drift run behind it.

    Attributes:
        decision: What the gate decided.
        drift: The drift of the current features against the challenger's training set.
        audit_id: The audit record's id, or None for a dry run.
        recovered: Decisions an earlier crash left pending, reconciled before this one was taken.
    """

    decision: GateDecision
    drift: DriftRun
    audit_id: int | None
    recovered: tuple[Resolution, ...] = ()


@dataclass(frozen=True)
class GateInputs:
    """The frames the gate compares.

    Attributes:
        versions: The registry state.
        train: The challenger's training set (the drift reference).
        window: The challenger run's latest out-of-time window (scores both models).
        current: The current features (the drift current).
        current_label: Where the current features came from.
        table: The feature table whose quality is checked.
    """

    versions: Versions
    train: pd.DataFrame
    window: pd.DataFrame
    current: pd.DataFrame
    current_label: str
    table: pd.DataFrame


def run_gate(
    *,
    lake_dir: Path,
    features_dir: Path,
    audit_db: Path,
    tracking_uri: str,
    tracking_db: Path | None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    current_file: Path | None = None,
    now: datetime | None = None,
    step: Callable[[str], AbstractContextManager[object]] = nullcontext,
) -> GateRun:
    """Gather the gate's inputs, decide, and (unless a dry run) act.

    Unless a dry run, decisions an earlier crash left pending are reconciled first, so the gate
    decides on a registry where alias, history and audit agree.

    Args:
        lake_dir: The lake (source-contract checks; who is active).
        features_dir: The offline feature table's folder.
        audit_db: The audit database.
        tracking_uri: The MLflow tracking/registry URI.
        tracking_db: The tracking store's SQLite file, or None when it is a server.
        dry_run: Decide without moving an alias, logging or auditing.
        force: Promote even if a check fails (needs `reason`).
        reason: Why (recorded in the audit table).
        current_file: A current frame instead of the latest snapshot of every active customer.
        now: The decision time (default: now, UTC).
        step: Wraps each stage of the run (`step("drift")`), e.g. to show progress; does nothing
            by default.

    Returns:
        The decision, the drift run, the audit id (None for a dry run) and what was reconciled.

    Raises:
        monitoring.inputs.InputProblem: When an input is missing.
        monitoring.gate.GateError: When the gate cannot run (no challenger, force without reason).
    """
    now = now or datetime.now(UTC)
    require_reason(force=force, reason=reason)
    contract = load_feature_contract()
    with step("reading the challenger's datasets and the current features"):
        client = open_client(tracking_uri=tracking_uri, tracking_db=tracking_db)
        recovered: tuple[Resolution, ...] = ()
        if not dry_run:
            recovered = tuple(reconcile(client=client, audit_db=audit_db, user=current_user(), now=now))
        inputs = gather_inputs(
            client=client,
            contract=contract,
            lake_dir=lake_dir,
            features_dir=features_dir,
            current_file=current_file,
        )
    with step("PSI drift per feature (Evidently)"):
        drift = compute_drift(
            reference=inputs.train,
            current=inputs.current,
            contract=contract,
            reference_label=f"challenger v{inputs.versions.challenger} training set",
            current_label=inputs.current_label,
        )
    with step("contracts, quality and champion vs challenger on the out-of-time window"):
        checks = gate_checks(
            inputs=inputs,
            drift=drift,
            contract=contract,
            lake_dir=lake_dir,
            tracking_uri=tracking_uri,
            now=now,
        )
    decision = decide(versions=inputs.versions, checks=checks, dry_run=dry_run, force=force, reason=reason)
    audit_id = None
    if not dry_run:
        with step("recording the decision (audit, MLflow, alias)"):
            audit_id = act(client=client, decision=decision, drift=drift, audit_db=audit_db, now=now)
    return GateRun(decision=decision, drift=drift, audit_id=audit_id, recovered=recovered)


def gather_inputs(
    *,
    client: MlflowClient,
    contract: FeatureContract,
    lake_dir: Path,
    features_dir: Path,
    current_file: Path | None,
) -> GateInputs:
    """Read the challenger's logged datasets and the current features.

    Args:
        client: An MLflow client on the registry.
        contract: The feature contract.
        lake_dir: The lake (who is active).
        features_dir: The offline feature table's folder.
        current_file: A current frame instead of the latest snapshot of every active customer; it
            then also stands in for the feature table.

    Returns:
        The inputs.

    Raises:
        monitoring.inputs.InputProblem: When a frame is missing.
        monitoring.gate.GateError: When there is no challenger or its run lacks a dataset.
    """
    versions = resolve_versions(client=client)
    train = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=TRAIN_ARTIFACT)
    window = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=TEST_ARTIFACT)
    if current_file is not None:
        current, current_label = read_frame(path=current_file), str(current_file)
        table = current
    else:
        current, current_label = current_features(
            features_dir=features_dir, lake_dir=lake_dir, contract=contract
        )
        table = feature_table(features_dir=features_dir, contract=contract)
    return GateInputs(
        versions=versions,
        train=train,
        window=window,
        current=current,
        current_label=current_label,
        table=table,
    )


def gate_checks(
    *,
    inputs: GateInputs,
    drift: DriftRun,
    contract: FeatureContract,
    lake_dir: Path,
    tracking_uri: str,
    now: datetime,
) -> list[GateCheck]:
    """The gate's four checks, in order: contracts, quality, drift, model.

    Args:
        inputs: The frames the gate compares.
        drift: The drift of the current features against the challenger's training set.
        contract: The feature contract.
        lake_dir: The lake whose source-contract checks are run.
        tracking_uri: The MLflow tracking/registry URI (to load both models).
        now: The decision time (freshness of the feature table).

    Returns:
        The checks.
    """
    contracts = contract_check(report=lake_contract_report(lake_dir=lake_dir))
    quality = quality_check(
        reports=[
            check_feature_table(
                frame=inputs.table,
                contract=contract,
                now=now,
                label=inputs.current_label,
                ended=ended_customers(lake_dir=lake_dir, contract=contract, now=now),
            ),
            check_training_set(frame=inputs.train, contract=contract),
        ]
    )
    return [
        contracts,
        quality,
        drift_check(result=drift.result),
        compare_models(
            tracking_uri=tracking_uri, versions=inputs.versions, window=inputs.window, contract=contract
        ),
    ]


def act(
    *, client: MlflowClient, decision: GateDecision, drift: DriftRun, audit_db: Path, now: datetime
) -> int | None:
    """Apply a decision, logging the drift report with it, on behalf of the current user.

    Args:
        client: An MLflow client on the registry.
        decision: The decision.
        drift: The drift run whose HTML report and JSON summary are logged to the challenger's run.
        audit_db: The audit database.
        now: The decision time.

    Returns:
        The audit record's id, or None for a dry run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        html = write_drift_html(run=drift, path=Path(tmp) / "drift.html")
        summary = write_drift_json(result=drift.result, path=Path(tmp) / "drift.json")
        return apply_decision(
            client=client,
            decision=decision,
            audit_db=audit_db,
            user=current_user(),
            now=now,
            artifacts=[html, summary],
        )
