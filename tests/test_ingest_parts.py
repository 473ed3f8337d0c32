"""The parts one landing file's ingestion is made of, each on its own: context, report, log row,
schema, mode, quarantine rate, row screening, quarantine file, deduplication and the lake merge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlite_utils

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.batch import (
    BatchContext,
    BatchOutcome,
    BatchReport,
    IngestRun,
    Quarantined,
    begin_batch,
    commit_batch,
    log_row,
)
from churnops.ingestion.batch_checks import decide_mode, quarantine_rate_check, schema_check
from churnops.ingestion.checks import CheckResult
from churnops.ingestion.log import _COLUMNS, TABLE, find_ingested, read_log, unsettled_batches
from churnops.ingestion.merge import count_late, dedup, merge_into_lake
from churnops.ingestion.rows import ROW_POSITION, screen_rows, write_quarantine
from churnops.ingestion.validate import empty_violations
from churnops.storage.lake import list_partitions, read_source
from churnops.storage.staging import StagedFiles

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTRACTS = load_source_contracts()
EVENTS = CONTRACTS["usage_events"]


def _run(tmp_path: Path, *, backfill: bool | None = None) -> IngestRun:
    return IngestRun(
        contracts=CONTRACTS,
        lake_dir=tmp_path / "lake",
        quarantine_dir=tmp_path / "quarantine",
        log_db=tmp_path / "log.db",
        backfill=backfill,
        now=NOW,
        lateness=timedelta(hours=48),
    )


def _context(tmp_path: Path, *, backfill: bool | None = None) -> BatchContext:
    path = tmp_path / "landing" / "usage_events.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("event_id\nEVT-0000000001\n", encoding="utf-8")
    return BatchContext.start(path, contract=EVENTS, run=_run(tmp_path, backfill=backfill))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _events(*rows: dict[str, str]) -> pa.Table:
    """Raw usage_events text, every column present, defaults for what a row leaves out."""
    at = NOW - timedelta(hours=2)
    default = {
        "event_id": "EVT-0000000001",
        "customer_id": "CUST-000001",
        "event_timestamp": _iso(at),
        "event_type": "video_watch",
        "course_id": "COURSE-001",
        "watch_minutes": "12.5",
        "quiz_score": "",
        "ingested_at": _iso(at + timedelta(minutes=5)),
    }
    full = [default | row for row in rows]
    return pa.table({name: pa.array([r[name] for r in full], pa.string()) for name in EVENTS.column_names})


KNOWN = {"customers.customer_id": pa.array(["CUST-000001", "CUST-000002"], pa.string())}


def _valid(*rows: dict[str, str]) -> pa.Table:
    screened = screen_rows(_events(*rows), EVENTS, now=NOW, known=KNOWN)
    assert screened.broken == 0
    return screened.valid


# --- context, report, log ---------------------------------------------------------------------


def test_the_context_names_the_batch_after_the_file_and_its_hash(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    assert ctx.batch == f"usage_events-{ctx.content_hash[:12]}"
    assert len(ctx.content_hash) == 64
    assert ctx.source == "usage_events"
    assert ctx.quarantine_file == tmp_path / "quarantine" / "usage_events" / f"{ctx.batch}.parquet"
    assert ctx.requested_mode == "live"
    assert _context(tmp_path, backfill=True).requested_mode == "backfill"
    assert _context(tmp_path, backfill=None).requested_mode == "live"


def test_the_report_takes_identity_from_the_context_and_counts_from_the_outcome(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    failed = CheckResult("usage_events", "schema", False, 1.0, 0.0, "schema: missing column(s) x")
    passed = CheckResult("usage_events", "uniqueness", True, 100.0, 95.0, "uniqueness ok")
    outcome = BatchOutcome(
        status="ok",
        mode="backfill",
        message="ok (backfill: requested)",
        backfill_reason="requested",
        received=10,
        accepted=6,
        duplicates=1,
        replaced=2,
        late=3,
        quarantine=Quarantined(rows=3, rules={"type": 3}, file=ctx.quarantine_file),
        checks=(passed, failed),
    )
    report = BatchReport.from_outcome(ctx, outcome)
    assert (report.source, report.file, report.batch, report.content_hash, report.contract_version) == (
        "usage_events",
        ctx.file,
        ctx.batch,
        ctx.content_hash,
        EVENTS.version,
    )
    assert (report.received, report.accepted, report.quarantined, report.duplicates) == (10, 6, 3, 1)
    assert (report.replaced, report.late, report.mode, report.backfill_reason) == (
        2,
        3,
        "backfill",
        "requested",
    )
    assert report.quarantine_rules == {"type": 3}
    assert report.quarantine_file == ctx.quarantine_file
    assert report.failures == [failed]
    assert report.seconds >= 0


def test_a_bare_outcome_reports_zero_counts_and_no_quarantine(tmp_path: Path) -> None:
    report = BatchReport.from_outcome(_context(tmp_path), BatchOutcome("skipped", "live", "skipped: seen"))
    counts = (report.received, report.accepted, report.quarantined, report.duplicates, report.replaced)
    assert counts == (0, 0, 0, 0, 0)
    assert (report.late, report.quarantine_rules, report.quarantine_file, report.checks) == (0, {}, None, ())


def test_the_log_row_has_every_log_column_and_only_the_failed_checks(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    failed = CheckResult("usage_events", "quarantine_rate", False, 50.0, 20.0, "too many")
    passed = CheckResult("usage_events", "uniqueness", True, 100.0, 95.0, "fine")
    outcome = BatchOutcome("failed", "live", "failed", received=4, checks=(passed, failed))
    report = BatchReport.from_outcome(ctx, outcome)
    start, end = NOW, NOW + timedelta(seconds=3)
    row = log_row(report, started_at=start, finished_at=end)
    assert set(row) == set(_COLUMNS)
    assert row["id"] == f"usage_events/{ctx.batch}"
    assert row["file"] == str(ctx.file)
    assert row["quarantine_file"] is None
    assert json.loads(row["failures"]) == [failed.to_dict()]
    assert (row["started_at"], row["finished_at"]) == (start.isoformat(), end.isoformat())


def test_a_batch_is_logged_running_then_committed_with_its_files(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    begin_batch(ctx)
    (row,) = read_log(ctx.run.log_db)
    assert (row["id"], row["status"], row["run"], row["pending"]) == (
        ctx.log_id,
        "running",
        ctx.run.run_id,
        None,
    )
    assert find_ingested(ctx.run.log_db, source="usage_events", content_hash=ctx.content_hash) is None
    files = ctx.staged_files()
    files.write(ctx.quarantine_file, lambda tmp: tmp.write_text("rows"))
    assert not ctx.quarantine_file.exists()
    quarantine = Quarantined(rows=1, rules={"type": 1}, file=ctx.quarantine_file)
    report = BatchReport.from_outcome(
        ctx, BatchOutcome("ok", "live", "ok (live)", received=1, quarantine=quarantine)
    )
    assert commit_batch(ctx, report, files=files) is report
    assert ctx.quarantine_file.read_text() == "rows"
    (row,) = read_log(ctx.run.log_db)
    assert (row["status"], row["quarantine_file"]) == ("ok", str(ctx.quarantine_file))
    assert (row["pending"], row["received"]) == (None, 1)
    found = find_ingested(ctx.run.log_db, source="usage_events", content_hash=ctx.content_hash)
    assert found is not None and found["batch"] == ctx.batch


def test_a_log_from_before_the_commit_columns_gains_them(tmp_path: Path) -> None:
    log_db = tmp_path / "log.db"
    old = {k: v for k, v in _COLUMNS.items() if k not in {"run", "pid", "pending", "note"}}
    db = sqlite_utils.Database(log_db)
    db[TABLE].create(old, pk="id")
    db[TABLE].insert({"id": "customers/b", "source": "customers", "content_hash": "h", "status": "ok"})
    db.close()
    assert unsettled_batches(log_db) == []
    (row,) = read_log(log_db)
    assert (row["status"], row["run"], row["pending"]) == ("ok", None, None)


# --- batch checks --------------------------------------------------------------------------------


def test_the_schema_check_passes_the_contract_columns_in_any_order() -> None:
    assert schema_check(EVENTS, list(reversed(EVENTS.column_names))) is None


def test_the_schema_check_names_missing_and_unexpected_columns() -> None:
    columns = [c for c in EVENTS.column_names if c != "course_id"] + ["course", "extra"]
    check = schema_check(EVENTS, columns)
    assert check is not None
    assert (check.rule, check.passed, check.figure, check.threshold) == ("schema", False, 3.0, 0.0)
    assert check.message.startswith(
        "schema: missing column(s) course_id; unexpected column(s) course, extra (a missing or renamed"
    )
    assert check.message.endswith("expected exactly " + ", ".join(EVENTS.column_names))
    only_missing = schema_check(EVENTS, EVENTS.column_names[1:])
    assert only_missing is not None and "unexpected" not in only_missing.message


@pytest.mark.parametrize(
    ("broken", "received", "passed", "percent"),
    [(0, 0, True, 0.0), (20, 100, True, 20.0), (21, 100, False, 21.0), (1, 6, True, 100 / 6)],
)
def test_the_quarantine_rate_may_reach_but_not_pass_the_maximum(
    broken: int, received: int, passed: bool, percent: float
) -> None:
    check = quarantine_rate_check(EVENTS, broken=broken, received=received)
    assert (check.rule, check.passed, check.threshold) == ("quarantine_rate", passed, 20.0)
    assert check.figure == pytest.approx(percent)
    verdict = "within" if passed else "above"
    assert check.message == (
        f"quarantine_rate: {percent:.2f}% of rows broke a row-level rule, {verdict} the maximum 20%"
    )


def test_the_mode_follows_the_request_or_the_span_of_ingested_at() -> None:
    one = _valid({})
    spread = _valid(
        {
            "event_id": "EVT-0000000001",
            "event_timestamp": _iso(NOW - timedelta(days=11)),
            "ingested_at": _iso(NOW - timedelta(days=10)),
        },
        {"event_id": "EVT-0000000002", "ingested_at": _iso(NOW - timedelta(hours=1))},
    )
    assert decide_mode(one, EVENTS, backfill=True) == ("backfill", "requested (--backfill)")
    assert decide_mode(spread, EVENTS, backfill=False) == ("live", "")
    assert decide_mode(one.slice(0, 0), EVENTS, backfill=None) == ("live", "")
    assert decide_mode(one, EVENTS, backfill=None) == ("live", "")
    mode, reason = decide_mode(spread, EVENTS, backfill=None)
    assert mode == "backfill"
    assert reason.startswith("its ingested_at spans 10.0 days, more than the 3d of a live delivery")


# --- rows and quarantine -------------------------------------------------------------------------


def test_screening_keeps_the_rows_without_a_violation_with_their_file_position() -> None:
    raw = _events(
        {"event_id": "EVT-0000000001"},
        {"event_id": "EVT-0000000002", "watch_minutes": "lots"},
        {"event_id": "EVT-0000000003", "customer_id": "CUST-999999"},
        {"event_id": "EVT-0000000004", "event_timestamp": _iso(NOW + timedelta(days=1))},
        {"event_id": "EVT-0000000005"},
    )
    screened = screen_rows(raw, EVENTS, now=NOW, known=KNOWN)
    assert screened.typed.num_rows == 5
    assert screened.broken == 3
    assert screened.valid.column(ROW_POSITION).to_pylist() == [0, 4]
    assert set(screened.violations["rule"]) == {"type", "unknown_customer", "future_timestamp"}


def test_the_quarantine_file_holds_the_broken_rows_and_a_clean_rerun_removes_it(tmp_path: Path) -> None:
    raw = _events({"event_id": "EVT-0000000001"}, {"event_id": "EVT-0000000002", "watch_minutes": "lots"})
    screened = screen_rows(raw, EVENTS, now=NOW, known=KNOWN)
    path = tmp_path / "q" / "usage_events" / "b.parquet"
    file = tmp_path / "usage_events.csv"
    files = StagedFiles(name="usage_events", tag="t1")
    written = write_quarantine(path, raw, screened.violations, file=file, contract=EVENTS, files=files)
    assert written == Quarantined(rows=1, rules={"type": 1}, file=path)
    assert not path.exists()  # staged: it appears with the batch's commit
    files.apply()
    assert pq.read_table(path).column("_row").to_pylist() == [2]
    files = StagedFiles(name="usage_events", tag="t2")
    assert (
        write_quarantine(path, raw, empty_violations(), file=file, contract=EVENTS, files=files)
        == Quarantined()
    )
    assert path.exists()
    files.apply()
    assert not path.exists()


def test_a_rejected_batch_quarantines_every_row(tmp_path: Path) -> None:
    raw = _events({"event_id": "EVT-0000000001"}, {"event_id": "EVT-0000000002", "watch_minutes": "lots"})
    screened = screen_rows(raw, EVENTS, now=NOW, known=KNOWN)
    path = tmp_path / "q.parquet"
    written = write_quarantine(
        path,
        raw,
        screened.violations,
        file=tmp_path / "f.csv",
        contract=EVENTS,
        files=StagedFiles(name="usage_events", tag="t"),
        reject_rest="batch failed: x",
    )
    assert written == Quarantined(rows=2, rules={"batch_rejected": 1, "type": 1}, file=path)


# --- deduplication and the lake merge ------------------------------------------------------------


def test_dedup_keeps_the_latest_ingested_at_and_the_first_row_on_a_tie() -> None:
    early, late = _iso(NOW - timedelta(hours=1)), _iso(NOW - timedelta(minutes=30))
    valid = _valid(
        {"event_id": "EVT-0000000001", "ingested_at": early, "course_id": "COURSE-001"},
        {"event_id": "EVT-0000000001", "ingested_at": late, "course_id": "COURSE-002"},
        {"event_id": "EVT-0000000002", "ingested_at": late, "course_id": "COURSE-003"},
        {"event_id": "EVT-0000000002", "ingested_at": late, "course_id": "COURSE-004"},
        {"event_id": "EVT-0000000003", "course_id": "COURSE-005"},
    )
    winners = dedup(valid, EVENTS)
    ids, courses = winners.column("event_id").to_pylist(), winners.column("course_id").to_pylist()
    kept = sorted(zip(ids, courses, strict=True))
    assert kept == [
        ("EVT-0000000001", "COURSE-002"),
        ("EVT-0000000002", "COURSE-003"),
        ("EVT-0000000003", "COURSE-005"),
    ]
    assert dedup(valid.slice(4, 1), EVENTS).num_rows == 1


def test_the_merge_replaces_older_lake_rows_and_drops_equal_or_older_ones(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    files = StagedFiles(name="usage_events", tag="t1")
    first = merge_into_lake(
        _valid({"event_id": "EVT-0000000001"}, {"event_id": "EVT-0000000002"}),
        EVENTS,
        lake_dir=lake,
        files=files,
    )
    assert (first.accepted.num_rows, first.duplicates, first.replaced) == (2, 0, 0)
    assert ROW_POSITION not in first.accepted.column_names
    assert not list_partitions(lake, "usage_events")  # staged, not yet committed
    files.apply()
    assert list_partitions(lake, "usage_events")
    files = StagedFiles(name="usage_events", tag="t2")
    newer = _iso(NOW - timedelta(minutes=10))
    second = merge_into_lake(
        _valid(
            {"event_id": "EVT-0000000001", "ingested_at": newer, "course_id": "COURSE-009"},
            {"event_id": "EVT-0000000002"},
            {"event_id": "EVT-0000000003"},
            {"event_id": "EVT-0000000003"},
        ),
        EVENTS,
        lake_dir=lake,
        files=files,
    )
    files.apply()
    assert (second.accepted.num_rows, second.replaced) == (2, 1)
    assert (second.batch_duplicates, second.lake_duplicates, second.duplicates) == (1, 1, 2)
    rows = read_source(lake, "usage_events").sort_values("event_id")
    assert rows["event_id"].tolist() == ["EVT-0000000001", "EVT-0000000002", "EVT-0000000003"]
    assert rows["course_id"].tolist()[0] == "COURSE-009"


def test_late_rows_are_counted_beyond_the_allowed_lateness() -> None:
    at = NOW - timedelta(days=5)
    valid = _valid(
        {
            "event_id": "EVT-0000000001",
            "event_timestamp": _iso(at),
            "ingested_at": _iso(at + timedelta(hours=49)),
        },
        {
            "event_id": "EVT-0000000002",
            "event_timestamp": _iso(at),
            "ingested_at": _iso(at + timedelta(hours=47)),
        },
    )
    assert count_late(valid, EVENTS, lateness=timedelta(hours=48)) == 1
    assert count_late(valid.slice(0, 0), EVENTS, lateness=timedelta(hours=48)) == 0
