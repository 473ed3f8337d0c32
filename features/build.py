"""Build the offline feature table from the lake: every boundary from signup to `until`.

A build remembers, per source, the latest `ingested_at` it has seen (the watermark) and the
last boundary it built. The next build computes the new boundaries, and for records ingested
since then whose event time is at or before the last boundary (late records) it recomputes
exactly the snapshots whose window holds them:

- a windowed source's record at time e reaches the snapshots S with e <= S < e + window;
- a record of an `as_of` source (the plan on an invoice) reaches S from e to its next record;
- a changed entity row (customers keep no history) reaches all of that customer's snapshots.

Nothing else is rewritten, so a build with nothing new is a no-op. A contract change (or
`full=True`) rebuilds everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.feature_contract import FeatureContract
from churnops.features import compute, table
from churnops.features.compute import KEY_TS, Layout
from churnops.storage.atomic import write_atomic
from churnops.storage.duck import duckdb_connection
from churnops.storage.times import from_us, to_us

STATE_FILE = "_build_state.json"
_INFINITY_US = 2**62


@dataclass(frozen=True)
class BuildReport:
    """What a build did.

    Attributes:
        until: The last boundary the table now covers.
        full: Whether every snapshot was recomputed.
        customers: Customers in the lake's entity source.
        snapshots_computed: (customer, snapshot) rows computed by this build.
        late_records: Records ingested since the last build whose event time was already covered.
        partitions_written: Day partitions rewritten.
        seconds: Wall time.
    """

    until: datetime
    full: bool
    customers: int
    snapshots_computed: int
    late_records: int
    partitions_written: int
    seconds: float


def floor_to_grain(value: datetime, contract: FeatureContract) -> datetime:
    """The latest snapshot boundary at or before `value`."""
    g = Layout.of(contract).grain_us
    return from_us((to_us(value) // g) * g)


def _fingerprint(contract: FeatureContract) -> str:
    # Anything that changes a snapshot's values forces a full rebuild.
    payload = json.dumps(
        {
            "features": [f.model_dump(mode="json") for f in contract.features],
            "time": contract.time.model_dump(mode="json"),
            "sources": [s.model_dump(mode="json") for s in contract.sources],
            "entity": contract.entity.join_key,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _state_path(features_dir: Path, contract: FeatureContract) -> Path:
    return table.table_dir(features_dir, contract) / STATE_FILE


def _read_state(features_dir: Path, contract: FeatureContract) -> dict | None:
    path = _state_path(features_dir, contract)
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    return state if state.get("fingerprint") == _fingerprint(contract) else None


def _write_state(features_dir: Path, contract: FeatureContract, state: dict) -> None:
    body = json.dumps(state, indent=2, sort_keys=True)
    write_atomic(_state_path(features_dir, contract), lambda tmp: tmp.write_text(body, encoding="utf-8"))


def _watermarks(con: duckdb.DuckDBPyConnection, present: set[str]) -> dict[str, int]:
    marks = {}
    for source in sorted(present):
        row = con.execute(f'SELECT max(ingested_us) FROM "src_{source}"').fetchone()
        marks[source] = int(row[0]) if row and row[0] is not None else -1
    return marks


def _register_keys(
    con: duckdb.DuckDBPyConnection, *, features_dir: Path, contract: FeatureContract, until_us: int
) -> None:
    """`all_keys`: every boundary from each customer's first to `until`, plus refresh snapshots."""
    layout = Layout.of(contract)
    key = f'"{layout.key}"'
    g = layout.grain_us
    refresh = ""
    if table.list_partitions(features_dir, contract):
        glob = table.table_glob(features_dir, contract).replace("'", "''")
        refresh = (
            f"UNION SELECT {key}, epoch_us({table.SNAPSHOT_TS}) AS {KEY_TS} "
            f"FROM read_parquet('{glob}', hive_partitioning = false) "
            f"WHERE epoch_us({table.SNAPSHOT_TS}) % {g} <> 0"
        )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE all_keys AS "
        f"SELECT {key}, unnest(generate_series(first_us, {until_us}, {g})) AS {KEY_TS} "
        f"FROM entity WHERE first_us <= {until_us} {refresh}"
    )


def _register_late_ranges(
    con: duckdb.DuckDBPyConnection, *, contract: FeatureContract, present: set[str], marks: dict[str, int]
) -> None:
    """`late_ranges(<key>, start_us, end_us)`: snapshot times reached by records new since `marks`."""
    layout = Layout.of(contract)
    key = f'"{layout.key}"'
    widest = compute.source_windows(contract)
    as_of_sources = {
        f.source for f in contract.features if f.aggregation == "as_of" and f.source != layout.entity_source
    }
    parts = []
    for source in sorted(present):
        mark = marks.get(source, -1)
        src = f'"src_{source}"'
        if source == layout.entity_source:
            parts.append(
                f"SELECT {key}, {-_INFINITY_US} AS start_us, {_INFINITY_US} AS end_us "
                f"FROM {src} WHERE ingested_us > {mark}"
            )
            continue
        if source in widest:
            parts.append(
                f"SELECT {key}, ts_us AS start_us, ts_us + {widest[source]} AS end_us "
                f"FROM {src} WHERE ingested_us > {mark}"
            )
        if source in as_of_sources:
            parts.append(
                f"SELECT n.{key}, n.ts_us AS start_us, "
                f"coalesce((SELECT min(o.ts_us) FROM {src} o WHERE o.{key} = n.{key} AND o.ts_us > n.ts_us), "
                f"{_INFINITY_US}) AS end_us FROM {src} n WHERE n.ingested_us > {mark}"
            )
    body = (
        " UNION ALL ".join(parts) if parts else f"SELECT NULL::VARCHAR AS {key}, 0 AS start_us, 0 AS end_us"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE late_ranges AS SELECT * FROM ({body}) WHERE {key} IS NOT NULL")


def _count_late(
    con: duckdb.DuckDBPyConnection, *, present: set[str], marks: dict[str, int], covered_us: int
) -> int:
    """Records ingested since `marks` whose event time an earlier build had already covered."""
    late = 0
    for source in sorted(present):
        row = con.execute(
            f'SELECT count(*) FROM "src_{source}" WHERE ingested_us > {marks.get(source, -1)} '
            f"AND ts_us <= {covered_us}"
        ).fetchone()
        late += int(row[0]) if row else 0
    return late


def to_rows(computed: pa.Table, contract: FeatureContract, created_us: int) -> pa.Table:
    """Computed features → table rows: key, event/created/snapshot timestamps, features."""
    s = computed.column(KEY_TS).cast(pa.timestamp("us")).cast(table.TIMESTAMP_TYPE)
    created = pa.array(np.full(computed.num_rows, created_us, dtype="datetime64[us]")).cast(
        table.TIMESTAMP_TYPE
    )
    columns = {
        contract.entity.join_key: computed.column(contract.entity.join_key),
        table.EVENT_TIMESTAMP: s,
        table.CREATED_TIMESTAMP: created,
        table.SNAPSHOT_TS: s,
    }
    columns.update({name: computed.column(name) for name in contract.feature_names})
    return pa.table(columns).cast(table.table_schema(contract))


def write_snapshots(
    *, features_dir: Path, contract: FeatureContract, rows: pa.Table, replace_all: bool
) -> int:
    """Merge rows into their day partitions, replacing rows with the same (customer, snapshot time).

    Args:
        features_dir: The features folder.
        contract: The feature contract.
        rows: Rows in the table schema.
        replace_all: Whether the partitions' previous rows are dropped entirely (full rebuild).

    Returns:
        The number of partitions written.
    """
    if rows.num_rows == 0:
        return 0
    key = contract.entity.join_key
    rows = rows.sort_by([(table.SNAPSHOT_TS, "ascending"), (key, "ascending")])
    days = pc.strftime(rows.column(table.SNAPSHOT_TS), format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    # Sorted by time, so each day's rows are one contiguous slice.
    unique_days, starts = np.unique(days, return_index=True)
    ends = [*starts[1:], len(days)]
    written = 0
    for day, start, end in zip(unique_days.tolist(), starts.tolist(), ends, strict=True):
        fresh = rows.slice(start, end - start)
        old = None if replace_all else table.read_partition(features_dir, contract, day)
        if old is not None:
            fresh_keys = pc.binary_join_element_wise(
                fresh.column(key), pc.cast(fresh.column(table.SNAPSHOT_TS), pa.string()), "|"
            )
            old_keys = pc.binary_join_element_wise(
                old.column(key), pc.cast(old.column(table.SNAPSHOT_TS), pa.string()), "|"
            )
            fresh = pa.concat_tables([old.filter(pc.invert(pc.is_in(old_keys, fresh_keys))), fresh])
        fresh = fresh.sort_by([(key, "ascending"), (table.SNAPSHOT_TS, "ascending")])
        table.write_partition(features_dir, contract, day, fresh)
        written += 1
    return written


def _build_elsewhere(
    engine: str, lake_dir: Path, features_dir: Path, contract: FeatureContract, until: datetime | None
) -> BuildReport:
    """A build on an engine other than DuckDB: `spark` (`features.spark_engine`)."""
    if engine != "spark":
        raise ValueError(f"unknown feature engine {engine!r}: use duckdb or spark")
    from churnops.features.spark_engine import build_with_spark

    return build_with_spark(lake_dir=lake_dir, features_dir=features_dir, contract=contract, until=until)


def build_features(
    *,
    lake_dir: Path,
    features_dir: Path,
    contract: FeatureContract,
    until: datetime | None = None,
    full: bool = False,
    engine: str = "duckdb",
) -> BuildReport:
    """Compute snapshots at the contract's grain from each customer's signup to `until`.

    Args:
        lake_dir: The lake's root folder (`<lake>/<source>/date=YYYY-MM-DD/data.parquet`).
        features_dir: Where the offline table and the build state live.
        contract: The feature contract (names, windows, filters, defaults, grain).
        until: Build boundaries up to the latest one at or before this time (default: now).
            A naive datetime is taken as UTC.
        full: Recompute every snapshot instead of only new and late-touched ones.
        engine: `duckdb` (in process) or `spark` (`features.spark_engine`; always a full build).

    Returns:
        What the build did.

    Raises:
        ValueError: When the lake has no entity (customers) partitions yet.
    """
    if engine != "duckdb":
        return _build_elsewhere(engine, lake_dir, features_dir, contract, until)
    started = time.perf_counter()
    layout = Layout.of(contract)
    created_us = to_us(datetime.now(tz=UTC))
    until_us = (to_us(until or datetime.now(tz=UTC)) // layout.grain_us) * layout.grain_us
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=lake_dir, contract=contract)
        if layout.entity_source not in present:
            raise ValueError(
                f"the lake at {lake_dir} has no {layout.entity_source} partitions, so there are no "
                f"customers to snapshot: run `churnops ingest` first"
            )
        state = None if full else _read_state(features_dir, contract)
        marks = _watermarks(con, present)
        customers = int(con.execute("SELECT count(*) FROM entity").fetchone()[0])  # type: ignore[index]
        if state is None:
            effective_until, late = until_us, 0
            _register_keys(con, features_dir=features_dir, contract=contract, until_us=effective_until)
            targets = con.execute(f'SELECT "{layout.key}", {KEY_TS} FROM all_keys').to_arrow_table()
        else:
            previous = int(state["until_us"])
            effective_until = max(until_us, previous)
            _register_keys(con, features_dir=features_dir, contract=contract, until_us=effective_until)
            _register_late_ranges(con, contract=contract, present=present, marks=state["watermarks"])
            key = f'"{layout.key}"'
            late = _count_late(con, present=present, marks=state["watermarks"], covered_us=previous)
            targets = con.execute(
                f"SELECT {key}, {KEY_TS} FROM all_keys WHERE {KEY_TS} > {previous} UNION "
                f"SELECT k.{key}, k.{KEY_TS} FROM all_keys k JOIN late_ranges r ON r.{key} = k.{key} "
                f"AND k.{KEY_TS} >= r.start_us AND k.{KEY_TS} < r.end_us"
            ).to_arrow_table()
        computed = compute.compute(con, contract=contract, present=present, targets=targets)
    rows = to_rows(computed, contract, created_us)
    if state is None:
        _state_path(features_dir, contract).unlink(missing_ok=True)
        table.drop_table(features_dir, contract)
    partitions = write_snapshots(
        features_dir=features_dir, contract=contract, rows=rows, replace_all=state is None
    )
    _write_state(
        features_dir,
        contract,
        {"fingerprint": _fingerprint(contract), "until_us": effective_until, "watermarks": marks},
    )
    return BuildReport(
        until=from_us(effective_until),
        full=state is None,
        customers=customers,
        snapshots_computed=rows.num_rows,
        late_records=late,
        partitions_written=partitions,
        seconds=time.perf_counter() - started,
    )
