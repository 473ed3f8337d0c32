"""Every row-level and batch-level rule, with passing and failing data written by hand."""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from churnops.contracts.source_contract import SOURCES_DIR, SourceContract, load_source_contracts
from churnops.ingestion.checks import check_lake
from churnops.ingestion.ingest import IngestReport, ingest
from churnops.storage.lake import list_partitions, partition_path, read_source

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTRACTS = load_source_contracts()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_csv(path: Path, source: str, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = columns or CONTRACTS[source].column_names
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([[row.get(n, "") for n in names] for row in rows])
    return path


def customer(i: int, **over: str) -> dict[str, str]:
    row = {
        "customer_id": f"CUST-{i:06d}",
        "company_name": f"Secret Company {i}",
        "signup_date": "2026-01-15",
        "plan_type": "pro",
        "seat_count": "3",
        "industry": "education",
        "country": "US",
        "marketing_source": "organic",
        "is_active": "true",
        "ingested_at": iso(NOW - timedelta(hours=1)),
    }
    return row | over


def event(i: int, cust: int = 1, **over: str) -> dict[str, str]:
    at = NOW - timedelta(hours=2, minutes=i)
    row = {
        "event_id": f"EVT-{i:010d}",
        "customer_id": f"CUST-{cust:06d}",
        "event_timestamp": iso(at),
        "event_type": "video_watch",
        "course_id": "COURSE-001",
        "watch_minutes": "12.50",
        "quiz_score": "",
        "ingested_at": iso(at + timedelta(minutes=5)),
    }
    return row | over


def invoice(i: int, status: str = "paid", **over: str) -> dict[str, str]:
    at = NOW - timedelta(hours=3, minutes=i)
    row = {
        "invoice_id": f"INV-{i:07d}",
        "customer_id": "CUST-000001",
        "invoice_date": iso(at),
        "amount": "45.00",
        "currency": "USD",
        "payment_status": status,
        "plan_type": "pro",
        "previous_plan_type": "",
        "ingested_at": iso(at + timedelta(minutes=5)),
    }
    return row | over


class Home:
    """A throwaway workspace: landing, lake, quarantine and log under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.landing = root / "landing"
        self.lake = root / "lake"
        self.quarantine = root / "quarantine"
        self.log = root / "log.db"
        self.landing.mkdir(parents=True)

    def ingest(self, **kwargs: object) -> IngestReport:
        args: dict[str, object] = {"now": NOW} | kwargs
        return ingest(
            landing_dir=self.landing,
            lake_dir=self.lake,
            quarantine_dir=self.quarantine,
            log_db=self.log,
            **args,
        )  # type: ignore[arg-type]

    def lake_rows(self, source: str) -> pd.DataFrame:
        return read_source(self.lake, source)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture
def with_customers(home: Home) -> Home:
    write_csv(home.landing / "customers.csv", "customers", [customer(i) for i in range(1, 41)])
    report = home.ingest(sources=["customers"])
    assert report.batches[0].status == "ok"
    (home.landing / "customers.csv").unlink()
    return home


def quarantine_of(report: IngestReport, source: str) -> pd.DataFrame:
    (batch,) = [b for b in report.batches if b.source == source]
    assert batch.quarantine_file is not None
    return pq.read_table(batch.quarantine_file).to_pandas()


def test_valid_rows_land_typed_and_partitioned_with_ingested_at(with_customers: Home) -> None:
    home = with_customers
    rows = [event(i) for i in range(1, 31)]
    rows[0] |= {
        "event_type": "quiz_attempt",
        "watch_minutes": "",
        "quiz_score": "100",
        "course_id": "COURSE-040",
    }
    rows[1] |= {"event_type": "login", "watch_minutes": "", "course_id": ""}
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    (batch,) = home.ingest().batches
    counts = (batch.received, batch.accepted, batch.quarantined, batch.duplicates)
    assert (batch.status, batch.mode, *counts) == (
        "ok", "live", 30, 30, 0, 0,
    )  # fmt: skip
    assert batch.quarantine_file is None
    days = sorted({r["event_timestamp"][:10] for r in rows})
    assert list_partitions(home.lake, "usage_events") == days
    schema = pq.read_schema(partition_path(home.lake, "usage_events", days[0]))
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("quiz_score").type == pa.float64()
    lake = home.lake_rows("usage_events").set_index("event_id")
    assert len(lake) == 30
    first = lake.loc["EVT-0000000001"]
    assert first["quiz_score"] == 100.0 and pd.isna(first["watch_minutes"])
    assert first["ingested_at"] == pd.Timestamp(rows[0]["ingested_at"])
    assert pd.isna(lake.loc["EVT-0000000002", "course_id"])
    customers = pq.read_schema(partition_path(home.lake, "customers", "2026-01-15"))
    assert customers.field("signup_date").type == pa.date32()
    assert customers.field("seat_count").type == pa.int64()
    assert customers.field("is_active").type == pa.bool_()


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("event_id", "", "null_key"),
        ("event_id", "EVT-12", "format"),
        ("customer_id", "  ", "not_null"),
        ("customer_id", "CUST-999999", "unknown_customer"),
        ("event_timestamp", "2026-02-30T25:61:00Z", "type"),
        ("event_timestamp", "yesterday", "type"),
        ("event_timestamp", iso(NOW + timedelta(days=2)), "future_timestamp"),
        ("event_type", "teleport", "accepted_values"),
        ("course_id", "COURSE-1", "format"),
        ("watch_minutes", "-5.00", "range"),
        ("watch_minutes", "twelve", "type"),
        ("quiz_score", "100.5", "range"),
        ("ingested_at", iso(NOW + timedelta(hours=1)), "future_timestamp"),
    ],
)
def test_a_broken_event_is_quarantined_with_its_reason(
    with_customers: Home, column: str, value: str, rule: str
) -> None:
    home = with_customers
    quiz = {"event_type": "quiz_attempt", "watch_minutes": "", "quiz_score": "80.0"}
    # A third are quizzes, so a range check on quiz_score measures more than the broken value.
    rows = [event(i, **(quiz if i % 3 == 0 else {})) for i in range(1, 101)]
    rows.insert(17, event(999, **(quiz if column == "quiz_score" else {}) | {column: value}))
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    report = home.ingest()
    (batch,) = report.batches
    counts = (batch.status, batch.received, batch.accepted, batch.quarantined, batch.duplicates)
    assert counts == ("ok", 101, 100, 1, 0)
    table = quarantine_of(report, "usage_events")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["_row"], row["_column"], row["_rule"], row["_value"]) == (18, column, rule, value)
    assert row["_file"] == str(home.landing / "usage_events.csv")
    assert row[column] == value and row["event_id"] == rows[17]["event_id"]
    assert column in row["_message"] or "expected" in row["_message"]
    assert batch.quarantine_rules == {rule: 1}
    assert len(home.lake_rows("usage_events")) == 100


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"event_type": "  Video_Watch "}, ("event_type", "video_watch")),
        ({"event_timestamp": "2026-03-01T13:00:00+02:00", "ingested_at": iso(NOW)},
         ("event_timestamp", pd.Timestamp("2026-03-01T11:00Z"))),
        ({"event_timestamp": iso(NOW + timedelta(minutes=10)), "ingested_at": iso(NOW)},
         ("event_timestamp", pd.Timestamp(NOW + timedelta(minutes=10)))),
        ({"quiz_score": "0", "event_type": "quiz_attempt", "watch_minutes": ""}, ("quiz_score", 0.0)),
        ({"watch_minutes": "NULL", "event_type": "login", "course_id": ""}, ("watch_minutes", None)),
    ],
)  # fmt: skip
def test_edge_values_that_meet_the_contract_are_accepted(
    with_customers: Home, over: dict[str, str], expected: tuple[str, object]
) -> None:
    home = with_customers
    rows = [event(i) for i in range(1, 41)]
    rows[5] |= over
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    (batch,) = home.ingest().batches
    assert (batch.status, batch.accepted, batch.quarantined) == ("ok", 40, 0)
    column, value = expected
    got = home.lake_rows("usage_events").set_index("event_id").loc[rows[5]["event_id"], column]
    assert pd.isna(got) if value is None else got == value


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("seat_count", "2.5", "type"),
        ("seat_count", "0", "range"),
        ("is_active", "maybe", "type"),
        ("signup_date", "2026-13-45", "type"),
        ("country", "us", "accepted_values"),
        ("plan_type", "platinum", "accepted_values"),
        ("company_name", "", "not_null"),
    ],
)
def test_broken_customers_are_quarantined_and_pii_is_redacted(
    home: Home, column: str, value: str, rule: str
) -> None:
    rows = [customer(i) for i in range(1, 41)]
    rows[3] |= {column: value}
    rows[10] |= {"plan_type": " PRO ", "industry": ""}  # normalised and nullable: accepted
    write_csv(home.landing / "customers.csv", "customers", rows)
    (batch,) = home.ingest().batches
    assert (batch.status, batch.accepted, batch.quarantined) == ("ok", 39, 1)
    row = pq.read_table(batch.quarantine_file).to_pandas().iloc[0]
    assert (row["_row"], row["_column"], row["_rule"]) == (4, column, rule)
    assert "Secret Company" not in " ".join(str(v) for v in row.to_numpy())
    lake = home.lake_rows("customers").set_index("customer_id")
    assert lake.loc["CUST-000011", "plan_type"] == "pro" and pd.isna(lake.loc["CUST-000011", "industry"])
    assert lake.loc["CUST-000001", "company_name"] == "Secret Company 1"
    log = sqlite3.connect(home.log).execute("SELECT * FROM batches").fetchall()
    assert "Secret Company" not in repr(log)


def test_a_late_event_lands_and_is_counted(with_customers: Home) -> None:
    home = with_customers
    rows = [event(i) for i in range(1, 41)]
    late_at = NOW - timedelta(days=3)
    rows[7] |= {"event_timestamp": iso(late_at), "ingested_at": iso(late_at + timedelta(hours=25))}
    rows[8] |= {"event_timestamp": iso(late_at), "ingested_at": iso(late_at + timedelta(hours=23))}
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    (batch,) = home.ingest().batches
    assert (batch.status, batch.accepted, batch.quarantined, batch.late) == ("ok", 40, 0, 1)


def test_duplicates_latest_ingested_at_wins_in_the_batch_and_against_the_lake(with_customers: Home) -> None:
    home = with_customers
    base = [event(i) for i in range(1, 101)]
    older = event(5, watch_minutes="1.00", ingested_at=iso(NOW - timedelta(hours=2, minutes=4)))
    newer = event(6, watch_minutes="2.00", ingested_at=iso(NOW - timedelta(minutes=30)))
    write_csv(home.landing / "usage_events.csv", "usage_events", [*base, older, newer, base[0]])
    (batch,) = home.ingest().batches
    assert (batch.received, batch.accepted, batch.duplicates, batch.replaced) == (103, 100, 3, 0)
    lake = home.lake_rows("usage_events").set_index("event_id")
    assert lake.loc["EVT-0000000006", "watch_minutes"] == 2.0
    assert lake.loc["EVT-0000000005", "watch_minutes"] == 12.5  # the original was ingested later

    # A second delivery: one stale copy (dropped), one newer version that moved day (replaces).
    moved = event(7, watch_minutes="7.00", event_timestamp=iso(NOW - timedelta(days=1)), ingested_at=iso(NOW))
    stale = event(8, watch_minutes="8.00", ingested_at=iso(NOW - timedelta(hours=2, minutes=7)))
    write_csv(home.landing / "usage_events" / "second.csv", "usage_events", [moved, stale, event(101)])
    report = home.ingest()
    second = next(b for b in report.batches if b.file.name == "second.csv")
    assert (second.received, second.accepted, second.duplicates, second.replaced) == (3, 2, 1, 1)
    assert [b.status for b in report.batches if b.file.name == "usage_events.csv"] == ["skipped"]
    lake = home.lake_rows("usage_events")
    assert lake["event_id"].is_unique and len(lake) == 101
    by_id = lake.set_index("event_id")
    assert by_id.loc["EVT-0000000007", "watch_minutes"] == 7.0
    assert by_id.loc["EVT-0000000008", "watch_minutes"] == 12.5
    day_before = (NOW - timedelta(days=1)).strftime("%Y-%m-%d")
    assert list(
        pq.read_table(partition_path(home.lake, "usage_events", day_before))["event_id"].to_pylist()
    ) == ["EVT-0000000007"]


def test_reingesting_the_same_file_changes_nothing(with_customers: Home) -> None:
    home = with_customers
    rows = [event(i) for i in range(1, 41)] + [event(50, event_type="teleport")]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    first = home.ingest().batches[0]
    files = sorted(home.lake.rglob("*.parquet")) + sorted(home.quarantine.rglob("*.parquet"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    log_before = sqlite3.connect(home.log).execute("SELECT * FROM batches ORDER BY id").fetchall()
    second = home.ingest().batches[0]
    assert second.status == "skipped" and first.batch in second.message
    assert (second.received, second.accepted, second.quarantined, second.duplicates) == (0, 0, 0, 0)
    after = sorted(home.lake.rglob("*.parquet")) + sorted(home.quarantine.rglob("*.parquet"))
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in after} == before
    assert sqlite3.connect(home.log).execute("SELECT * FROM batches ORDER BY id").fetchall() == log_before
    # The same rows under another name are all duplicates (bad row quarantined again): the lake stays.
    write_csv(home.landing / "usage_events" / "again.csv", "usage_events", rows[::-1])
    again = next(b for b in home.ingest().batches if b.file.name == "again.csv")
    assert (again.accepted, again.duplicates, again.quarantined) == (0, 40, 1)
    assert {p: p.read_bytes() for p in sorted(home.lake.rglob("*.parquet"))} == {
        p: before[p][0] for p in files if home.lake in p.parents
    }


def test_the_log_records_every_batch(with_customers: Home) -> None:
    home = with_customers
    write_csv(home.landing / "usage_events.csv", "usage_events", [event(i) for i in range(1, 41)])
    batch = home.ingest().batches[0]
    con = sqlite3.connect(home.log)
    con.row_factory = sqlite3.Row
    rows = {r["source"]: dict(r) for r in con.execute("SELECT * FROM batches")}
    row = rows["usage_events"]
    assert row["content_hash"] == batch.content_hash and len(row["content_hash"]) == 64
    assert (row["status"], row["contract_version"], row["received"], row["accepted"]) == ("ok", 1, 40, 40)
    assert (row["quarantined"], row["duplicates"], row["mode"]) == (0, 0, "live")
    assert row["file"] == str(home.landing / "usage_events.csv")
    assert row["seconds"] > 0 and row["started_at"] <= row["finished_at"]
    assert rows["customers"]["received"] == 40


def test_an_empty_source_is_valid(home: Home) -> None:
    write_csv(home.landing / "support_tickets.csv", "support_tickets", [])
    (batch,) = home.ingest().batches
    assert (batch.status, batch.received, batch.accepted, batch.quarantined) == ("ok", 0, 0, 0)
    assert list_partitions(home.lake, "support_tickets") == []
    report = check_lake(lake_dir=home.lake, source="support_tickets", now=NOW)
    assert report.passed and all(r.skipped for r in report.results)


def _assert_failed(report: IngestReport, home: Home, source: str, rule: str) -> None:
    (batch,) = [b for b in report.batches if b.source == source]
    assert batch.status == "failed" and not report.ok
    assert (batch.accepted, batch.quarantined, batch.duplicates) == (0, batch.received, 0)
    assert list_partitions(home.lake, source) == []
    assert rule in [f.rule for f in batch.failures]
    table = pq.read_table(batch.quarantine_file).to_pandas()
    assert len(table) == batch.received and table["_row"].tolist() == list(range(1, batch.received + 1))


def test_completeness_below_the_minimum_fails_the_batch(home: Home) -> None:
    rows = [customer(i, industry="" if i % 5 < 2 else "retail") for i in range(1, 41)]
    write_csv(home.landing / "customers.csv", "customers", rows)
    report = home.ingest()
    _assert_failed(report, home, "customers", "completeness")
    (failure,) = report.batches[0].failures
    assert (failure.figure, failure.threshold, failure.column) == (60.0, 70.0, "industry")
    assert "60.00%" in failure.message and "70%" in failure.message


@pytest.mark.parametrize(
    ("column", "value", "rule", "figure"),
    [
        ("event_id", "", "not_null", 0.9),
        ("event_type", "teleport", "accepted_values", 0.9),
        ("quiz_score", "150", "range", 0.8),
    ],
)
def test_too_many_broken_values_fail_the_testing_threshold(
    with_customers: Home, column: str, value: str, rule: str, figure: float
) -> None:
    home = with_customers
    quiz = {"event_type": "quiz_attempt", "watch_minutes": "", "quiz_score": "75.5"}
    rows = [
        event(i, **(quiz if i % 2 == 0 else {}) | ({column: value} if i % 10 == 0 else {}))
        for i in range(1, 41)
    ]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    report = home.ingest()
    _assert_failed(report, home, "usage_events", rule)
    failure = next(f for f in report.batches[0].failures if f.rule == rule)
    assert (failure.figure, failure.threshold) == (pytest.approx(figure), 0.95)
    table = pq.read_table(report.batches[0].quarantine_file).to_pandas()
    assert sorted(table["_rule"].unique()) == sorted(
        {"batch_rejected", "null_key" if rule == "not_null" else rule}
    )


def test_custom_sql_threshold_fails_the_batch(with_customers: Home) -> None:
    home = with_customers
    rows = [invoice(i, status="failed" if i <= 24 else "paid") for i in range(1, 41)]
    write_csv(home.landing / "billing.csv", "billing", rows)
    report = home.ingest()
    _assert_failed(report, home, "billing", "custom:failed_payment_share")
    (failure,) = report.batches[0].failures
    assert (failure.figure, failure.threshold) == (pytest.approx(0.6), 0.5)


def test_too_many_quarantined_rows_fail_the_batch(with_customers: Home) -> None:
    home = with_customers
    rows = [event(i, cust=999 if i % 4 == 0 else 1) for i in range(1, 41)]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    report = home.ingest()
    _assert_failed(report, home, "usage_events", "quarantine_rate")
    failure = report.batches[0].failures[0]
    assert (failure.rule, failure.figure, failure.threshold) == ("quarantine_rate", 25.0, 20.0)


def test_a_renamed_column_fails_the_batch_naming_it(with_customers: Home) -> None:
    home = with_customers
    columns = [c if c != "quiz_score" else "score" for c in CONTRACTS["usage_events"].column_names]
    rows = [{("score" if k == "quiz_score" else k): v for k, v in event(i).items()} for i in range(1, 11)]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows, columns=columns)
    report = home.ingest()
    _assert_failed(report, home, "usage_events", "schema")
    message = report.batches[0].failures[0].message
    assert "missing column(s) quiz_score" in message and "unexpected column(s) score" in message


def test_freshness_fails_a_stale_live_batch_and_backfill_skips_it(with_customers: Home) -> None:
    home = with_customers
    old = NOW - timedelta(days=3)
    rows = [
        event(i, event_timestamp=iso(old), ingested_at=iso(old + timedelta(minutes=i))) for i in range(1, 41)
    ]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    report = home.ingest()
    _assert_failed(report, home, "usage_events", "freshness")
    (failure,) = report.batches[0].failures
    assert (failure.figure, failure.threshold) == (pytest.approx(72.0), 26.0)
    assert "--backfill" in failure.message

    report = home.ingest(backfill=True)
    (batch,) = report.batches
    assert (batch.status, batch.mode, batch.accepted) == ("ok", "backfill", 40)
    freshness = next(c for c in batch.checks if c.rule == "freshness")
    assert freshness.skipped and "skipped" in freshness.message
    assert check_lake(lake_dir=home.lake, source="usage_events", now=NOW).passed


def test_history_spanning_more_than_a_delivery_is_detected_as_backfill(with_customers: Home) -> None:
    home = with_customers
    rows = []
    for i in range(1, 41):
        at = NOW - timedelta(days=60) + timedelta(days=i)
        rows.append(event(i, event_timestamp=iso(at), ingested_at=iso(at + timedelta(minutes=3))))
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    (batch,) = home.ingest(now=NOW + timedelta(days=30)).batches
    assert (batch.status, batch.mode, batch.accepted) == ("ok", "backfill", 40)
    assert "spans 39.0 days, more than the 3d of a live delivery" in batch.backfill_reason
    # Freshness on the lake is skipped after a backfill, enforced after a live batch.
    later = NOW + timedelta(days=30)
    fresh = [
        r
        for r in check_lake(lake_dir=home.lake, source="usage_events", now=later).results
        if r.rule == "freshness"
    ]
    assert fresh[0].skipped and fresh[0].passed
    write_csv(home.landing / "usage_events" / "live.csv", "usage_events", [event(100, ingested_at=iso(NOW))])
    assert [b.mode for b in home.ingest(now=NOW).batches if b.file.name == "live.csv"] == ["live"]
    stale = check_lake(lake_dir=home.lake, source="usage_events", now=later)
    (fresh,) = [r for r in stale.results if r.rule == "freshness"]
    assert not stale.passed and not fresh.passed and not fresh.skipped
    # The newest event is event 100's: NOW - 2h - 100 min, seen 30 days later.
    assert fresh.figure == pytest.approx(30 * 24 + 3 + 40 / 60, abs=0.01) and fresh.threshold == 26.0


def test_parquet_and_multi_file_deliveries(with_customers: Home) -> None:
    home = with_customers
    frame = pd.DataFrame([event(i) for i in range(1, 21)])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["watch_minutes"] = frame["watch_minutes"].astype(float)
    frame["quiz_score"] = None
    (home.landing / "usage_events").mkdir()
    frame.to_parquet(home.landing / "usage_events" / "part-1.parquet")
    write_csv(home.landing / "usage_events" / "part-2.csv", "usage_events", [event(i) for i in range(21, 41)])
    report = home.ingest()
    assert [(b.file.name, b.status, b.accepted) for b in report.batches] == [
        ("part-1.parquet", "ok", 20),
        ("part-2.csv", "ok", 20),
    ]
    lake = home.lake_rows("usage_events").set_index("event_id")
    assert lake.loc["EVT-0000000003", "event_timestamp"] == frame.loc[2, "event_timestamp"]


def _contract_with(name: str, edit: dict[str, object]) -> SourceContract:
    raw = yaml.safe_load((SOURCES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    raw["testing"] = raw["testing"] + [edit]
    return SourceContract.model_validate(raw)


def test_unique_and_custom_checks_on_the_lake_pass_and_fail(with_customers: Home) -> None:
    home = with_customers
    same_time = {
        "event_timestamp": iso(NOW - timedelta(hours=2)),
        "ingested_at": iso(NOW - timedelta(hours=1)),
    }
    rows = [event(i, **same_time) for i in range(1, 41)]
    write_csv(home.landing / "usage_events.csv", "usage_events", rows)
    assert home.ingest().ok
    contracts = dict(CONTRACTS)
    assert check_lake(lake_dir=home.lake, now=NOW, contracts=contracts).passed
    contracts["usage_events"] = _contract_with(
        "usage_events", {"type": "unique", "columns": ["customer_id", "event_timestamp"], "threshold": 0.5}
    )
    report = check_lake(lake_dir=home.lake, source="usage_events", now=NOW, contracts=contracts)
    (unique,) = [r for r in report.results if r.rule == "unique"]
    assert (report.passed, unique.passed, unique.figure) == (False, False, pytest.approx(1 / 40))
    contracts["usage_events"] = _contract_with(
        "usage_events",
        {"type": "custom", "name": "few_videos",
         "sql": "SELECT avg(CASE WHEN event_type = 'video_watch' THEN 1.0 "
         "ELSE 0.0 END) FROM usage_events", "must_be": "at_most", "threshold": 0.5},
    )  # fmt: skip
    (custom,) = [r for r in check_lake(lake_dir=home.lake, now=NOW, contracts=contracts).results if r.rule ==
                 "custom:few_videos"]  # fmt: skip
    assert (custom.passed, custom.figure, custom.threshold) == (False, 1.0, 0.5)
    contracts["usage_events"] = _contract_with(
        "usage_events",
        {"type": "custom", "name": "broken_sql", "sql": "SELECT nope FROM usage_events",
         "must_be": "at_least",
         "threshold": 0},
    )  # fmt: skip
    (broken,) = [r for r in check_lake(lake_dir=home.lake, now=NOW, contracts=contracts).results if r.rule ==
                 "custom:broken_sql"]  # fmt: skip
    assert not broken.passed and "the contract's SQL failed in DuckDB" in broken.message
