"""The audit trail of promotion decisions (SQLite through sqlite-utils).

Two tables: `decisions` (one row per promote / rollback: time, user, model, versions, decision,
reason) and `decision_checks` (one row per gate check of a decision: figure, threshold, outcome).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

DECISIONS = "decisions"
CHECKS = "decision_checks"


@dataclass(frozen=True)
class AuditCheck:
    """One gate check as recorded.

    Attributes:
        name: The check (`contracts`, `quality`, `drift`, `model`).
        passed: Its outcome.
        figure: The measured value (NaN when the check has none).
        threshold: The bound it was compared with (NaN when none).
        detail: A sentence describing the figure.
    """

    name: str
    passed: bool
    figure: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class AuditRecord:
    """One decision.

    Attributes:
        time: When it was taken (UTC).
        user: Who took it.
        action: `promote` or `rollback`.
        model: The registered model.
        challenger_version: The version considered for promotion (None for a rollback).
        champion_before: The champion before the decision (None when there was none).
        champion_after: The champion after it.
        decision: `promoted`, `forced`, `refused`, `unchanged` or `rolled_back`.
        reason: The operator's reason (required for a forced promotion).
        checks: The gate checks behind the decision.
    """

    time: datetime
    user: str
    action: str
    model: str
    challenger_version: str | None
    champion_before: str | None
    champion_after: str | None
    decision: str
    reason: str | None
    checks: tuple[AuditCheck, ...] = ()


def current_user() -> str:
    """The operator's name: `$CHURNOPS_USER`, else the login name, else `unknown`.

    Returns:
        A user name.
    """
    explicit = os.environ.get("CHURNOPS_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_decision(*, db_path: Path, record: AuditRecord) -> int:
    """Append one decision and its checks in a single transaction.

    Args:
        db_path: The audit database (created with its tables on first use).
        record: The decision.

    Returns:
        The decision's id.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(db_path)
    _ensure_tables(db)
    with db.conn:
        table = db.table(DECISIONS)
        table.insert(
            {
                "time": record.time.isoformat(),
                "user": record.user,
                "action": record.action,
                "model": record.model,
                "challenger_version": record.challenger_version,
                "champion_before": record.champion_before,
                "champion_after": record.champion_after,
                "decision": record.decision,
                "reason": record.reason,
            }
        )
        decision_id = int(table.last_pk)
        db.table(CHECKS).insert_all(
            {
                "decision_id": decision_id,
                "check_name": c.name,
                "passed": c.passed,
                "figure": c.figure,
                "threshold": c.threshold,
                "detail": c.detail,
            }
            for c in record.checks
        )
    db.close()
    return decision_id


def list_decisions(*, db_path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The recorded decisions, newest first, each with its checks under `checks`.

    Args:
        db_path: The audit database (a missing file means no decisions yet).
        limit: At most this many decisions (None: all).

    Returns:
        One mapping per decision with the `decisions` columns and a `checks` list.
    """
    if not db_path.is_file():
        return []
    db = sqlite_utils.Database(db_path)
    _ensure_tables(db)
    rows = list(db.table(DECISIONS).rows_where(order_by="id desc", limit=limit))
    for row in rows:
        row["checks"] = [
            {k: v for k, v in check.items() if k not in ("id", "decision_id")}
            for check in db.table(CHECKS).rows_where("decision_id = ?", [row["id"]], order_by="id")
        ]
    db.close()
    return rows


def _ensure_tables(db: sqlite_utils.Database) -> None:
    db.table(DECISIONS).create(
        {
            "id": int,
            "time": str,
            "user": str,
            "action": str,
            "model": str,
            "challenger_version": str,
            "champion_before": str,
            "champion_after": str,
            "decision": str,
            "reason": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table(CHECKS).create(
        {
            "id": int,
            "decision_id": int,
            "check_name": str,
            "passed": bool,
            "figure": float,
            "threshold": float,
            "detail": str,
        },
        pk="id",
        foreign_keys=[("decision_id", DECISIONS, "id")],
        if_not_exists=True,
    )
