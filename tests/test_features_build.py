"""The offline table: every snapshot equals the brute-force oracle; late data and idempotency."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from test_features_lake import CONTRACT, START, add_to_lake, oracle, random_records, typed, write_lake

from churnops.features import compute
from churnops.features.build import build_features
from churnops.features.table import list_partitions, partition_path, read_latest, read_table
from churnops.storage.duck import duckdb_connection
from churnops.storage.times import from_us, to_us

DAYS = 45
UNTIL = START + timedelta(days=DAYS)


def assert_matches_oracle(row: pd.Series, expected: dict[str, object], where: str) -> None:
    for name, value in expected.items():
        got = row[name]
        if isinstance(value, float):
            assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-9), f"{where} {name}: {got} != {value}"
        else:
            assert got == value, f"{where} {name}: {got!r} != {value!r}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("built")
    frames = random_records(customers=120, days=DAYS, seed=7)
    write_lake(root / "lake", frames)
    build_features(lake_dir=root / "lake", features_dir=root / "features", contract=CONTRACT, until=UNTIL)
    return root / "lake", root / "features", frames


def test_every_sampled_snapshot_equals_the_oracle(built: tuple[Path, Path, dict[str, pd.DataFrame]]) -> None:
    _, features_dir, frames = built
    table = read_table(features_dir=features_dir)
    rng = random.Random(11)
    for i in rng.sample(range(len(table)), 300):
        row = table.iloc[i]
        expected = oracle(frames, row["customer_id"], row["snapshot_ts"].to_pydatetime())
        assert_matches_oracle(row, expected, f"{row['customer_id']}@{row['snapshot_ts']}")


def test_the_grid_is_dense_from_signup_to_until(built: tuple[Path, Path, dict[str, pd.DataFrame]]) -> None:
    _, features_dir, frames = built
    table = read_table(features_dir=features_dir)
    expected = sum(max(0, (UNTIL.date() - signup).days + 1) for signup in frames["customers"]["signup_date"])
    assert len(table) == expected
    assert not table.duplicated(["customer_id", "snapshot_ts"]).any()
    assert (table["event_timestamp"] == table["snapshot_ts"]).all()
    assert table["snapshot_ts"].max() == UNTIL
    assert not table.isna().any().any()
    first = table.groupby("customer_id")["snapshot_ts"].min()
    signups = frames["customers"].set_index("customer_id")["signup_date"]
    assert all(first[c].date() == signups[c] for c in first.index)


def test_the_exact_plan_equals_the_oracle_off_the_grid(
    built: tuple[Path, Path, dict[str, pd.DataFrame]],
) -> None:
    lake_dir, _, frames = built
    rng = random.Random(5)
    customers = frames["customers"]
    ids, times = [], []
    while len(ids) < 120:
        c = customers.iloc[rng.randrange(len(customers))]
        t = START + timedelta(days=rng.randrange(DAYS), seconds=rng.randrange(1, 86_400))
        if t.date() > c["signup_date"]:
            ids.append(c["customer_id"])
            times.append(to_us(t))
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=lake_dir, contract=CONTRACT)
        out = compute.compute(
            con,
            contract=CONTRACT,
            present=present,
            targets=pa.table({"customer_id": ids, "s_us": pa.array(times, pa.int64())}),
        ).to_pandas()
    assert len(out) == len(ids)
    for _, row in out.iterrows():
        at = from_us(int(row["s_us"]))
        assert_matches_oracle(row, oracle(frames, row["customer_id"], at), f"{row['customer_id']}@{at}")


def test_read_latest_is_each_customers_last_snapshot(
    built: tuple[Path, Path, dict[str, pd.DataFrame]],
) -> None:
    _, features_dir, frames = built
    latest = read_latest(features_dir=features_dir)
    assert sorted(latest["customer_id"]) == sorted(
        c
        for c, s in zip(frames["customers"]["customer_id"], frames["customers"]["signup_date"], strict=True)
        if s <= UNTIL.date()
    )
    assert (latest["snapshot_ts"] == UNTIL).all()


def _copy_lake(frames: dict[str, pd.DataFrame], root: Path) -> tuple[Path, Path]:
    write_lake(root / "lake", frames)
    return root / "lake", root / "features"


def test_rebuilding_with_nothing_new_rewrites_nothing(tmp_path: Path) -> None:
    frames = random_records(customers=30, days=20, seed=2)
    lake_dir, features_dir = _copy_lake(frames, tmp_path)
    until = START + timedelta(days=20)
    build_features(lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=until)
    files = {
        d: partition_path(features_dir, CONTRACT, d).read_bytes()
        for d in list_partitions(features_dir, CONTRACT)
    }
    again = build_features(lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=until)
    assert (again.snapshots_computed, again.partitions_written, again.full) == (0, 0, False)
    assert files == {d: partition_path(features_dir, CONTRACT, d).read_bytes() for d in files}


def test_a_late_record_recomputes_exactly_the_snapshots_whose_window_holds_it(tmp_path: Path) -> None:
    frames = random_records(customers=30, days=40, seed=4)
    lake_dir, features_dir = _copy_lake(frames, tmp_path)
    until = START + timedelta(days=40)
    build_features(lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=until)
    before = read_table(features_dir=features_dir).set_index(["customer_id", "snapshot_ts"])
    customer = frames["customers"].sort_values("signup_date")["customer_id"].iloc[0]
    event_time = START + timedelta(days=5, hours=3)
    late = typed(
        usage=pd.DataFrame(
            {
                "event_id": ["EVT-LATE"],
                "customer_id": [customer],
                "event_timestamp": [event_time],
                "event_type": ["login"],
                "course_id": [None],
                "watch_minutes": [None],
                "quiz_score": [None],
                "ingested_at": [until + timedelta(days=3)],  # arrives long after its event time
            }
        )
    )["usage_events"]
    frames["usage_events"] = add_to_lake(lake_dir, "usage_events", late, frames["usage_events"])
    report = build_features(lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=until)
    after = read_table(features_dir=features_dir).set_index(["customer_id", "snapshot_ts"])

    # Recomputed: the customer's snapshots S with e <= S < e + 90d (the widest usage window).
    mine = [s for c, s in before.index if c == customer]
    reached = [s for s in mine if event_time <= s < event_time + timedelta(days=90)]
    assert report.late_records == 1
    assert report.snapshots_computed == len(reached)
    # Changed: every snapshot whose 30-day window holds the event (events_30d + 1), nothing else
    # outside the 90-day reach, and every changed value is the oracle's.
    feature_cols = CONTRACT.feature_names
    changed = {k for k in before.index if not before.loc[k, feature_cols].equals(after.loc[k, feature_cols])}
    window = {(customer, s) for s in mine if event_time <= s < event_time + timedelta(days=30)}
    assert window <= changed <= {(customer, s) for s in reached}
    for s in reached:
        expected = oracle(frames, customer, s.to_pydatetime())
        assert_matches_oracle(after.loc[(customer, s)], expected, f"{customer}@{s}")
    assert (
        after.loc[(customer, mine[0]), "created_timestamp"]
        == before.loc[(customer, mine[0]), "created_timestamp"]
    )
    # And the incremental result is the full rebuild's.
    full = build_features(
        lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=until, full=True
    )
    assert full.full
    rebuilt = read_table(features_dir=features_dir).set_index(["customer_id", "snapshot_ts"])
    pd.testing.assert_frame_equal(rebuilt[feature_cols], after[feature_cols])


def test_records_after_t_change_nothing_at_or_before_t(tmp_path: Path) -> None:
    frames = random_records(customers=30, days=30, seed=9)
    lake_dir, features_dir = _copy_lake(frames, tmp_path)
    t = START + timedelta(days=20, hours=6)
    build_features(
        lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=START + timedelta(days=30)
    )
    before = read_table(features_dir=features_dir, end=t)
    ids = frames["customers"]["customer_id"].tolist()
    after_t = typed(
        usage=pd.DataFrame(
            {
                "event_id": [f"EVT-AFTER-{i}" for i in range(len(ids))],
                "customer_id": ids,
                "event_timestamp": [t + timedelta(microseconds=1)] * len(ids),
                "event_type": ["login"] * len(ids),
                "course_id": [None] * len(ids),
                "watch_minutes": [None] * len(ids),
                "quiz_score": [None] * len(ids),
                "ingested_at": [datetime(2027, 1, 1, tzinfo=UTC)] * len(ids),
            }
        )
    )["usage_events"]
    add_to_lake(lake_dir, "usage_events", after_t, frames["usage_events"])
    build_features(
        lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=START + timedelta(days=30)
    )
    pd.testing.assert_frame_equal(read_table(features_dir=features_dir, end=t), before)
    later = read_table(features_dir=features_dir, start=t)
    assert (later.groupby("customer_id")["sessions_30d"].min() >= 1).all()


def test_a_source_without_partitions_gives_defaults(tmp_path: Path) -> None:
    frames = random_records(customers=10, days=10, seed=3)
    del frames["support_tickets"]
    lake_dir, features_dir = _copy_lake(frames, tmp_path)
    build_features(
        lake_dir=lake_dir, features_dir=features_dir, contract=CONTRACT, until=START + timedelta(days=10)
    )
    table = read_table(features_dir=features_dir)
    assert (table["support_tickets_30d"] == CONTRACT.feature("support_tickets_30d").default).all()
    assert table["events_30d"].sum() > 0


def test_an_empty_lake_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no customers partitions"):
        build_features(lake_dir=tmp_path / "lake", features_dir=tmp_path / "features", contract=CONTRACT)
