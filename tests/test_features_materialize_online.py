"""The bulk SQLite online load: Feast's exact bytes, its three paths, and what readers see.

Every expectation is what Feast's own row-by-row writer (`write_to_online_store`) leaves in the
same table for the same rows, dumped with plain sqlite3.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_features_lake import CONTRACT

from churnops.features.naming import view_name
from churnops.features.online import read_online, write_online
from churnops.features.table import table_schema

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

TABLE = "churnops_customer_profile_30d"
AT = datetime(2026, 5, 4, 10, 37, 12, tzinfo=UTC)


def snapshot(ids: list[str], at: datetime, seed: int) -> pd.DataFrame:
    """Refresh rows for `ids` at `at`: awkward values on purpose (long floats, zeros, repeats)."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    ts = pd.Series([at] * n, dtype="datetime64[us, UTC]")
    frame = pd.DataFrame({"customer_id": ids, "event_timestamp": ts, "snapshot_ts": ts})
    frame["created_timestamp"] = ts + pd.Timedelta(seconds=3, microseconds=250)
    for f in CONTRACT.features:
        if f.dtype == "int64":
            frame[f.name] = rng.integers(0, 5, n)
        elif f.dtype == "float64":
            frame[f.name] = rng.choice([0.0, -0.0, 1 / 3, 12.5, 1e-9, 99.99999999], n)
        else:
            frame[f.name] = rng.choice(list(f.allowed_values or ["x"]), n)
    return frame[table_schema(CONTRACT).names]


def arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=table_schema(CONTRACT), preserve_index=False)


def dump(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts, "
            f"typeof(event_ts) FROM {TABLE} ORDER BY entity_key, feature_name"
        ).fetchall()
    finally:
        con.close()


def schema_of(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY name", (TABLE,)
        ).fetchall()
    finally:
        con.close()


def feast_state(store: FeatureStore, view: FeatureView, path: Path, *frames: pd.DataFrame) -> list[tuple]:
    """The table Feast's own writer leaves after writing `frames` in order into an empty table."""
    con = sqlite3.connect(path)
    with con:
        con.execute(f"DELETE FROM {TABLE}")
    con.close()
    for frame in frames:
        store.write_to_online_store(view.name, frame)
    return dump(path)


@pytest.fixture()
def online(tmp_path: Path) -> tuple[FeatureStore, FeatureView, Path]:
    from churnops.features.store import apply, open_store

    store = open_store(home=tmp_path)
    apply(store)
    return store, store.get_feature_view(view_name(CONTRACT)), tmp_path / "data" / "feast" / "online.db"


def test_every_path_leaves_the_bytes_feasts_writer_leaves(online: tuple) -> None:
    store, view, path = online
    indexes = schema_of(path)
    ids = [f"CUST-{i:06d}" for i in range(1, 41)] + ["CUST-é-ü-0001", "K"]
    first = snapshot(ids, AT, seed=1)

    # An empty table: plain inserts, Feast's secondary index rebuilt once.
    assert write_online(store=store, view=view, rows=arrow(first), replace=True) == len(ids)
    ours = dump(path)
    assert len(ours) == len(ids) * len(view.features)
    assert schema_of(path) == indexes
    assert ours == feast_state(store, view, path, first)

    # A table holding rows: upserted in place; replace deletes the customers not in the load.
    write_online(store=store, view=view, rows=arrow(first), replace=True)
    later = snapshot([*ids[3:], "CUST-NEW-1"], AT + timedelta(hours=1), seed=2)
    write_online(store=store, view=view, rows=arrow(later), replace=True)
    ours = dump(path)
    assert schema_of(path) == indexes
    assert ours == feast_state(store, view, path, later)

    # Without replace: an upsert, every other customer keeps its row.
    write_online(store=store, view=view, rows=arrow(later), replace=True)
    one = snapshot(["CUST-000010", "CUST-NEW-2"], AT + timedelta(hours=2), seed=3)
    write_online(store=store, view=view, rows=arrow(one), replace=False)
    assert dump(path) == feast_state(store, view, path, later, one)


def test_feast_reads_back_exactly_the_rows_written(online: tuple) -> None:
    store, view, _ = online
    ids = [f"CUST-{i:06d}" for i in range(1, 31)]
    frame = snapshot(ids, AT, seed=4)
    write_online(store=store, view=view, rows=arrow(frame), replace=True)
    back = read_online(store=store, customer_ids=[*ids[::-1], "CUST-MISSING"])
    assert back["customer_id"].tolist() == [*ids[::-1], "CUST-MISSING"]
    expected = frame.set_index("customer_id").loc[ids[::-1]]
    assert (back["snapshot_ts"].iloc[:-1] == AT).all()
    for name in CONTRACT.feature_names:
        assert back[name].iloc[:-1].tolist() == expected[name].tolist(), name
        assert pd.isna(back[name].iloc[-1]), name


def test_an_open_reader_keeps_the_old_state_until_it_ends_its_read(online: tuple) -> None:
    store, view, path = online
    ids = [f"CUST-{i:06d}" for i in range(1, 21)]
    write_online(store=store, view=view, rows=arrow(snapshot(ids, AT, seed=5)), replace=True)
    before = dump(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        read = (
            f"SELECT entity_key, feature_name, value, event_ts FROM {TABLE} ORDER BY entity_key, feature_name"
        )
        seen = reader.execute(read).fetchall()
        later = snapshot(ids[1:], AT + timedelta(hours=1), seed=6)
        write_online(store=store, view=view, rows=arrow(later), replace=True)
        assert reader.execute(read).fetchall() == seen  # the old state, whole
        reader.execute("COMMIT")
        after = reader.execute(read).fetchall()
    finally:
        reader.close()
    assert [r[:3] + r[5:6] for r in before] == seen
    assert after == [r[:3] + r[5:6] for r in dump(path)]
    assert len(after) == (len(ids) - 1) * len(view.features)
    assert {r[3] for r in after} == {int((AT + timedelta(hours=1)).timestamp())}


def test_a_customer_twice_is_refused_before_anything_is_written(online: tuple) -> None:
    store, view, path = online
    frame = snapshot(["CUST-000001", "CUST-000002", "CUST-000001"], AT, seed=7)
    with pytest.raises(ValueError, match=r"customer_id value\(s\) more than once \(first: 'CUST-000001'\)"):
        write_online(store=store, view=view, rows=arrow(frame), replace=True)
    assert dump(path) == []


def test_an_empty_replace_empties_the_table_and_no_table_is_an_error(online: tuple) -> None:
    store, view, path = online
    write_online(store=store, view=view, rows=arrow(snapshot(["A", "B"], AT, seed=8)), replace=True)
    empty = arrow(snapshot([], AT, seed=8))
    assert write_online(store=store, view=view, rows=empty, replace=False) == 0
    assert len(dump(path)) == 2 * len(view.features)
    assert write_online(store=store, view=view, rows=empty, replace=True) == 0
    assert dump(path) == []
    con = sqlite3.connect(path)
    with con:
        con.execute(f"DROP TABLE {TABLE}")
    con.close()
    with pytest.raises(RuntimeError, match="run `churnops features apply` first"):
        write_online(store=store, view=view, rows=arrow(snapshot(["A"], AT, seed=9)), replace=True)
