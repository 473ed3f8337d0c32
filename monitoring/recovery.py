"""Reconciling decisions a crash left `pending`: finish them or take them back, and say which.

`monitoring.registry` applies a promotion or rollback as a transaction whose commit point is the
move of alias `champion` (audit row `pending` → history tag → alias → `done`). After a crash the
pending row says what was under way, and the alias says how far it got:

- the alias points at the row's `champion_after`: the change happened (serving may already use it),
  so it is completed — the history tag brought in line, the gate result logged, the row `done` with a
  resolution saying it was completed after an interruption;
- otherwise nothing visible happened: the history tag is put back, the alias is left alone and the
  row is `abandoned`, with a resolution saying so.

Every step is idempotent, so a crash during reconciliation is reconciled the same way next time.
`churnops promote`, `rollback` and `audit` (and the demo pipeline's gate) reconcile on start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnops.monitoring.audit import (
    ABANDONED,
    DONE,
    AuditRecord,
    as_record,
    finish_decision,
    pending_decisions,
)
from churnops.monitoring.gate import recorded_decision
from churnops.monitoring.registry import champion_version, log_gate_result, settle_history
from churnops.storage.crash import crash_point

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class Resolution:
    """What became of one interrupted decision.

    Attributes:
        audit_id: The decision's audit record.
        action: `promote` or `rollback`.
        decision: The decision (`promoted`, `forced`, `rolled_back`, ...).
        model: The registered model.
        champion_before: The champion when the decision was taken.
        champion_after: The champion the decision moved to.
        state: `done` (completed) or `abandoned` (taken back).
        resolution: The sentence recorded in the audit row.
    """

    audit_id: int
    action: str
    decision: str
    model: str
    champion_before: str | None
    champion_after: str | None
    state: str
    resolution: str

    def describe(self) -> str:
        """One line for the operator.

        Returns:
            E.g. `audit record #7 (promote forced, churn-model 2 → 3) was interrupted: completed ...`.
        """
        move = f"{self.champion_before or '—'} → {self.champion_after or '—'}"
        return (
            f"audit record #{self.audit_id} ({self.action} {self.decision}, {self.model} {move}) "
            f"was interrupted: {self.resolution}"
        )


def reconcile(*, client: MlflowClient, audit_db: Path, user: str, now: datetime) -> list[Resolution]:
    """Complete or abandon every pending decision, oldest first.

    Args:
        client: An MLflow client on the registry the decisions were applied to.
        audit_db: The audit database.
        user: Who is reconciling (recorded in the resolution).
        now: When (UTC).

    Returns:
        One resolution per decision that was pending (empty when none was).
    """
    return [
        _resolve(client=client, audit_db=audit_db, row=row, user=user, now=now)
        for row in pending_decisions(db_path=audit_db)
    ]


def _resolve(
    *, client: MlflowClient, audit_db: Path, row: dict[str, Any], user: str, now: datetime
) -> Resolution:
    record = as_record(row)
    current = champion_version(client=client, model=record.model)
    when = f"by {user} at {now.isoformat()}"
    if current == record.champion_after:
        resolution = f"completed after interruption {when}: '{record.model}@champion' already was {current}"
        _complete(client=client, record=record, resolution=resolution)
        state = DONE
    else:
        resolution = (
            f"abandoned after interruption {when}: '{record.model}@champion' was {current or 'unset'}, "
            f"not {record.champion_after or 'unset'}; nothing moved"
        )
        _abandon(client=client, record=record)
        state = ABANDONED
    finish_decision(db_path=audit_db, decision_id=int(row["id"]), state=state, resolution=resolution)
    return Resolution(
        audit_id=int(row["id"]),
        action=record.action,
        decision=record.decision,
        model=record.model,
        champion_before=record.champion_before,
        champion_after=record.champion_after,
        state=state,
        resolution=resolution,
    )


def _complete(*, client: MlflowClient, record: AuditRecord, resolution: str) -> None:
    settle_history(client=client, record=record, applied=True)
    crash_point("reconcile.history")
    if record.action == "promote":
        run_id = str(client.get_model_version(record.model, str(record.challenger_version)).run_id)
        log_gate_result(
            client=client,
            decision=recorded_decision(record=record, run_id=run_id),
            user=record.user,
            now=record.time,
            resolution=resolution,
        )


def _abandon(*, client: MlflowClient, record: AuditRecord) -> None:
    from mlflow.exceptions import MlflowException

    try:
        settle_history(client=client, record=record, applied=False)
    except MlflowException:
        # The registered model was deleted since: there is no history left to put back.
        if _registered(client=client, model=record.model):
            raise
    crash_point("reconcile.history")


def _registered(*, client: MlflowClient, model: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        return False
    return True
