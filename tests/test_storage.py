"""The storage layer on its own: atomic writes, the DuckDB connection, times, the home, API keys."""

from __future__ import annotations

import json
import stat
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from churnops.feature_repo import FEATURE_REPO
from churnops.settings import Workspace
from churnops.storage import layout
from churnops.storage.atomic import write_atomic
from churnops.storage.duck import duckdb_connection
from churnops.storage.keys import (
    KEY_PREFIX,
    KeyRing,
    create_key,
    hash_key,
    list_keys,
    load_key_hashes,
    revoke_keys,
)
from churnops.storage.lake import list_partitions, write_partition
from churnops.storage.staging import StagedFiles, remove_orphans
from churnops.storage.times import (
    as_utc,
    epoch_micros,
    from_us,
    parse_utc,
    seconds_to_us,
    series_to_us,
    timestamp_utc,
    to_us,
)

APPROVED = ["churn-model", "cs-analytics-dashboard"]
PLUS_ONE = timezone(timedelta(hours=1))
NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOON_US = 1_795_262_400_000_000


# --- atomic writes -----------------------------------------------------------------------------


def test_write_atomic_creates_folders_and_applies_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "secret.txt"
    assert write_atomic(path, lambda tmp: tmp.write_text("new"), mode=0o600) == path
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# --- multi-file commits ------------------------------------------------------------------------


def test_staged_files_change_nothing_until_applied_then_all_at_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_partition(lake, "s", "2026-01-01", pd.DataFrame({"x": [1]}))
    (tmp_path / "gone.txt").write_text("old")
    files = StagedFiles(name="s", tag="run1")
    write_partition(lake, "s", "2026-01-01", pd.DataFrame({"x": [2]}), write=files.write)
    write_partition(lake, "s", "2026-01-02", pd.DataFrame({"x": [3]}), write=files.write)
    files.remove(tmp_path / "gone.txt")
    assert list_partitions(lake, "s") == ["2026-01-01"]  # a hidden temporary is no partition
    assert [tmp.name for tmp, _ in files.renames] == [".data.parquet.run1.tmp"] * 2
    files.apply()
    assert list_partitions(lake, "s") == ["2026-01-01", "2026-01-02"]
    assert not (tmp_path / "gone.txt").exists()
    assert not list(lake.rglob("*.tmp"))
    files.apply()  # a second apply (recovery after a kill mid-way) changes nothing
    assert list_partitions(lake, "s") == ["2026-01-01", "2026-01-02"]


def test_the_commit_record_round_trips_and_finishes_a_half_applied_commit(tmp_path: Path) -> None:
    files = StagedFiles(name="s", tag="t")
    for name in ("a", "b", "c"):
        files.write(tmp_path / name, lambda tmp, name=name: tmp.write_text(name))
    record = json.loads(json.dumps(files.to_record()))
    files.renames[0][0].rename(files.renames[0][1])  # the killed writer got this far
    StagedFiles.from_record(record).apply()
    assert [(tmp_path / n).read_text() for n in "abc"] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_discard_and_orphan_removal_leave_no_temporary_and_no_empty_partition(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_partition(lake, "s", "2026-01-01", pd.DataFrame({"x": [1]}))
    before = sorted(p for p in lake.rglob("*"))
    files = StagedFiles(name="s", tag="t")
    write_partition(lake, "s", "2026-01-05", pd.DataFrame({"x": [2]}), write=files.write)
    files.discard()
    assert sorted(p for p in lake.rglob("*")) == before
    write_partition(
        lake, "s", "2026-01-06", pd.DataFrame({"x": [2]}), write=StagedFiles(name="s", tag="u").write
    )
    (lake / "s" / "date=2026-01-01" / ".data.parquet.abc123.tmp").write_text("cut short")
    removed = remove_orphans([lake, tmp_path / "missing"])
    assert len(removed) == 2
    assert sorted(p for p in lake.rglob("*")) == before


# --- the DuckDB connection ---------------------------------------------------------------------


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> object:
    return con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_connection_is_utc_without_progress_bar_and_keeps_duckdb_defaults() -> None:
    with duckdb.connect() as plain, duckdb_connection() as con:
        assert _setting(con, "TimeZone") == "UTC"
        assert _setting(con, "enable_progress_bar") is False
        assert _setting(con, "memory_limit") == _setting(plain, "memory_limit")
        assert _setting(con, "temp_directory") == _setting(plain, "temp_directory")
        # A naive timestamp compared with an aware one is read as UTC.
        same = "SELECT TIMESTAMP '2026-11-21 12:00:00'::TIMESTAMPTZ = TIMESTAMPTZ '2026-11-21 12:00:00+00'"
        assert con.execute(same).fetchone()[0] is True


def test_connection_applies_memory_limit_and_spill_folder(tmp_path: Path) -> None:
    with duckdb_connection(memory_limit="256MB", temp_directory=tmp_path / "spill") as con:
        assert _setting(con, "memory_limit") == "244.1 MiB"
        assert _setting(con, "temp_directory") == str(tmp_path / "spill")
        assert _setting(con, "TimeZone") == "UTC"


# --- time conversions --------------------------------------------------------------------------


def test_as_utc_reads_naive_as_utc_and_converts_aware() -> None:
    assert as_utc(datetime(2026, 11, 21, 12, 0)) == NOON
    assert as_utc(datetime(2026, 11, 21, 12, 0)).tzinfo is UTC
    converted = as_utc(datetime(2026, 11, 21, 13, 0, tzinfo=PLUS_ONE))
    assert converted == NOON and converted.tzinfo is UTC and converted.hour == 12
    stamp = as_utc(pd.Timestamp("2026-11-21 12:00:00.000000001"))
    assert isinstance(stamp, pd.Timestamp) and stamp.nanosecond == 1 and str(stamp.tz) == "UTC"


def test_timestamp_utc_reads_anything_pandas_reads() -> None:
    want = pd.Timestamp("2026-11-21 12:00", tz="UTC")
    assert timestamp_utc(datetime(2026, 11, 21, 12, 0)) == want
    assert timestamp_utc(datetime(2026, 11, 21, 13, 0, tzinfo=PLUS_ONE)) == want
    assert timestamp_utc("2026-11-21T12:00:00") == want
    assert timestamp_utc(np.datetime64("2026-11-21T12:00")) == want
    assert timestamp_utc(date(2026, 11, 21)) == pd.Timestamp("2026-11-21", tz="UTC")
    assert str(timestamp_utc(datetime(2026, 11, 21, 12, 0)).tz) == "UTC"
    assert timestamp_utc("2026-11-21T12:00:00.000000007Z").nanosecond == 7
    assert timestamp_utc(None) is pd.NaT


def test_to_us_and_from_us_are_exact_and_inverse() -> None:
    assert to_us(NOON) == NOON_US
    assert to_us(datetime(2026, 11, 21, 12, 0)) == NOON_US
    assert to_us(datetime(2026, 11, 21, 13, 0, tzinfo=PLUS_ONE)) == NOON_US
    assert to_us(pd.Timestamp("2026-11-21 12:00", tz="UTC")) == NOON_US
    assert to_us(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    # Nanoseconds round down, before and after the epoch.
    assert to_us(pd.Timestamp("1970-01-01T00:00:00.000001900Z")) == 1
    assert to_us(pd.Timestamp("1969-12-31T23:59:59.999999100Z")) == -1
    for value in (0, -1, NOON_US, NOON_US + 123_457):
        back = from_us(value)
        assert back.tzinfo is UTC and to_us(back) == value
    assert from_us(NOON_US) == NOON


def test_seconds_to_us_rounds_to_the_nearest_microsecond() -> None:
    assert seconds_to_us(timedelta(days=30).total_seconds()) == 30 * 86_400_000_000
    assert seconds_to_us(1.0000004) == 1_000_000
    assert seconds_to_us(1.0000006) == 1_000_001
    assert isinstance(seconds_to_us(1.5), int)


def test_series_to_us_reads_naive_as_utc_and_keeps_nat_as_the_int64_sentinel() -> None:
    out = series_to_us(pd.Series(["2026-11-21T12:00:00", None]))
    assert out.dtype == np.int64
    assert out.tolist() == [NOON_US, np.iinfo(np.int64).min]
    assert series_to_us(pd.Series(["2026-11-21T13:00:00+01:00"])).tolist() == [NOON_US]
    assert series_to_us(pd.Series([datetime(2026, 11, 21, 12, 0), NOON])).tolist() == [NOON_US, NOON_US]
    assert series_to_us(pd.Series([date(1970, 1, 2)])).tolist() == [86_400_000_000]
    nanos = pd.Series(pd.to_datetime(["1970-01-01T00:00:00.0000019Z", "1969-12-31T23:59:59.9999991Z"]))
    assert series_to_us(nanos).tolist() == [1, -1]


def test_epoch_micros_reads_lake_timestamps_and_dates_with_nan_for_null() -> None:
    stamps = pa.chunked_array([pa.array([NOON, None], type=pa.timestamp("us", tz="UTC"))])
    out = epoch_micros(stamps)
    assert out.dtype == np.float64
    assert out[0] == NOON_US and np.isnan(out[1])
    days = pa.chunked_array([pa.array([date(1970, 1, 2), None, date(1969, 12, 31)], type=pa.date32())])
    got = epoch_micros(days)
    assert got[0] == 86_400_000_000 and np.isnan(got[1]) and got[2] == -86_400_000_000


def test_parse_utc_reads_what_online_stores_return() -> None:
    assert parse_utc(datetime(2026, 11, 21, 12, 0)) == NOON
    assert parse_utc(datetime(2026, 11, 21, 13, 0, tzinfo=PLUS_ONE)) == NOON
    assert parse_utc(pd.Timestamp("2026-11-21T12:00:00Z")) == NOON
    assert parse_utc("2026-11-21T12:00:00Z") == NOON
    assert parse_utc(int(NOON.timestamp())) == NOON
    assert parse_utc(NOON.timestamp()) == NOON
    assert parse_utc(None) is None
    assert parse_utc(float("nan")) is None
    assert type(parse_utc(pd.Timestamp("2026-11-21T12:00:00Z"))) is datetime
    with pytest.raises(ValueError, match="is not a timestamp"):
        parse_utc(b"2026")


# --- the home's layout ------------------------------------------------------------------------


def test_workspace_paths_come_from_the_layout() -> None:
    ws = Workspace(Path("/h"))
    assert {
        "data": ws.data,
        "landing": ws.landing,
        "lake": ws.lake,
        "quarantine": ws.quarantine,
        "ingestion_log": ws.ingestion_log,
        "features": ws.features,
        "feast": ws.feast,
        "audit_db": ws.audit_db,
        "predictions": ws.predictions,
        "mlruns": ws.mlruns,
        "artifacts": ws.artifacts,
        "reports": ws.reports,
    } == {
        "data": Path("/h/data"),
        "landing": Path("/h/data/landing"),
        "lake": Path("/h/data/lake"),
        "quarantine": Path("/h/data/quarantine"),
        "ingestion_log": Path("/h/data/ingestion_log.db"),
        "features": Path("/h/data/features"),
        "feast": Path("/h/data/feast"),
        "audit_db": Path("/h/data/audit.db"),
        "predictions": Path("/h/data/predictions"),
        "mlruns": Path("/h/mlruns"),
        "artifacts": Path("/h/mlruns/artifacts"),
        "reports": Path("/h/reports"),
    }
    assert ws.tracking_uri == "sqlite:////h/mlruns/mlflow.db"
    assert ws.tracking_db == Path("/h") / layout.TRACKING_DB


def test_feature_store_yaml_keeps_feast_files_in_the_layouts_feast_folder() -> None:
    text = (FEATURE_REPO / "feature_store.yaml").read_text()
    feast_dir = f"${{{layout.HOME_ENV}}}/{layout.FEAST_DIR.as_posix()}/"
    assert f"path: sqlite:///{feast_dir}registry.db" in text
    assert f"path: {feast_dir}online.db" in text


# --- API keys ----------------------------------------------------------------------------------


def test_keys_are_stored_only_as_hashes(tmp_path: Path) -> None:
    keys_file = tmp_path / "serving" / "api_keys.json"
    first = create_key(keys_file=keys_file, consumer="churn-model", approved_consumers=APPROVED)
    second = create_key(keys_file=keys_file, consumer="cs-analytics-dashboard", approved_consumers=APPROVED)
    assert first.startswith(KEY_PREFIX) and second.startswith(KEY_PREFIX) and first != second
    text = keys_file.read_text()
    assert first not in text and second not in text
    assert load_key_hashes(keys_file=keys_file) == {
        hash_key(first): "churn-model",
        hash_key(second): "cs-analytics-dashboard",
    }
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert [p.name for p in keys_file.parent.iterdir()] == ["api_keys.json"]


def test_keys_only_for_approved_consumers_and_valid_files(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    with pytest.raises(ValueError, match="consumer 'intruder' is not approved"):
        create_key(keys_file=keys_file, consumer="intruder", approved_consumers=APPROVED)
    assert not keys_file.exists()
    assert load_key_hashes(keys_file=keys_file) == {}
    keys_file.write_text(json.dumps({"keys": [{"consumer": "x"}]}))
    with pytest.raises(
        ValueError, match=r"keys.json is not valid \(each entry needs 'consumer' and 'sha256'\)"
    ):
        load_key_hashes(keys_file=keys_file)


def test_revoking_by_consumer_or_hash_prefix_keeps_an_audit_trail(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    a1 = create_key(keys_file=keys_file, consumer="churn-model", approved_consumers=APPROVED)
    a2 = create_key(keys_file=keys_file, consumer="churn-model", approved_consumers=APPROVED)
    b = create_key(keys_file=keys_file, consumer="cs-analytics-dashboard", approved_consumers=APPROVED)
    [one] = revoke_keys(keys_file=keys_file, name=hash_key(a1)[:10].upper())
    assert one["sha256"] == hash_key(a1)
    assert set(load_key_hashes(keys_file=keys_file)) == {hash_key(a2), hash_key(b)}
    assert [e["sha256"] for e in revoke_keys(keys_file=keys_file, name="churn-model")] == [hash_key(a2)]
    assert load_key_hashes(keys_file=keys_file) == {hash_key(b): "cs-analytics-dashboard"}
    entries = list_keys(keys_file=keys_file)
    assert [bool(e.get("revoked_at")) for e in entries] == [True, True, False]
    with pytest.raises(ValueError, match="no active API key"):
        revoke_keys(keys_file=keys_file, name="churn-model")
    with pytest.raises(ValueError, match="no active API key"):
        revoke_keys(keys_file=keys_file, name="abc")  # too short to be a hash prefix
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_ring_sees_revoked_new_emptied_and_broken_files_after_its_interval(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    old = create_key(keys_file=keys_file, consumer="churn-model", approved_consumers=APPROVED)
    clock = _Clock()
    ring = KeyRing(keys_file=keys_file, interval_s=2.0, clock=clock)
    assert ring.consumer(old) == "churn-model"
    revoke_keys(keys_file=keys_file, name="churn-model")
    new = create_key(keys_file=keys_file, consumer="cs-analytics-dashboard", approved_consumers=APPROVED)
    clock.now += 1.9
    # Within the interval the file is not looked at: the revocation is not seen yet.
    assert ring.consumer(old) == "churn-model" and ring.consumer(new) is None
    clock.now += 0.1
    assert ring.consumer(old) is None
    assert ring.consumer(new) == "cs-analytics-dashboard"
    keys_file.write_text("")
    clock.now += 2
    assert ring.consumer(new) is None
    keys_file.write_text("{not json")
    clock.now += 2
    assert ring.consumer(new) is None  # fails closed
    keys_file.unlink()
    clock.now += 2
    assert ring.consumer(new) is None
