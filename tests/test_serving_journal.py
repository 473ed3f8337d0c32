"""The prediction log's write-ahead journal: what was submitted survives an unclean end, once."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlite_utils

from churnops.serving.journal import JournalInUse, segments
from churnops.serving.models import LoadedModel
from churnops.serving.prediction_log import DB_NAME, JOURNAL_DIR, LogEntry, PredictionLog


class _Unused:
    def predict_proba(self, frame: object) -> object:
        raise AssertionError("no challenger is scored here")


MODEL = LoadedModel(name="m", version="1", model=_Unused(), input_columns=("sessions_30d",))


def _log(folder: Path, **overrides: int) -> PredictionLog:
    return PredictionLog(
        folder=folder,
        feature_columns=["sessions_30d"],
        feature_dtypes={"sessions_30d": "int64"},
        flush_interval_s=0.01,
        batch_rows=overrides.pop("batch_rows", 1000),
        **overrides,
    )


def _entry(n: int, *, known: bool = True) -> LogEntry:
    return LogEntry(
        request_ids=[f"r{n}"],
        items=[0],
        predicted_at=datetime(2026, 11, 21, tzinfo=UTC),
        customer_ids=[f"CUST-{n:06d}"],
        features={"sessions_30d": [n]},
        statuses=["present" if known else "default"],
        snapshot_ts=[datetime(2026, 11, 20, tzinfo=UTC) if known else None],
        champion=MODEL,
        probabilities=[0.5],
        risk_bands=["medium"],
    )


def _logged(folder: Path) -> list[dict]:
    db = sqlite_utils.Database(folder / DB_NAME)
    try:
        return list(db.query("select request_id, sessions_30d, known from predictions order by rowid"))
    finally:
        db.close()


def test_entries_never_written_by_the_writer_are_recovered_at_the_next_start_once(tmp_path: Path) -> None:
    crashed = _log(tmp_path)
    for n in range(5):
        crashed.submit(_entry(n, known=n != 3))
    # The writer never ran: as after SIGKILL, only the journal holds the 5 answered rows.
    crashed.stop()
    assert _logged(tmp_path) == []
    restarted = _log(tmp_path)
    assert restarted.stats.rows_recovered == 5
    restarted.stop()
    rows = _logged(tmp_path)
    assert [r["request_id"] for r in rows] == [f"r{n}" for n in range(5)]
    assert [r["known"] for r in rows] == [1, 1, 1, 0, 1]
    assert _log(tmp_path).stats.rows_recovered == 0
    assert len(_logged(tmp_path)) == 5


def test_written_rows_are_not_replayed_and_old_segments_are_deleted(tmp_path: Path) -> None:
    log = _log(tmp_path, segment_bytes=200, batch_rows=3)
    for n in range(20):
        log.submit(_entry(n))
    log.start()
    log.stop()
    assert log.stats.rows_written == 20
    # A segment holds two lines; once committed, only the newest segment may remain.
    assert len(segments(tmp_path / JOURNAL_DIR)) <= 1
    reopened = _log(tmp_path)
    assert reopened.stats.rows_recovered == 0
    assert [r["sessions_30d"] for r in _logged(tmp_path)] == list(range(20))


def test_a_line_cut_off_mid_write_is_skipped(tmp_path: Path) -> None:
    crashed = _log(tmp_path)
    crashed.submit(_entry(1))
    crashed.submit(_entry(2))
    crashed.stop()
    [(_, path)] = segments(tmp_path / JOURNAL_DIR)
    path.write_bytes(path.read_bytes()[:-5])
    assert _log(tmp_path).stats.rows_recovered == 1
    assert [r["request_id"] for r in _logged(tmp_path)] == ["r1"]


def test_the_log_and_its_journal_are_private_to_the_service_user(tmp_path: Path) -> None:
    folder = tmp_path / "predictions"
    log = _log(folder)
    log.submit(_entry(1))
    [(_, segment)] = segments(folder / JOURNAL_DIR)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / JOURNAL_DIR).stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / DB_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    log.stop()


def test_a_second_service_on_the_same_log_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    first = _log(tmp_path)
    first.submit(_entry(1))
    with pytest.raises(JournalInUse, match=rf"in use by another service \(pid {os.getpid()}\)"):
        _log(tmp_path)
    # The refused one replayed nothing: the first's entry is written once, by the first.
    first.start()
    first.stop()
    second = _log(tmp_path)
    assert second.stats.rows_recovered == 0
    assert [r["request_id"] for r in _logged(tmp_path)] == ["r1"]
    second.stop()


def test_a_log_written_before_the_known_column_gets_it(tmp_path: Path) -> None:
    db = sqlite_utils.Database(tmp_path / DB_NAME)
    db["predictions"].create({"request_id": str, "item": int, "sessions_30d": int})
    db["predictions"].insert({"request_id": "old", "item": 0, "sessions_30d": 1})
    db.close()
    log = _log(tmp_path)
    log.submit(_entry(2))
    log.start()
    log.stop()
    assert [(r["request_id"], r["known"]) for r in _logged(tmp_path)] == [("old", None), ("r2", 1)]
