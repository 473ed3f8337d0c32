"""Bounded memory: chunked builds equal one-shot builds, the population rule, and builds that cannot fit."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from test_features_lake import CONTRACT, START, add_to_lake, random_records, typed, write_lake

from churnops.features import build as build_module
from churnops.features.build import build_features
from churnops.features.chunks import BuildMemoryError, Chunk, plan_chunks, spans_per_day
from churnops.features.table import read_table
from churnops.storage.duck import MemorySettingError, parse_size
from churnops.storage.lake import write_partition
from churnops.storage.layout import MEMORY_LIMIT_ENV

DAYS = 40
UNTIL = START + timedelta(days=DAYS)
KEYS = ["customer_id", "snapshot_ts"]
# 1,500 bytes per row (chunks.BYTES_PER_ROW): chunks of at most 300 rows, i.e. a few days here.
SMALL = "450KB"


def _table(features_dir: Path) -> pd.DataFrame:
    return read_table(features_dir=features_dir).drop(columns=["created_timestamp"])


def test_plan_chunks_groups_whole_days_up_to_the_budget() -> None:
    counts = np.array([0, 900, 900, 300, 0, 0, 1_500, 400, 0])
    # 3,000,000 bytes at 1,500 per row: 2,000 rows per chunk.
    chunks = plan_chunks(counts=counts, first_day=100, limit_bytes=3_000_000)
    assert chunks == [Chunk(101, 103, 1_800), Chunk(103, 107, 1_800), Chunk(107, 108, 400)]
    assert plan_chunks(counts=np.zeros(5, dtype=np.int64), first_day=0, limit_bytes=10**9) == []


def test_a_day_above_the_limit_names_the_figure_and_the_setting() -> None:
    counts = np.array([10, 5_000, 10])
    with pytest.raises(BuildMemoryError) as caught:
        plan_chunks(counts=counts, first_day=19_000, limit_bytes=2_000_000)
    message = str(caught.value)
    # Day 19,001 since the epoch is 2022-01-09; 5,000 rows x 1,500 bytes = 7.15 MiB > 1.91 MiB.
    assert "2022-01-09" in message and "5,000 (customer, snapshot) rows" in message
    assert "about 8MiB" in message and "limit of 2MiB" in message and MEMORY_LIMIT_ENV in message
    assert "--memory-limit" in message and caught.value.exit_code == 1


def test_spans_per_day_counts_covering_spans() -> None:
    got = spans_per_day(
        lo_days=np.array([10, 12, 11, 20, 5]), hi_days=np.array([12, 12, 10, 25, 11]), first_day=10, n_days=5
    )
    # [10,12] covers 10..12; [12,12] covers 12; [11,10] is empty; [20,25] is outside; [5,11] covers 10..11.
    assert got.tolist() == [2, 2, 2, 0, 0]


@pytest.mark.parametrize(
    ("value", "expected"), [("4GB", 4 * 10**9), ("512MiB", 512 * 2**20), ("1.5 gb", 1_500_000_000)]
)
def test_parse_size(value: str, expected: int) -> None:
    assert parse_size(value, setting=MEMORY_LIMIT_ENV) == expected


@pytest.mark.parametrize("value", ["lots", "0GB", "-1GB", "4XB"])
def test_parse_size_refuses_what_is_not_a_size(value: str) -> None:
    with pytest.raises(MemorySettingError, match=MEMORY_LIMIT_ENV):
        parse_size(value, setting=MEMORY_LIMIT_ENV)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return random_records(customers=60, days=DAYS, seed=21)


def _late_usage(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    ids = frames["customers"].sort_values("signup_date")["customer_id"].iloc[:3].tolist()
    return typed(
        usage=pd.DataFrame(
            {
                "event_id": [f"EVT-LATE-{i}" for i in range(3)],
                "customer_id": ids,
                "event_timestamp": [START + timedelta(days=3 + 4 * i, hours=5) for i in range(3)],
                "event_type": ["login", "video_watch", "quiz_attempt"],
                "course_id": [None, "C-1", "C-2"],
                "watch_minutes": [None, 12.5, None],
                "quiz_score": [None, None, 80.0],
                "ingested_at": [UNTIL + timedelta(days=2)] * 3,
            }
        )
    )["usage_events"]


def _build_with_late_records(root: Path, frames: dict[str, pd.DataFrame], memory_limit: str | None) -> tuple:
    lake, features = root / "lake", root / "features"
    write_lake(lake, frames)
    first = build_features(
        lake_dir=lake, features_dir=features, contract=CONTRACT, until=UNTIL, memory_limit=memory_limit
    )
    add_to_lake(lake, "usage_events", _late_usage(frames), frames["usage_events"])
    second = build_features(
        lake_dir=lake, features_dir=features, contract=CONTRACT, until=UNTIL, memory_limit=memory_limit
    )
    return first, second, _table(features)


def test_a_chunked_build_equals_the_one_shot_build_with_late_records(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    one_first, one_late, one_shot = _build_with_late_records(tmp_path / "one", frames, None)
    many_first, many_late, chunked = _build_with_late_records(tmp_path / "many", frames, SMALL)
    assert (one_first.chunks, one_late.chunks) == (1, 1)
    assert many_first.chunks > 3 and many_late.chunks >= 1
    assert many_first.snapshots_computed == one_first.snapshots_computed == len(one_shot)
    assert (many_late.late_records, many_late.snapshots_computed) == (3, one_late.snapshots_computed)
    assert many_late.snapshots_computed > 0
    pd.testing.assert_frame_equal(chunked, one_shot)


def test_a_small_memory_limit_holds_only_a_chunk_at_a_time(tmp_path: Path) -> None:
    frames = random_records(customers=600, days=12, seed=5)
    write_lake(tmp_path / "lake", frames)
    until = START + timedelta(days=12)
    # The chunked build in a fresh process, so the Arrow pool's peak is the build's alone.
    script = (
        "import sys, pyarrow as pa\n"
        "from datetime import datetime\n"
        "from pathlib import Path\n"
        "from churnops.contracts.feature_contract import load_feature_contract\n"
        "from churnops.features.build import build_features\n"
        "r = build_features(lake_dir=Path(sys.argv[1]), features_dir=Path(sys.argv[2]),\n"
        "    contract=load_feature_contract(), until=datetime.fromisoformat(sys.argv[3]),\n"
        "    memory_limit='900KB')\n"
        "print(r.chunks, pa.default_memory_pool().max_memory())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "lake"), str(tmp_path / "chunked"), until.isoformat()],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    chunks, peak = (int(v) for v in done.stdout.split()[-2:])
    one_shot = build_features(
        lake_dir=tmp_path / "lake", features_dir=tmp_path / "one", contract=CONTRACT, until=until
    )
    assert one_shot.chunks == 1 and chunks > 10
    whole = read_table(features_dir=tmp_path / "one")
    pd.testing.assert_frame_equal(_table(tmp_path / "chunked"), whole.drop(columns=["created_timestamp"]))
    # Holding every row at once, as the one-shot build does, takes at least the table's own
    # bytes (8 per value); the chunked build's Arrow allocations peak at a fraction of that.
    table_bytes = int(whole.memory_usage(deep=False).sum())
    assert table_bytes > 1_500_000
    assert peak < table_bytes // 3


def test_a_day_that_cannot_fit_is_refused_before_anything_is_written(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    write_lake(tmp_path / "lake", frames)
    with pytest.raises(BuildMemoryError, match=MEMORY_LIMIT_ENV):
        build_features(
            lake_dir=tmp_path / "lake",
            features_dir=tmp_path / "features",
            contract=CONTRACT,
            until=UNTIL,
            memory_limit="20KB",
        )
    assert read_table(features_dir=tmp_path / "features").empty


def test_duckdb_running_out_of_memory_names_the_setting(
    tmp_path: Path, frames: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lake(tmp_path / "lake", frames)

    def exhausted(*_: object, **__: object) -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256 KiB")

    monkeypatch.setattr(build_module.compute, "compute", exhausted)
    with pytest.raises(BuildMemoryError, match=f"{MEMORY_LIMIT_ENV}.*higher"):
        build_features(
            lake_dir=tmp_path / "lake", features_dir=tmp_path / "features", contract=CONTRACT, until=UNTIL
        )


def _churn(rows: list[tuple[str, pd.Timestamp, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "churn_date": pd.Series([r[1] for r in rows]).astype("datetime64[us, UTC]"),
            "churn_reason": ["price"] * len(rows),
            "ingested_at": pd.Series([r[2] for r in rows]).astype("datetime64[us, UTC]"),
        }
    )


def _write_churn(lake: Path, frame: pd.DataFrame) -> None:
    for day, part in frame.groupby(frame["churn_date"].dt.strftime("%Y-%m-%d")):
        write_partition(lake, "churn_labels", str(day), part)


def test_the_population_ends_at_the_churn_date_and_keeps_customers_without_activity(tmp_path: Path) -> None:
    frames = random_records(customers=12, days=20, seed=8)
    customers = frames["customers"].sort_values("customer_id").reset_index(drop=True)
    quiet = customers["customer_id"].iloc[0]
    for source in ("usage_events", "billing", "support_tickets"):
        frames[source] = frames[source][frames[source]["customer_id"] != quiet]
    # Signed up on day 2 (so snapshots from day 2), churns at day 9 10:00, then at day 5 00:00.
    customers.loc[customers["customer_id"].isin(customers["customer_id"].iloc[1:3]), "signup_date"] = (
        START + timedelta(days=2)
    ).date()
    frames["customers"] = customers
    lake, features = tmp_path / "lake", tmp_path / "features"
    write_lake(lake, frames)
    a, b = customers["customer_id"].iloc[1], customers["customer_id"].iloc[2]
    ts = pd.Timestamp
    _write_churn(
        lake,
        _churn(
            [
                (a, ts(START + timedelta(days=9, hours=10)), ts(START)),
                # A second, later record of the same customer: the earliest churn counts.
                (a, ts(START + timedelta(days=15)), ts(START)),
            ]
        ),
    )
    until = START + timedelta(days=20)
    build_features(lake_dir=lake, features_dir=features, contract=CONTRACT, until=until)
    table = read_table(features_dir=features)
    days = table.groupby("customer_id")["snapshot_ts"].agg(["min", "max", "count"])
    # a: boundaries day 2 .. day 9 (day 9 00:00 < churn at 10:00): 8 snapshots.
    assert (days.loc[a, "min"], days.loc[a, "max"], days.loc[a, "count"]) == (
        START + timedelta(days=2),
        START + timedelta(days=9),
        8,
    )
    # b has not churned: day 2 .. day 20.
    assert (days.loc[b, "max"], days.loc[b, "count"]) == (until, 19)
    # The customer with no activity at all: a snapshot every day from signup, defaults for activity.
    signup = customers.set_index("customer_id").loc[quiet, "signup_date"]
    mine = table[table["customer_id"] == quiet]
    assert len(mine) == max(0, (until.date() - signup).days + 1)
    for name in ("events_30d", "orders_30d", "support_tickets_30d", "days_since_last_event"):
        assert (mine[name] == CONTRACT.feature(name).default).all()

    # A churn label ingested later (b churns at day 5 00:00): the next build drops b's snapshots
    # from day 5 on and recomputes nothing else.
    _write_churn(lake, _churn([(b, ts(START + timedelta(days=5)), ts(until + timedelta(days=1)))]))
    report = build_features(lake_dir=lake, features_dir=features, contract=CONTRACT, until=until)
    after = read_table(features_dir=features)
    assert report.snapshots_computed == 0
    assert after[after["customer_id"] == b]["snapshot_ts"].tolist() == [
        START + timedelta(days=d) for d in (2, 3, 4)
    ]
    others = table[table["customer_id"] != b].reset_index(drop=True)
    pd.testing.assert_frame_equal(after[after["customer_id"] != b].reset_index(drop=True), others)
    # And a full rebuild agrees.
    build_features(lake_dir=lake, features_dir=features, contract=CONTRACT, until=until, full=True)
    pd.testing.assert_frame_equal(_table(features), after.drop(columns=["created_timestamp"]))


def test_a_customer_who_churned_on_its_signup_date_has_no_snapshot(tmp_path: Path) -> None:
    frames = random_records(customers=5, days=10, seed=3)
    customers = frames["customers"]
    gone = customers["customer_id"].iloc[0]
    signup: date = customers["signup_date"].iloc[0]
    lake = tmp_path / "lake"
    write_lake(lake, frames)
    # Churned at 00:00 of its signup day, its first boundary: no boundary lies strictly before it.
    churn_at = pd.Timestamp(signup).tz_localize("UTC")
    _write_churn(lake, _churn([(gone, churn_at, pd.Timestamp(START))]))
    build_features(
        lake_dir=lake, features_dir=tmp_path / "f", contract=CONTRACT, until=START + timedelta(days=10)
    )
    assert gone not in set(read_table(features_dir=tmp_path / "f")["customer_id"])


def test_the_command_line_names_the_setting(tmp_path: Path, frames: dict[str, pd.DataFrame]) -> None:
    from typer.testing import CliRunner

    from churnops.cli import app

    write_lake(tmp_path / "data" / "lake", frames)
    args = ["features", "build", "--home", str(tmp_path), "--until", UNTIL.isoformat()]
    refused = CliRunner().invoke(app, [*args, "--memory-limit", "20KB"])
    assert refused.exit_code == 1, refused.output
    assert MEMORY_LIMIT_ENV in refused.output and "above the memory limit of 1MiB" in refused.output
    bad = CliRunner().invoke(app, args, env={MEMORY_LIMIT_ENV: "lots"})
    assert bad.exit_code == 2, bad.output
    assert f"{MEMORY_LIMIT_ENV} 'lots' is not a memory size" in bad.output
