"""The refresh snapshot reads only each source's lookback and still equals the brute-force oracle.

Records older than a source's widest window are skipped by the refresh scan; the tests put
records right at those edges (and an invoice far older than every window, which `plan_type`
must still see) and compare every feature at a refresh time between boundaries with the oracle.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from test_features_lake import CONTRACT, START, oracle, random_records, typed, write_lake

from churnops.features import compute
from churnops.features.materialize import snapshot_rows_at
from churnops.features.table import read_table
from churnops.storage.duck import duckdb_connection

DAY_US = 86_400_000_000
AT = START + timedelta(days=130, hours=7, minutes=13, seconds=9)


def test_each_source_s_lookback_comes_from_the_contract() -> None:
    assert compute.lookbacks(CONTRACT) == {
        "usage_events": 90 * DAY_US,  # days_since_last_event's 90-day window
        "support_tickets": 30 * DAY_US,
        "billing": None,  # plan_type: the latest invoice, however old
        "customers": None,  # the entity source
    }


def _edges(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Records exactly at and just inside each lookback edge, and an invoice older than all windows."""
    ingested = START + timedelta(days=200)
    customers = pd.DataFrame(
        {
            "customer_id": ["EDGE-1", "EDGE-2", "EDGE-3"],
            "company_name": ["Edge One", "Edge Two", "Edge Three"],
            "signup_date": [(START - timedelta(days=10)).date()] * 3,
            "plan_type": ["basic", "basic", "basic"],
            "seat_count": [3, 4, 5],
            "industry": ["finance"] * 3,
            "country": ["US"] * 3,
            "marketing_source": ["organic"] * 3,
            "is_active": [True] * 3,
            "ingested_at": [ingested] * 3,
        }
    )
    usage = pd.DataFrame(
        {
            "event_id": ["EVT-EDGE-1", "EVT-EDGE-2", "EVT-EDGE-3"],
            "customer_id": ["EDGE-1", "EDGE-2", "EDGE-3"],
            # at - 90d is outside (S - 90d, S]; one second later is inside (89 whole days).
            "event_timestamp": [AT - timedelta(days=90), AT - timedelta(days=90) + timedelta(seconds=1), AT],
            "event_type": ["login", "login", "quiz_attempt"],
            "course_id": [None, None, "COURSE-001"],
            "watch_minutes": [None, None, None],
            "quiz_score": [None, None, 77.5],
            "ingested_at": [ingested] * 3,
        }
    )
    tickets = pd.DataFrame(
        {
            "ticket_id": ["TCK-EDGE-1", "TCK-EDGE-2"],
            "customer_id": ["EDGE-1", "EDGE-2"],
            "created_at": [AT - timedelta(days=30), AT - timedelta(days=30) + timedelta(microseconds=1)],
            "category": ["bug", "bug"],
            "priority": ["low", "low"],
            "resolution_hours": [1.0, 2.0],
            "satisfaction_score": [4, 5],
            "ingested_at": [ingested] * 2,
        }
    )
    billing = pd.DataFrame(
        {
            "invoice_id": ["INV-EDGE-1"],
            "customer_id": ["EDGE-1"],
            "invoice_date": [AT - timedelta(days=120)],
            "amount": [99.0],
            "currency": ["USD"],
            "payment_status": ["paid"],
            "plan_type": ["enterprise"],
            "previous_plan_type": [None],
            "ingested_at": [ingested],
        }
    )
    added = typed(customers=customers, usage=usage, support_tickets=tickets, billing=billing)
    added["customers"]["signup_date"] = added["customers"]["signup_date"].astype(
        frames["customers"]["signup_date"].dtype
    )
    return {name: pd.concat([frames[name], added[name]], ignore_index=True) for name in frames}


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    home = tmp_path_factory.mktemp("refresh")
    frames = _edges(random_records(customers=40, days=135, seed=17))
    write_lake(home / "lake", frames)
    rows = snapshot_rows_at(lake_dir=home / "lake", features_dir=home / "features", contract=CONTRACT, at=AT)
    stored = read_table(features_dir=home / "features", start=AT, end=AT)
    assert stored.equals(rows.to_pandas())
    return frames, stored


def test_the_refresh_equals_the_oracle_for_every_customer(refreshed: tuple) -> None:
    frames, rows = refreshed
    signed_up = frames["customers"][pd.to_datetime(frames["customers"]["signup_date"]).dt.date <= AT.date()]
    assert sorted(rows["customer_id"]) == sorted(signed_up["customer_id"])
    for row in rows.to_dict("records"):
        expected = oracle(frames, row["customer_id"], AT)
        assert row["snapshot_ts"] == AT
        for name, value in expected.items():
            if isinstance(value, float):
                assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-9), (row["customer_id"], name)
            else:
                assert row[name] == value, (row["customer_id"], name)


def test_the_edges_of_each_lookback(refreshed: tuple) -> None:
    _, rows = refreshed
    edge = rows.set_index("customer_id").loc[["EDGE-1", "EDGE-2", "EDGE-3"]]
    assert edge["days_since_last_event"].tolist() == [90, 89, 0]
    assert edge["support_tickets_30d"].tolist() == [0, 1, 0]
    assert edge["plan_type"].tolist() == ["enterprise", "basic", "basic"]
    assert edge["orders_30d"].tolist() == [0, 0, 0]
    assert edge["quiz_avg_score_30d"].tolist() == [0.0, 0.0, 77.5]


def test_recomputing_the_refresh_gives_the_same_bits(tmp_path: Path, refreshed: tuple) -> None:
    frames, rows = refreshed
    write_lake(tmp_path / "lake", frames)
    again = [
        snapshot_rows_at(
            lake_dir=tmp_path / "lake", features_dir=tmp_path / "features", contract=CONTRACT, at=AT
        )
        .to_pandas()
        .drop(columns=["created_timestamp"])
        for _ in range(3)
    ]
    for frame in again:
        pd.testing.assert_frame_equal(frame, rows.drop(columns=["created_timestamp"]), check_exact=True)


def test_the_range_join_plan_gives_the_same_bits(tmp_path: Path, refreshed: tuple) -> None:
    frames, rows = refreshed
    write_lake(tmp_path / "lake", frames)
    at_us = int(AT.timestamp()) * 1_000_000
    ids = rows["customer_id"].tolist()
    # A second time makes the targets use `exact_sql` instead of the single-time plan.
    targets = pa.table({"customer_id": [*ids, ids[0]], "s_us": [at_us] * len(ids) + [at_us + 1]})
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=tmp_path / "lake", contract=CONTRACT)
        both = compute.compute(con, contract=CONTRACT, present=present, targets=targets).to_pandas()
    exact = both[both["s_us"] == at_us].reset_index(drop=True)
    assert exact["customer_id"].tolist() == ids
    for name in CONTRACT.feature_names:
        assert exact[name].tolist() == rows[name].tolist(), name
