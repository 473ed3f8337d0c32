"""The audit trail of promotion decisions (SQLite through sqlite-utils).

Two tables: `decisions` (one row per promote / rollback: time, user, model, versions, decision,
reason, state) and `decision_checks` (one row per gate check of a decision: figure, threshold,
outcome).

A decision's row is written *before* the registry is touched, in state `pending`, and marked `done`
once every registry write is made; a row a crash left `pending` is later either completed (`done`,
with a `resolution` saying so) or `abandoned` (nothing moved). So every move of `champion` has a row,
even when the process died half-way. Databases from before the `state` column are migrated in
place: their rows were written after the fact, so they are `done`.
"""

from __future__ import annotations

import getpass
import math
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

DECISIONS = "decisions"
CHECKS = "decision_checks"
PENDING = "pending"
DONE = "done"
ABANDONED = "abandoned"
# Decisions that move alias `champion`, and so authorise serving the version they moved it to.
MOVES = ("promoted", "forced", "rolled_back")
# Columns added after the first release, with the value their rows get on migration.
_ADDED_COLUMNS = {"state": DONE, "resolution": None}


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


def begin_decision(*, db_path: Path, record: AuditRecord) -> int:
    """Write a decision and its checks in state `pending`, before anything it decides is done.

    Args:
        db_path: The audit database (created, or migrated, on first use).
        record: The decision.

    Returns:
        The decision's id (pass it to `finish_decision`).
    """
    db = _open(db_path)
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
                "state": PENDING,
                "resolution": None,
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


def finish_decision(*, db_path: Path, decision_id: int, state: str, resolution: str | None = None) -> bool:
    """Move a `pending` decision to `done` or `abandoned`; a finished one is left as it is.

    Args:
        db_path: The audit database.
        decision_id: The decision's id.
        state: `done` or `abandoned`.
        resolution: How an interrupted decision was resolved (None when it finished normally).

    Returns:
        True when the row was pending and is now `state` (False: someone finished it first).
    """
    db = _open(db_path)
    with db.conn:
        cursor = db.conn.execute(
            f"UPDATE {DECISIONS} SET state = ?, resolution = ? WHERE id = ? AND state = ?",
            [state, resolution, decision_id, PENDING],
        )
    db.close()
    return cursor.rowcount == 1


def pending_decisions(*, db_path: Path) -> list[dict[str, Any]]:
    """The decisions a crash left `pending`, oldest first, each with its checks under `checks`.

    Args:
        db_path: The audit database (a missing file means none).

    Returns:
        One mapping per pending decision, as `list_decisions` gives them.
    """
    if not db_path.is_file():
        return []
    db = _open(db_path)
    rows = _with_checks(db, db.table(DECISIONS).rows_where("state = ?", [PENDING], order_by="id"))
    db.close()
    return rows


def as_record(row: dict[str, Any]) -> AuditRecord:
    """The record a `decisions` row was written from (to finish an interrupted decision).

    Args:
        row: A row of `list_decisions` or `pending_decisions`, with its `checks`.

    Returns:
        The record.
    """
    return AuditRecord(
        time=datetime.fromisoformat(row["time"]),
        user=row["user"],
        action=row["action"],
        model=row["model"],
        challenger_version=row["challenger_version"],
        champion_before=row["champion_before"],
        champion_after=row["champion_after"],
        decision=row["decision"],
        reason=row["reason"],
        checks=tuple(
            AuditCheck(
                c["check_name"], bool(c["passed"]), _number(c["figure"]), _number(c["threshold"]), c["detail"]
            )
            for c in row["checks"]
        ),
    )


def _number(value: float | None) -> float:
    # SQLite stores NaN (a check with no figure) as NULL.
    return math.nan if value is None else float(value)


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
    db = _open(db_path)
    rows = _with_checks(db, db.table(DECISIONS).rows_where(order_by="id desc", limit=limit))
    db.close()
    return rows


def authorized_champions(*, db_path: Path, model: str) -> frozenset[str]:
    """The versions of a model the audit table allows `champion` to point at now.

    That is the version the latest `done` move (a promotion, a forced promotion with a reason, or a
    rollback) moved `champion` to, and the target of every move still `pending` after it: a promote
    or rollback writes its row before it moves the alias, so during its transaction both the old
    and the new champion are allowed. Refused, unchanged and abandoned decisions allow nothing. A
    version the alias points at outside this set was moved there without the gate.

    The database is opened read-only: a reader (the prediction service) never creates or
    migrates it.

    Args:
        db_path: The audit database (a missing file means no decision yet).
        model: The registered model.

    Returns:
        The allowed versions (empty when no move of `model` was ever recorded).

    Raises:
        sqlite3.Error: When the database exists but cannot be read.
    """
    if not db_path.is_file():
        return frozenset()
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({DECISIONS})")}
        if not columns:
            return frozenset()
        # Rows from before the `state` column were written after the fact: they are done.
        state = "state" if "state" in columns else f"'{DONE}'"
        rows = conn.execute(
            f"SELECT champion_after, {state}, decision, reason FROM {DECISIONS} "
            f"WHERE model = ? AND decision IN ({', '.join('?' * len(MOVES))}) ORDER BY id DESC",
            [model, *MOVES],
        ).fetchall()
    finally:
        conn.close()
    allowed: set[str] = set()
    for after, row_state, decision, reason in rows:
        if after is None or (decision == "forced" and not (reason and reason.strip())):
            continue
        if row_state == PENDING:
            allowed.add(str(after))
        elif row_state == DONE:
            allowed.add(str(after))
            break
    return frozenset(allowed)


def _with_checks(db: sqlite_utils.Database, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    listed = list(rows)
    for row in listed:
        row["checks"] = [
            {k: v for k, v in check.items() if k not in ("id", "decision_id")}
            for check in db.table(CHECKS).rows_where("decision_id = ?", [row["id"]], order_by="id")
        ]
    return listed


def _open(db_path: Path) -> sqlite_utils.Database:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(db_path)
    _ensure_tables(db)
    _migrate(db)
    return db


def _migrate(db: sqlite_utils.Database) -> None:
    if set(_ADDED_COLUMNS) <= set(db.table(DECISIONS).columns_dict):
        return
    # Under the write lock, and checked again: two commands may open an old database at once.
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({DECISIONS})")}
        for column, default in _ADDED_COLUMNS.items():
            if column not in present:
                db.table(DECISIONS).add_column(column, str, not_null_default=default)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
            "state": str,
            "resolution": str,
        },
        pk="id",
        not_null={"state"},
        defaults={"state": DONE},
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
