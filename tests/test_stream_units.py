"""The consumer's decisions without a broker: committed ranges, dead letters, decoding, the append's files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.broker import encode_row
from churnops.ingestion.log import stream_ranges
from churnops.ingestion.stream.append import StreamTarget
from churnops.ingestion.stream.consumer import process_records
from churnops.ingestion.stream.records import StreamRecord, as_text, decode

STORED = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
CUSTOMER = {
    "customer_id": "CUST-000001",
    "company_name": "Acme",
    "signup_date": "2026-10-01",
    "plan_type": "pro",
    "seat_count": 5,
    "industry": None,
    "country": "US",
    "marketing_source": "organic",
    "is_active": True,
}


def _target(tmp_path: Path) -> StreamTarget:
    return StreamTarget(
        lake_dir=tmp_path / "lake",
        quarantine_dir=tmp_path / "quarantine",
        log_db=tmp_path / "log.db",
        contracts=load_source_contracts(),
        lateness=timedelta(days=2),
        stream="s",
    )


def _record(seq: int, row: dict, *, source: str = "customers", deliveries: int = 1) -> StreamRecord:
    return StreamRecord(
        sequence=seq,
        source=source,
        body=encode_row(row),
        stored_at=STORED,
        version="1",
        deliveries=deliveries,
    )


def test_json_values_become_the_text_a_landing_file_holds() -> None:
    assert [as_text(v) for v in (None, "x", True, False, 3, 2.5)] == [None, "x", "true", "false", "3", "2.5"]


def test_unreadable_records_are_set_aside_with_their_reason() -> None:
    records = [
        StreamRecord(sequence=1, source="customers", body=b"{oops", stored_at=STORED, version="1"),
        StreamRecord(sequence=2, source="customers", body=b"[1, 2]", stored_at=STORED, version="1"),
        StreamRecord(
            sequence=3, source="customers", body=encode_row(CUSTOMER), stored_at=STORED, version="7"
        ),
        StreamRecord(sequence=4, source="customers", body=encode_row(CUSTOMER), stored_at=STORED, version=""),
        _record(5, CUSTOMER),
    ]
    group = decode(records, load_source_contracts())["customers"]
    assert [(u.record.sequence, u.rule) for u in group.unreadable] == [
        (1, "undecodable"),
        (2, "undecodable"),
        (3, "unknown_contract_version"),
        (4, "unknown_contract_version"),
    ]
    assert [r.sequence for r, _ in group.records] == [5]
    assert (group.first, group.last, group.received) == (1, 5, 5)


def test_a_micro_batch_is_written_once_and_its_redelivery_only_acknowledged(tmp_path: Path) -> None:
    target = _target(tmp_path)
    second = CUSTOMER | {"customer_id": "CUST-000002", "signup_date": "2026-10-02"}
    batch = [_record(10, CUSTOMER), _record(11, second), _record(12, CUSTOMER | {"plan_type": "gold"})]
    done = process_records(batch, target=target, committed=stream_ranges(target.log_db), max_deliver=5)
    (appended,) = done.appended
    assert (appended.received, appended.accepted, appended.quarantined, appended.duplicates) == (3, 2, 1, 0)
    assert stream_ranges(target.log_db) == {"customers": [(10, 12)]}
    names = sorted(str(p.relative_to(target.lake_dir)) for p in target.lake_dir.rglob("*.parquet"))
    assert names == [
        "customers/date=2026-10-01/stream-000000000010-000000000012.parquet",
        "customers/date=2026-10-02/stream-000000000010-000000000012.parquet",
    ]
    lake = pq.read_table(target.lake_dir / names[0]).to_pylist()
    assert lake[0]["ingested_at"] == STORED
    quarantine = pq.read_table(
        target.quarantine_dir / "customers" / "stream-000000000010-000000000012.parquet"
    )
    assert quarantine.select(["_sequence", "_rule"]).to_pylist() == [
        {"_sequence": "12", "_rule": "accepted_values"}
    ]
    again = process_records(batch, target=target, committed=stream_ranges(target.log_db), max_deliver=5)
    assert (again.appended, again.skipped, again.dead) == ([], 3, [])


def test_records_a_killed_consumer_left_are_written_when_they_come_back_behind_newer_ones(
    tmp_path: Path,
) -> None:
    target = _target(tmp_path)
    rows = [CUSTOMER | {"customer_id": f"CUST-{i:06d}"} for i in range(6)]
    # The successor fetched 4-5 first; 1-2 come back with 7 after the acknowledgement wait.
    newer = process_records(
        [_record(4, rows[4]), _record(5, rows[5])],
        target=target,
        committed=stream_ranges(target.log_db),
        max_deliver=5,
    )
    assert [(a.first, a.last) for a in newer.appended] == [(4, 5)]
    back = [_record(1, rows[1], deliveries=2), _record(2, rows[2], deliveries=2), _record(7, rows[0])]
    done = process_records(back, target=target, committed=stream_ranges(target.log_db), max_deliver=5)
    assert [(a.first, a.last, a.accepted) for a in done.appended] == [(1, 2, 2), (7, 7, 1)]
    assert stream_ranges(target.log_db) == {"customers": [(1, 2), (4, 5), (7, 7)]}
    again = process_records(
        [*back, _record(3, rows[3])], target=target, committed=stream_ranges(target.log_db), max_deliver=5
    )
    assert ([(a.first, a.last) for a in again.appended], again.skipped) == ([(3, 3)], 3)


def test_records_that_cannot_go_anywhere_are_dead_letters(tmp_path: Path) -> None:
    target = _target(tmp_path)
    batch = [_record(1, CUSTOMER, source="invoices"), _record(2, CUSTOMER, deliveries=6)]
    done = process_records(batch, target=target, committed={}, max_deliver=5)
    assert done.appended == []
    assert [(r.sequence, reason) for r, reason in done.dead] == [
        (1, "no source contract named 'invoices'"),
        (2, "delivered 5 times without being committed"),
    ]
