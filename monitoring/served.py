"""Reading the prediction log (SQLite, written by serving) for monitoring, in bounded memory.

The log grows without end, so nothing here loads it whole: counts and join figures are SQL
aggregates, and the rows of one window are fetched in chunks of `CHUNK_ROWS`, at most `max_rows`
of them (a window holding more is thinned to every k-th row in insertion order, which keeps its
spread over time). The database is opened read-only, beside the service that appends to it (the
log is in WAL mode, so readers and the writer do not block each other).

Times in the log are ISO-8601 text in UTC (`datetime.isoformat()`, offset `+00:00`), which
compare as text in time order; the bounds passed to SQL are formatted the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.monitoring.inputs import InputProblem
from churnops.storage import prediction_log_schema as log

CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class JoinFigures:
    """How served requests met the online store over one window.

    Attributes:
        rows: Predictions in the window (known or not).
        known: Predictions of customers the online store held a snapshot of (`known` = 1).
        match_rate: known / rows (NaN when the window is empty).
        present_share: Share of predictions served with `present` features.
        stale_share: Share served with `stale` features (older than the freshness bound).
        default_share: Share served with the contract's defaults.
        customers: Distinct customers predicted.
        duplicate_rows: Predictions beyond each customer's first (rows - customers).
        duplicate_share: duplicate_rows / rows (NaN when the window is empty).
        repeated_customers: Customers predicted more than once.
        max_per_customer: The most predictions of one customer.
    """

    rows: int
    known: int
    match_rate: float
    present_share: float
    stale_share: float
    default_share: float
    customers: int
    duplicate_rows: int
    duplicate_share: float
    repeated_customers: int
    max_per_customer: int

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready mapping (NaN as None)."""
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(self).items()}


def log_path(predictions_dir: Path) -> Path:
    """The prediction log's database in a predictions folder."""
    return predictions_dir / log.DB_NAME


@contextmanager
def open_log(path: Path) -> Iterator[sqlite3.Connection]:
    """Open the prediction log read-only.

    Args:
        path: The log's SQLite file.

    Yields:
        A read-only connection.

    Raises:
        InputProblem: When there is no log, or the file holds no prediction table.
    """
    if not path.is_file():
        raise InputProblem(
            f"no prediction log at {path}: serve the champion first (churnops serve), which logs predictions"
        )
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if log.TABLE not in tables:
            raise InputProblem(f"{path} holds no {log.TABLE!r} table: it is not a churnops prediction log")
        yield conn
    finally:
        conn.close()


def sql_time(value: datetime) -> str:
    """A UTC time in the log's text form (so SQL compares it with `predicted_at` as text)."""
    return value.astimezone(UTC).isoformat()


def log_columns(conn: sqlite3.Connection) -> list[str]:
    """The prediction table's columns, in order."""
    return [r[1] for r in conn.execute(f"PRAGMA table_info([{log.TABLE}])")]


def join_figures(conn: sqlite3.Connection, *, start: datetime, end: datetime) -> JoinFigures:
    """Match rate, feature-status shares and duplicate predictions of the window [start, end).

    Args:
        conn: The log.
        start: The window's first instant (UTC).
        end: The instant after its last.

    Returns:
        The figures, computed in SQL.
    """
    where = f"WHERE [{log.PREDICTED_AT}] >= ? AND [{log.PREDICTED_AT}] < ?"
    bounds = (sql_time(start), sql_time(end))
    status = f"[{log.FEATURE_STATUS}]"
    rows, known, present, stale, default = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM([{log.KNOWN}]), 0), COALESCE(SUM({status} = ?), 0), "
        f"COALESCE(SUM({status} = ?), 0), COALESCE(SUM({status} = ?), 0) FROM [{log.TABLE}] {where}",
        (log.STATUS_PRESENT, log.STATUS_STALE, log.STATUS_DEFAULT, *bounds),
    ).fetchone()
    customers, repeated, most = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(n > 1), 0), COALESCE(MAX(n), 0) FROM "
        f"(SELECT COUNT(*) AS n FROM [{log.TABLE}] {where} GROUP BY [{log.CUSTOMER_ID}])",
        bounds,
    ).fetchone()

    def share(count: int) -> float:
        return count / rows if rows else float("nan")

    return JoinFigures(
        rows=rows,
        known=known,
        match_rate=share(known),
        present_share=share(present),
        stale_share=share(stale),
        default_share=share(default),
        customers=customers,
        duplicate_rows=rows - customers,
        duplicate_share=share(rows - customers),
        repeated_customers=repeated,
        max_per_customer=most,
    )


def served_rows(
    conn: sqlite3.Connection,
    *,
    start: datetime,
    end: datetime,
    columns: list[str],
    max_rows: int,
) -> tuple[pd.DataFrame, int]:
    """The known predictions of [start, end): the given columns, at most `max_rows` of them.

    Args:
        conn: The log.
        start: The window's first instant (UTC).
        end: The instant after its last.
        columns: The columns to read (features, score, version...).
        max_rows: The most rows to return; a larger window is thinned to every k-th row.

    Returns:
        The rows, and how many known predictions the window holds in all.

    Raises:
        InputProblem: When the log lacks one of the columns.
    """
    present = set(log_columns(conn))
    missing = [c for c in columns if c not in present]
    if missing:
        raise InputProblem(f"the prediction log lacks the column(s) {missing}; it has {sorted(present)}")
    where = f"WHERE [{log.KNOWN}] = 1 AND [{log.PREDICTED_AT}] >= ? AND [{log.PREDICTED_AT}] < ?"
    bounds: tuple[Any, ...] = (sql_time(start), sql_time(end))
    (total,) = conn.execute(f"SELECT COUNT(*) FROM [{log.TABLE}] {where}", bounds).fetchone()
    if total > max_rows:
        step = -(-total // max_rows)
        where += " AND rowid % ? = 0"
        bounds = (*bounds, step)
    names = ", ".join(f"[{c}]" for c in columns)
    return _fetch(conn, f"SELECT {names} FROM [{log.TABLE}] {where}", bounds, columns), total


def matured_rows(conn: sqlite3.Connection, *, start: datetime, end: datetime) -> pd.DataFrame:
    """The known predictions of [start, end] for realised performance: who, when, score, version.

    Args:
        conn: The log.
        start: The first prediction time to evaluate (UTC).
        end: The last (predictions after it have no closed outcome window yet).

    Returns:
        `customer_id`, `predicted_at` (UTC timestamps), `churn_probability`, `model_version`.
    """
    columns = [log.CUSTOMER_ID, log.PREDICTED_AT, log.PROBABILITY, log.MODEL_VERSION]
    names = ", ".join(f"[{c}]" for c in columns)
    sql = (
        f"SELECT {names} FROM [{log.TABLE}] "
        f"WHERE [{log.KNOWN}] = 1 AND [{log.PREDICTED_AT}] >= ? AND [{log.PREDICTED_AT}] <= ?"
    )
    frame = _fetch(conn, sql, (sql_time(start), sql_time(end)), columns)
    frame[log.PREDICTED_AT] = pd.to_datetime(frame[log.PREDICTED_AT], utc=True, format="ISO8601")
    return frame


def count_rows(conn: sqlite3.Connection, *, start: datetime, end: datetime) -> int:
    """Known predictions with `start < predicted_at <= end` (e.g. those whose outcome is pending)."""
    (count,) = conn.execute(
        f"SELECT COUNT(*) FROM [{log.TABLE}] "
        f"WHERE [{log.KNOWN}] = 1 AND [{log.PREDICTED_AT}] > ? AND [{log.PREDICTED_AT}] <= ?",
        (sql_time(start), sql_time(end)),
    ).fetchone()
    return int(count)


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], columns: list[str]) -> pd.DataFrame:
    cursor = conn.execute(sql, params)
    chunks = []
    while rows := cursor.fetchmany(CHUNK_ROWS):
        chunks.append(pd.DataFrame.from_records(rows, columns=columns))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(chunks, ignore_index=True)
