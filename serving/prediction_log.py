"""The append-only prediction log, written by a background thread off the request path.

Each request puts one entry on a bounded queue (never blocking: when the writer has fallen
that far behind, the entry is dropped and counted). The writer drains the queue in batches,
scores the challenger on the same features when shadow mode is on (so shadow scoring costs
the response nothing), and appends the rows to SQLite in one transaction per batch. The log
is the input of later drift monitoring: one row per customer prediction with its features.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from churnops.serving.models import LoadedModel

log = logging.getLogger(__name__)

TABLE = "predictions"
DB_NAME = "predictions.db"
_SQL_TYPES = {"int64": int, "float64": float, "object": str, "bool": int}


@dataclass
class LogEntry:
    """What one scoring call predicted (one batch request, or single requests scored together).

    Attributes:
        request_ids: The request id of each row (returned in the `X-Request-ID` header).
        items: Each row's position in its request (0 for single predictions).
        predicted_at: When the rows were scored (UTC).
        customer_ids: The customers, in order.
        features: The features the champion scored: column → one value per customer.
        statuses: The feature status per customer.
        snapshot_ts: The online snapshot per customer (None when absent).
        champion: The model that answered.
        probabilities: The champion's probability per customer.
        risk_bands: The risk band per customer.
        challenger: The model to score in shadow, or None.
    """

    request_ids: list[str]
    items: list[int]
    predicted_at: datetime
    customer_ids: list[str]
    features: dict[str, list[Any]]
    statuses: list[str]
    snapshot_ts: list[datetime | None]
    champion: LoadedModel
    probabilities: list[float]
    risk_bands: list[str]
    challenger: LoadedModel | None = None


@dataclass
class LogStats:
    """Counters of the writer, read by the metrics endpoint.

    Attributes:
        rows_written: Prediction rows appended to the log.
        shadow_scored: Rows the challenger scored.
        entries_dropped: Entries dropped because the queue was full.
        write_errors: Batches that failed to write.
    """

    rows_written: int = 0
    shadow_scored: int = 0
    entries_dropped: int = 0
    write_errors: int = 0
    last_error: str | None = field(default=None)


class PredictionLog:
    """A queue and a writer thread appending predictions to `<folder>/predictions.db`.

    Args:
        folder: The prediction log's folder (created when missing).
        feature_columns: The feature columns to log (the contract's features and default flag).
        feature_dtypes: pandas dtype name per feature column, for the table's column types.
        flush_interval_s: Longest time an entry waits before it is written.
        batch_rows: Most rows written in one transaction.
        max_queue: Most entries waiting; beyond it new entries are dropped and counted.
    """

    def __init__(
        self,
        *,
        folder: Path,
        feature_columns: list[str],
        feature_dtypes: dict[str, str],
        flush_interval_s: float,
        batch_rows: int,
        max_queue: int = 100_000,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_NAME
        self._columns = list(feature_columns)
        self._interval = flush_interval_s
        self._batch_rows = batch_rows
        self._queue: queue.Queue[LogEntry] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = LogStats()
        db = sqlite_utils.Database(self.path)
        # WAL lets monitoring read the log while the service appends to it.
        db.enable_wal()
        schema: dict[str, Any] = {
            "request_id": str,
            "item": int,
            "predicted_at": str,
            "customer_id": str,
            "model_name": str,
            "model_version": str,
            "churn_probability": float,
            "risk_band": str,
            "feature_status": str,
            "snapshot_ts": str,
        }
        schema.update({c: _SQL_TYPES[feature_dtypes[c]] for c in self._columns})
        schema.update({"shadow_model_version": str, "shadow_probability": float})
        db[TABLE].create(schema, if_not_exists=True)
        db.close()
        names = ", ".join(f"[{c}]" for c in schema)
        self._insert = f"INSERT INTO [{TABLE}] ({names}) VALUES ({', '.join('?' * len(schema))})"

    def queue_size(self) -> int:
        """Entries waiting to be written."""
        return self._queue.qsize()

    def submit(self, entry: LogEntry) -> None:
        """Queue an entry without blocking; drop and count it when the queue is full.

        Args:
            entry: The request's predictions.
        """
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.stats.entries_dropped += 1

    def start(self) -> None:
        """Start the writer thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="churnops-prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=60)
        self._thread = None

    def _drain(self) -> list[LogEntry]:
        entries: list[LogEntry] = []
        rows = 0
        while rows < self._batch_rows:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            entries.append(entry)
            rows += len(entry.customer_ids)
        return entries

    def _run(self) -> None:
        # Wake once per interval rather than per entry: one transaction (and one shadow
        # `predict_proba`) per interval instead of per request keeps the writer's share of the
        # CPU and the GIL small next to the requests it must not slow down.
        db = sqlite_utils.Database(self.path)
        # WAL + NORMAL: a commit does not wait for fsync; an OS crash may lose the last
        # interval's predictions, never corrupt the log.
        db.execute("PRAGMA synchronous = NORMAL")
        try:
            stopping = False
            while not stopping:
                stopping = self._stop.wait(self._interval)
                while entries := self._drain():
                    try:
                        self._write(db, entries)
                    except Exception as exc:
                        self.stats.write_errors += 1
                        self.stats.last_error = str(exc)
                        log.exception("prediction log write failed (%d entries lost)", len(entries))
        finally:
            db.close()

    def _write(self, db: sqlite_utils.Database, entries: list[LogEntry]) -> None:
        # Plain tuples and one `executemany`: per-row dicts or DataFrames held the GIL long
        # enough per flush to stall the requests in flight (`bench/results/serving.md`).
        shadow = self._score_shadow(entries)
        rows: list[tuple[Any, ...]] = []
        for entry, (shadow_version, shadow_p) in zip(entries, shadow, strict=True):
            predicted_at = entry.predicted_at.isoformat()
            name, version = entry.champion.name, entry.champion.version
            features = zip(*(entry.features[c] for c in self._columns), strict=True)
            for i, values in enumerate(features):
                snapshot = entry.snapshot_ts[i]
                rows.append(
                    (
                        entry.request_ids[i],
                        entry.items[i],
                        predicted_at,
                        entry.customer_ids[i],
                        name,
                        version,
                        entry.probabilities[i],
                        entry.risk_bands[i],
                        entry.statuses[i],
                        None if snapshot is None else snapshot.isoformat(),
                        *values,
                        shadow_version,
                        None if shadow_p is None else shadow_p[i],
                    )
                )
        if rows:
            with db.conn:
                db.conn.executemany(self._insert, rows)
            self.stats.rows_written += len(rows)

    def _score_shadow(self, entries: list[LogEntry]) -> list[tuple[str | None, list[float] | None]]:
        """The challenger's probabilities per entry: one scoring call per challenger version."""
        out: list[tuple[str | None, list[float] | None]] = [(None, None)] * len(entries)
        groups: dict[str, tuple[LoadedModel, list[int]]] = {}
        for k, entry in enumerate(entries):
            if entry.challenger is not None and entry.challenger.version != entry.champion.version:
                groups.setdefault(entry.challenger.version, (entry.challenger, []))[1].append(k)
        for version, (challenger, members) in groups.items():
            columns = {
                c: [v for k in members for v in entries[k].features[c]] for c in challenger.input_columns
            }
            probabilities = challenger.predict(columns).tolist()
            self.stats.shadow_scored += len(probabilities)
            start = 0
            for k in members:
                n = len(entries[k].customer_ids)
                out[k] = (version, probabilities[start : start + n])
                start += n
        return out
