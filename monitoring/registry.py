"""The promotion gate's registry access: everything that reads or writes the MLflow registry.

The registered model keeps the ordered list of champions in the tag `churnops.champion_history`, so
`rollback` can move `champion` back to the previous one. Every applied decision is written to the
audit table and, for promotions, its drift report and gate result are logged to the challenger's
MLflow run under `gate/`. The decisions themselves are made in `monitoring.gate`, without MLflow.

Applying a decision is a transaction whose commit point is the move of alias `champion`:

1. the audit row, in state `pending` (decision, versions, checks, reason, user, time);
2. the drift report, logged to the challenger's run (promotions only);
3. the history tag, with the change in;
4. the alias;
5. the gate result and the run's decision tag (promotions only);
6. the audit row, marked `done`.

A crash anywhere leaves a `pending` row that says what was under way; `monitoring.recovery`
finishes it (the alias moved) or takes it back (it did not) before the next promote or rollback.
Both refuse to start while a row is pending, so nothing is built on a half-applied change.

MLflow is imported inside the functions that use it: importing it takes seconds, and the command
line imports this module's callers only when a command needs them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.contracts.feature_contract import FeatureContract
from churnops.monitoring.audit import DONE, AuditRecord, begin_decision, finish_decision, pending_decisions
from churnops.monitoring.gate import (
    MOVES_CHAMPION,
    GateCheck,
    GateDecision,
    GateError,
    Versions,
    gate_paragraph,
    model_check,
    pr_auc,
    promotion_record,
    rollback_target,
    settled_history,
    with_gate_paragraph,
)
from churnops.monitoring.inputs import InputProblem
from churnops.storage.crash import crash_point
from churnops.training.names import CHALLENGER, CHAMPION, REGISTERED_MODEL

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_TAG = "churnops.champion_history"
TRAIN_ARTIFACT = "datasets/train.parquet"
TEST_ARTIFACT = "datasets/test.parquet"


def open_client(*, tracking_uri: str, tracking_db: Path | None) -> MlflowClient:
    """An MLflow client on the tracking/registry store, refusing to create a store that is not there.

    Args:
        tracking_uri: The MLflow tracking/registry URI.
        tracking_db: The store's SQLite file, or None when the store is a server.

    Returns:
        The client.

    Raises:
        InputProblem: When the SQLite store does not exist yet.
    """
    if tracking_db is not None and not tracking_db.is_file():
        raise InputProblem(f"no MLflow store at {tracking_db}: train a model first (churnops train)")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_versions(*, client: MlflowClient, model: str = REGISTERED_MODEL) -> Versions:
    """Find the challenger and the champion of a registered model.

    Args:
        client: An MLflow client on the tracking/registry store.
        model: The registered model's name.

    Returns:
        The versions.

    Raises:
        GateError: When the model or its `challenger` alias does not exist.
    """
    challenger = _version_by_alias(client=client, model=model, alias=CHALLENGER)
    if challenger is None:
        raise GateError(
            f"registered model {model!r} has no '{CHALLENGER}' version: train a model first (churnops train)"
        )
    champion = _version_by_alias(client=client, model=model, alias=CHAMPION)
    return Versions(
        model=model,
        challenger=str(challenger.version),
        challenger_run_id=str(challenger.run_id),
        champion=None if champion is None else str(champion.version),
    )


def training_run(*, client: MlflowClient, run_id: str) -> str:
    """The run holding the training set of a model's run.

    `churnops train` logs a parent run (the training set's windows under `datasets/`) with a child
    run per candidate (a registered version's source run); a model logged in a run of its own
    keeps its datasets there.

    Args:
        client: An MLflow client.
        run_id: A registered version's source run.

    Returns:
        The parent run's id, or `run_id` when the run has no parent.
    """
    return str(client.get_run(run_id).data.tags.get("mlflow.parentRunId") or run_id)


def load_run_frame(*, client: MlflowClient, run_id: str, artifact: str) -> pd.DataFrame:
    """Read a Parquet artifact of a model's training (e.g. `datasets/train.parquet`).

    Args:
        client: An MLflow client.
        run_id: The model's run (its parent's artifacts are read when it has one).
        artifact: The artifact's path inside the training run.

    Returns:
        The frame.

    Raises:
        GateError: When the run has no such artifact.
    """
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            source = training_run(client=client, run_id=run_id)
            local = client.download_artifacts(source, artifact, tmp)
        except (MlflowException, OSError) as exc:
            raise GateError(f"run {run_id} has no artifact {artifact!r}: {exc}") from exc
        return pd.read_parquet(local)


def challenger_dataset(*, client: MlflowClient, artifact: str) -> tuple[pd.DataFrame, str]:
    """A dataset logged by the challenger's training run.

    Args:
        client: An MLflow client.
        artifact: The artifact path, e.g. `datasets/train.parquet`.

    Returns:
        The frame and a label naming where it came from.

    Raises:
        GateError: When there is no challenger or its run lacks the artifact.
    """
    versions = resolve_versions(client=client)
    frame = load_run_frame(client=client, run_id=versions.challenger_run_id, artifact=artifact)
    return frame, f"{versions.model} v{versions.challenger} ({artifact})"


def load_version(*, tracking_uri: str, model: str, version: str) -> Any:
    """Load one registered version as its sklearn model.

    Args:
        tracking_uri: The MLflow tracking/registry URI.
        model: The registered model's name.
        version: The version.

    Returns:
        The fitted sklearn estimator.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.sklearn.load_model(f"models:/{model}/{version}")


def compare_models(
    *,
    tracking_uri: str,
    versions: Versions,
    window: pd.DataFrame,
    contract: FeatureContract,
) -> GateCheck:
    """Gate check 4 from the registry: score challenger and champion on the same window.

    Args:
        tracking_uri: The MLflow tracking/registry URI.
        versions: The registry state.
        window: The latest out-of-time window (features + the label).
        contract: The feature contract (features; `promotion.tolerance`).

    Returns:
        The model check.
    """
    features = contract.feature_names
    challenger = load_version(tracking_uri=tracking_uri, model=versions.model, version=versions.challenger)
    challenger_score = pr_auc(model=challenger, frame=window, features=features)
    champion_score = None
    if versions.champion is not None:
        champion = load_version(tracking_uri=tracking_uri, model=versions.model, version=versions.champion)
        champion_score = pr_auc(model=champion, frame=window, features=features)
    return model_check(
        challenger_score=challenger_score,
        champion_score=champion_score,
        tolerance=contract.promotion.tolerance,
    )


def champion_history(*, client: MlflowClient, model: str = REGISTERED_MODEL) -> list[str]:
    """The versions that have been champion, oldest first (rolled-back ones removed).

    Args:
        client: An MLflow client.
        model: The registered model's name.

    Returns:
        The history.
    """
    raw = client.get_registered_model(model).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def settle_history(*, client: MlflowClient, record: AuditRecord, applied: bool) -> None:
    """Write the history tag with a decision's change in (or out); a no-op when it already is.

    Args:
        client: An MLflow client.
        record: The decision.
        applied: Whether the change belongs in the history.
    """
    history = champion_history(client=client, model=record.model)
    settled = settled_history(history=history, record=record, applied=applied)
    if settled != history:
        client.set_registered_model_tag(record.model, HISTORY_TAG, json.dumps(settled))


def champion_version(*, client: MlflowClient, model: str) -> str | None:
    """The version alias `champion` points at.

    Args:
        client: An MLflow client.
        model: The registered model.

    Returns:
        The version, or None when the alias (or the model) does not exist.
    """
    current = _version_by_alias(client=client, model=model, alias=CHAMPION)
    return None if current is None else str(current.version)


def log_gate_result(
    *, client: MlflowClient, decision: GateDecision, user: str, now: datetime, resolution: str | None = None
) -> None:
    """Log `gate/gate_result.json` to the challenger's run, tag the run, and describe the version.

    The challenger version's description gets (or has replaced) a paragraph with the decision and
    each check's figure, so a reviewer of the version in the MLflow UI sees what the gate found.

    Args:
        client: An MLflow client.
        decision: The applied decision.
        user: Who decided.
        now: When the decision was taken (UTC).
        resolution: How an interrupted decision was finished (None when it was not interrupted).
    """
    run_id = decision.versions.challenger_run_id
    document: dict[str, Any] = {**decision.to_dict(), "time": now.isoformat(), "user": user}
    if resolution is not None:
        document["resolution"] = resolution
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "gate_result.json"
        result.write_text(json.dumps(document, indent=2) + "\n")
        client.log_artifact(run_id, str(result), artifact_path="gate")
    client.set_tag(run_id, "churnops.gate.decision", decision.decision)
    model, version = decision.versions.model, decision.versions.challenger
    described = client.get_model_version(model, version).description
    paragraph = gate_paragraph(decision=decision, user=user, now=now)
    client.update_model_version(
        model, version, description=with_gate_paragraph(description=described, paragraph=paragraph)
    )


def require_settled(*, audit_db: Path, model: str) -> None:
    """Refuse to change the registry while a decision on the model is pending.

    Args:
        audit_db: The audit database.
        model: The registered model.

    Raises:
        GateError: When a crash left a decision on `model` pending.
    """
    pending = [row["id"] for row in pending_decisions(db_path=audit_db) if row["model"] == model]
    if pending:
        raise GateError(
            f"audit record(s) {', '.join(f'#{i}' for i in pending)} of {model!r} are pending (a promote or "
            "rollback was interrupted): reconcile them first (churnops promote, rollback or audit does)"
        )


def require_champion(*, client: MlflowClient, model: str, expected: str | None) -> None:
    """Refuse to act on a decision taken while another version was champion.

    Args:
        client: An MLflow client.
        model: The registered model.
        expected: The champion the decision was taken against.

    Raises:
        GateError: When `champion` has moved since.
    """
    current = champion_version(client=client, model=model)
    if current != expected:
        raise GateError(
            f"'{CHAMPION}' of {model!r} moved from {expected or 'unset'} to {current or 'unset'} while the "
            "gate ran: run the gate again"
        )


def mark_done(*, audit_db: Path, audit_id: int) -> None:
    """Mark a decision this process applied `done` (the last step of its transaction).

    Args:
        audit_db: The audit database.
        audit_id: The decision's id.

    Raises:
        GateError: When another process settled the row while this one applied it, which only two
            writers on one workspace without its lock can do.
    """
    if not finish_decision(db_path=audit_db, decision_id=audit_id, state=DONE):
        raise GateError(
            f"audit record #{audit_id} was settled by another process while this one applied it: "
            "two writers ran at once; check `churnops audit` against the registry"
        )


def apply_decision(
    *,
    client: MlflowClient,
    decision: GateDecision,
    audit_db: Path,
    user: str,
    now: datetime,
    artifacts: Sequence[Path] = (),
) -> int | None:
    """Act on a decision as one transaction (see the module's docstring for its steps).

    A dry run does nothing and returns None.

    Args:
        client: An MLflow client.
        decision: The decision from `monitoring.gate.decide`.
        audit_db: The audit database.
        user: Who decided.
        now: When (UTC).
        artifacts: Files to log under `gate/` in the challenger's run (the drift HTML and JSON).

    Returns:
        The audit record's id, or None for a dry run.

    Raises:
        GateError: When a decision is pending, or `champion` moved since the decision was taken.
    """
    if decision.dry_run:
        return None
    versions = decision.versions
    require_settled(audit_db=audit_db, model=versions.model)
    require_champion(client=client, model=versions.model, expected=versions.champion)
    record = promotion_record(decision=decision, user=user, now=now)
    audit_id = begin_decision(db_path=audit_db, record=record)
    crash_point("promote.pending")
    for path in artifacts:
        client.log_artifact(versions.challenger_run_id, str(path), artifact_path="gate")
    crash_point("promote.report")
    if decision.decision in MOVES_CHAMPION:
        settle_history(client=client, record=record, applied=True)
        crash_point("promote.history")
        client.set_registered_model_alias(versions.model, CHAMPION, versions.challenger)
        crash_point("promote.alias")
    log_gate_result(client=client, decision=decision, user=user, now=now)
    crash_point("promote.result")
    mark_done(audit_db=audit_db, audit_id=audit_id)
    return audit_id


@dataclass(frozen=True)
class Rollback:
    """A completed rollback.

    Attributes:
        model: The registered model.
        from_version: The champion that was replaced.
        to_version: The champion now.
        audit_id: The audit record's id.
    """

    model: str
    from_version: str
    to_version: str
    audit_id: int


def rollback(
    *,
    client: MlflowClient,
    audit_db: Path,
    user: str,
    now: datetime,
    reason: str | None = None,
    model: str = REGISTERED_MODEL,
) -> Rollback:
    """Move `champion` back to the previous champion as one transaction, audited.

    The audit row (`pending`) comes first, then the history tag, then the alias; the row is marked
    `done` last, as for a promotion.

    Args:
        client: An MLflow client.
        audit_db: The audit database.
        user: Who rolled back.
        now: When (UTC).
        reason: Why (optional, recorded).
        model: The registered model.

    Returns:
        What moved.

    Raises:
        GateError: When there is no previous champion, `champion` was moved outside churnops, or a
            decision is pending.
    """
    require_settled(audit_db=audit_db, model=model)
    history = champion_history(client=client, model=model)
    current = champion_version(client=client, model=model)
    target = rollback_target(model=model, history=history, current=current)
    record = AuditRecord(
        time=now,
        user=user,
        action="rollback",
        model=model,
        challenger_version=None,
        champion_before=history[-1],
        champion_after=target,
        decision="rolled_back",
        reason=reason,
    )
    audit_id = begin_decision(db_path=audit_db, record=record)
    crash_point("rollback.pending")
    settle_history(client=client, record=record, applied=True)
    crash_point("rollback.history")
    client.set_registered_model_alias(model, CHAMPION, target)
    crash_point("rollback.alias")
    mark_done(audit_db=audit_db, audit_id=audit_id)
    return Rollback(model=model, from_version=history[-1], to_version=target, audit_id=audit_id)


def _version_by_alias(*, client: MlflowClient, model: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None
