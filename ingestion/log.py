"""The ingestion log: one row per batch (landing file) in a SQLite database, via sqlite-utils.

Columns: `id` (`<source>/<batch>`), `source`, `batch`, `file`, `content_hash`,
`contract_version`, `mode` (live/backfill), `backfill_reason`, `status`, `received`,
`accepted`, `quarantined`, `duplicates`, `replaced`, `late`, `failures` (JSON list of the failed
checks), `quarantine_file`, `started_at`, `finished_at`, `seconds`, `run` (the `ingest` run),
`pid` (its process), `pending` (the commit record while the batch commits), `note` (what
recovery did), `stream_first` / `stream_last` (for a micro-batch of the event stream: the range
of stream sequences it consumed for this source; empty for landing files).

A batch's row is written `running` when it starts, becomes `committing` with its final figures
and its commit record at the commit point, and `ok` or `failed` once its files are in place.
Recovery (`ingestion.recovery`) turns the row of a process that died into `interrupted` (before
the commit point; the row moves to id `<source>/<batch>@<run>` so the re-run gets the plain id)
or finishes its commit (after it). A re-run of a failed batch replaces its row; a batch that
succeeded is never run again (same content hash → skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlite_utils

TABLE = "batches"
_COLUMNS: dict[str, type] = {
    "id": str,
    "source": str,
    "batch": str,
    "file": str,
    "content_hash": str,
    "contract_version": int,
    "mode": str,
    "backfill_reason": str,
    "status": str,
    "received": int,
    "accepted": int,
    "quarantined": int,
    "duplicates": int,
    "replaced": int,
    "late": int,
    "failures": str,
    "quarantine_file": str,
    "started_at": str,
    "finished_at": str,
    "seconds": float,
    "run": str,
    "pid": int,
    "pending": str,
    "note": str,
    "stream_first": int,
    "stream_last": int,
}


def _open(log_db: Path) -> sqlite_utils.Database:
    log_db.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(log_db)
    if TABLE not in db.table_names():
        db[TABLE].create(_COLUMNS, pk="id", not_null={"id", "source", "content_hash", "status"})
        db[TABLE].create_index(["source", "content_hash"])
    else:
        # A log written before a column existed gains it (empty for the old rows).
        present = db[TABLE].columns_dict
        for name, kind in _COLUMNS.items():
            if name not in present:
                db[TABLE].add_column(name, kind)
    return db


def find_ingested(log_db: Path, *, source: str, content_hash: str) -> dict[str, Any] | None:
    """The successful batch of `source` with this content hash, if one was ingested.

    Args:
        log_db: The log's SQLite file.
        source: The source name.
        content_hash: SHA-256 of the landing file.

    Returns:
        The log row, or None.
    """
    if not log_db.is_file():
        return None
    db = _open(log_db)
    try:
        rows = list(
            db[TABLE].rows_where(
                "source = ? AND content_hash = ? AND status = 'ok'", [source, content_hash], limit=1
            )
        )
    finally:
        db.close()
    return rows[0] if rows else None


def record_batch(log_db: Path, row: dict[str, Any]) -> None:
    """Insert or replace one batch's row (keyed on `id`).

    Args:
        log_db: The log's SQLite file (created when missing).
        row: The batch's values (see the module docstring for the columns).
    """
    unknown = sorted(set(row) - set(_COLUMNS))
    if unknown:
        raise ValueError(f"ingestion log: unknown columns {unknown}")
    db = _open(log_db)
    try:
        # Not upsert: its first step inserts the bare key, which the NOT NULL columns ignore.
        db[TABLE].insert(row, pk="id", replace=True)
    finally:
        db.close()


def read_log(log_db: Path, *, source: str | None = None) -> list[dict[str, Any]]:
    """Every logged batch, oldest first.

    Args:
        log_db: The log's SQLite file.
        source: Only this source's batches.

    Returns:
        The rows (empty when the log does not exist yet).
    """
    where, args = ("source = ?", [source]) if source else (None, [])
    return _rows(log_db, where, args)


def unsettled_batches(log_db: Path) -> list[dict[str, Any]]:
    """The rows of batches that have not ended: `running` or `committing`, oldest first.

    Args:
        log_db: The log's SQLite file.

    Returns:
        The rows (empty when the log does not exist yet).
    """
    return _rows(log_db, "status IN ('running', 'committing')", [])


def stream_ranges(log_db: Path, *, since: int = 0) -> dict[str, list[tuple[int, int]]]:
    """Per source, the sequence ranges of its committed micro-batches, lowest first.

    A range holds every record of its source between its ends (the consumer commits only runs of
    consecutive sequences), so a sequence inside one was committed and one outside was not,
    whatever order the broker delivered them in.

    Args:
        log_db: The log's SQLite file.
        since: Only ranges that end at or after this sequence.

    Returns:
        Source → its (first, last) ranges (sources the stream never wrote are absent).
    """
    if not log_db.is_file():
        return {}
    db = _open(log_db)
    try:
        rows = db.execute(
            f"SELECT source, stream_first, stream_last FROM {TABLE} "
            "WHERE stream_last IS NOT NULL AND stream_last >= ? AND status = 'ok' "
            "ORDER BY source, stream_first",
            [since],
        ).fetchall()
    finally:
        db.close()
    ranges: dict[str, list[tuple[int, int]]] = {}
    for source, first, last in rows:
        ranges.setdefault(str(source), []).append((int(first), int(last)))
    return ranges


def _rows(log_db: Path, where: str | None, args: list[Any]) -> list[dict[str, Any]]:
    """The rows matching `where`, oldest first; none when the log does not exist yet."""
    if not log_db.is_file():
        return []
    db = _open(log_db)
    try:
        return list(db[TABLE].rows_where(where, args, order_by="started_at, id"))
    finally:
        db.close()


def settle_batch(
    log_db: Path, row_id: str, *, status: str, note: str | None = None, new_id: str | None = None
) -> None:
    """End a batch's row: set its final status, drop its commit record, optionally re-key it.

    Args:
        log_db: The log's SQLite file.
        row_id: The row's current id.
        status: `ok`, `failed` or `interrupted`.
        note: What recovery did, when it was recovery that ended the batch.
        new_id: A new id for the row (an interrupted attempt keeps its row under its own id).
    """
    updates: dict[str, Any] = {"status": status, "pending": None}
    if note is not None:
        updates["note"] = note
    if new_id is not None:
        updates["id"] = new_id
    db = _open(log_db)
    try:
        db[TABLE].update(row_id, updates)
    finally:
        db.close()


def interrupt_batch(log_db: Path, row_id: str, *, run: str, note: str) -> None:
    """Mark a batch that stopped before its commit point `interrupted`, under its own id.

    The row moves to `<source>/<batch>@<run>`, so it stays in the log when the re-run of the
    same file writes `<source>/<batch>`.

    Args:
        log_db: The log's SQLite file.
        row_id: The row's id, `<source>/<batch>`.
        run: The run the batch belonged to.
        note: Why it stopped and what that means for the lake.
    """
    settle_batch(log_db, row_id, status="interrupted", note=note, new_id=f"{row_id}@{run}")
