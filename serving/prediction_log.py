"""The append-only prediction log, written by a background thread off the request path.

Before a request is answered, its rows are appended to a write-ahead journal
(`serving.journal`: one `write()`, no `fsync`) and its entry put on a bounded queue (never
blocking: when the writer has fallen that far behind, the entry is dropped and counted). The
writer drains the queue in batches, scores the challenger on the same features when shadow mode
is on (so shadow scoring costs the response nothing), and appends the rows to SQLite in one
transaction per batch, together with the journal position they reach. A killed process thus
loses no answered prediction: the next start replays the journal after that position (those
rows have no shadow score, as the challenger is not loaded yet).

The log is the input of drift monitoring: one row per customer prediction with its features.
`known` is 0 for an id the online store holds no snapshot of (a well-formed id of no customer
the features have seen): it is answered with the contract's defaults, and monitoring leaves it
out of drift and performance, which describe real customers.
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

from churnops.serving.journal import Journal, JournalLock, Position, encode, read_after, segments
from churnops.serving.models import LoadedModel
from churnops.storage.prediction_log_schema import DB_NAME, JOURNAL_DIR, POSITION_TABLE, TABLE, table_schema

log = logging.getLogger(__name__)

# The names this module writes are stated once, in `churnops.storage.prediction_log_schema`,
# which monitoring reads too; importers of this module find them here as well.
__all__ = ["DB_NAME", "JOURNAL_DIR", "TABLE", "LogEntry", "LogStats", "PredictionLog"]


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
        rows_recovered: Rows replayed from the journal at start-up (answered before a crash).
    """

    rows_written: int = 0
    shadow_scored: int = 0
    entries_dropped: int = 0
    write_errors: int = 0
    rows_recovered: int = 0
    last_error: str | None = field(default=None)


class PredictionLog:
    """A journal, a queue and a writer thread appending predictions to `<folder>/predictions.db`.

    Args:
        folder: The prediction log's folder (created when missing, mode 0700).
        feature_columns: The feature columns to log (the contract's features and default flag).
        feature_dtypes: pandas dtype name per feature column, for the table's column types.
        flush_interval_s: Longest time an entry waits before it is written.
        batch_rows: Most rows written in one transaction.
        max_queue: Most entries waiting; beyond it new entries are dropped and counted.
        segment_bytes: Size at which the journal moves on to a new segment file.

    Raises:
        JournalInUse: When another live service owns this prediction log.
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
        segment_bytes: int = 16 * 2**20,
    ) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / DB_NAME
        self._columns = list(feature_columns)
        self._interval = flush_interval_s
        self._batch_rows = batch_rows
        self._queue: queue.Queue[_Queued] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = LogStats()
        schema = table_schema(feature_columns=self._columns, feature_dtypes=feature_dtypes)
        names = ", ".join(f"[{c}]" for c in schema)
        self._insert = f"INSERT INTO [{TABLE}] ({names}) VALUES ({', '.join('?' * len(schema))})"
        # Taken before the replay: a second service must not replay (and delete) live segments.
        self._owner = JournalLock(folder=folder / JOURNAL_DIR)
        db = _open(self.path, schema)
        try:
            last = self._recover(db, folder / JOURNAL_DIR)
        except BaseException:
            self._owner.release()
            raise
        finally:
            db.close()
        self._journal = Journal(
            folder=folder / JOURNAL_DIR, first_segment=last + 1, segment_bytes=segment_bytes
        )
        self._oldest_segment = last + 1

    def _recover(self, db: sqlite_utils.Database, journal: Path) -> int:
        """Replay what the journal holds after the committed position; return its last segment."""
        committed = _position(db)
        replayed = [
            (*row, None, None) for _, rows in read_after(folder=journal, position=committed) for row in rows
        ]
        last = max([committed.segment, *(n for n, _ in segments(journal))])
        # Everything before segment `last + 1` is now in the log, where this process's journal
        # starts; a crash before the files below are deleted leaves nothing to replay twice.
        with db.conn:
            db.conn.executemany(self._insert, replayed)
            _set_position(db, Position(last + 1, 0))
        for number, path in segments(journal):
            if number <= last:
                path.unlink(missing_ok=True)
        if replayed:
            log.warning("prediction log: %d answered predictions recovered from the journal", len(replayed))
        self.stats.rows_recovered = len(replayed)
        return last

    def queue_size(self) -> int:
        """Entries waiting to be written."""
        return self._queue.qsize()

    def submit(self, entry: LogEntry) -> None:
        """Journal an entry and queue it for the writer, without blocking.

        When the queue is full the entry is dropped and counted, and not journaled either: the
        writer's committed position must never pass an entry it did not write.

        Args:
            entry: The request's predictions.
        """
        rows = self._rows(entry)
        with self._lock:
            if self._queue.full():
                self.stats.entries_dropped += 1
                return
            position = self._journal.append(encode(rows))
            self._queue.put_nowait(_Queued(entry=entry, rows=rows, position=position))

    def start(self) -> None:
        """Start the writer thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="churnops-prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued (when the writer runs), then close the journal and release it.

        Entries queued on a log that was never started stay in the journal, for the next start.
        """
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=60)
            self._thread = None
        self._journal.close()
        self._owner.release()

    def _drain(self) -> list[_Queued]:
        batch: list[_Queued] = []
        rows = 0
        while rows < self._batch_rows:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(queued)
            rows += len(queued.rows)
        return batch

    def _run(self) -> None:
        # Wake once per interval rather than per entry: one transaction (and one shadow
        # `predict_proba`) per interval instead of per request keeps the writer's share of the
        # CPU and the GIL small next to the requests it must not slow down.
        db = sqlite_utils.Database(self.path)
        # WAL + NORMAL: a commit does not wait for fsync; the journal already holds the rows.
        db.execute("PRAGMA synchronous = NORMAL")
        try:
            stopping = False
            while not stopping:
                stopping = self._stop.wait(self._interval)
                while batch := self._drain():
                    try:
                        self._write(db, batch)
                    except Exception as exc:
                        self.stats.write_errors += 1
                        self.stats.last_error = str(exc)
                        log.exception("prediction log write failed (%d entries lost)", len(batch))
        finally:
            db.close()

    def _rows(self, entry: LogEntry) -> list[tuple[Any, ...]]:
        # Plain tuples: per-row dicts or DataFrames held the GIL long enough per flush to stall
        # the requests in flight (`bench/results/serving.md`).
        predicted_at = entry.predicted_at.isoformat()
        name, version = entry.champion.name, entry.champion.version
        features = zip(*(entry.features[c] for c in self._columns), strict=True)
        # Rows of one call mostly share a snapshot boundary: format each distinct one once.
        snapshots = {s: s.isoformat() for s in set(entry.snapshot_ts) if s is not None}
        rows = []
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
                    None if snapshot is None else snapshots[snapshot],
                    0 if snapshot is None else 1,
                    *values,
                )
            )
        return rows

    def _write(self, db: sqlite_utils.Database, batch: list[_Queued]) -> None:
        shadow = self._score_shadow([q.entry for q in batch])
        rows: list[tuple[Any, ...]] = []
        for queued, (shadow_version, shadow_p) in zip(batch, shadow, strict=True):
            for i, row in enumerate(queued.rows):
                rows.append((*row, shadow_version, None if shadow_p is None else shadow_p[i]))
        position = batch[-1].position
        with db.conn:
            db.conn.executemany(self._insert, rows)
            _set_position(db, position)
        self.stats.rows_written += len(rows)
        if position.segment > self._oldest_segment:
            self._journal.discard_before(position.segment)
            self._oldest_segment = position.segment

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


@dataclass(frozen=True)
class _Queued:
    """An entry waiting for the writer: its log rows and where the journal holds them."""

    entry: LogEntry
    rows: list[tuple[Any, ...]]
    position: Position


def _open(path: Path, schema: dict[str, Any]) -> sqlite_utils.Database:
    fresh = not path.exists()
    db = sqlite_utils.Database(path)
    if fresh:
        # Predictions carry customer ids and features: readable by the service's user only.
        path.chmod(0o600)
    # WAL lets monitoring read the log while the service appends to it.
    db.enable_wal()
    table = db[TABLE]
    table.create(schema, if_not_exists=True)
    # A log written before a column existed gets it (NULL in its old rows).
    missing = {c: t for c, t in schema.items() if c not in table.columns_dict}  # type: ignore[union-attr]
    for column, kind in missing.items():
        table.add_column(column, kind)  # type: ignore[union-attr]
    db[POSITION_TABLE].create({"id": int, "segment": int, "offset": int}, pk="id", if_not_exists=True)
    return db


def _position(db: sqlite_utils.Database) -> Position:
    row = db.execute(f"SELECT segment, offset FROM [{POSITION_TABLE}] WHERE id = 0").fetchone()
    return Position(0, 0) if row is None else Position(int(row[0]), int(row[1]))


def _set_position(db: sqlite_utils.Database, position: Position) -> None:
    db.conn.execute(
        f"INSERT OR REPLACE INTO [{POSITION_TABLE}] (id, segment, offset) VALUES (0, ?, ?)",
        (position.segment, position.offset),
    )
