"""Build the offline feature table from the lake: the contract's population at every boundary to `until`.

Who is snapshotted when is the contract's `population` (`features.population`): every customer
from signup until its churn date. A customer whose churn label (or signup) changes loses the
snapshots that now fall outside it at the next build.

A build remembers, per source, the latest `ingested_at` it has seen (the watermark) and the
last boundary it built. The next build computes the new boundaries, and for records ingested
since then whose event time is at or before the last boundary (late records) it recomputes
exactly the snapshots whose window holds them:

- a windowed source's record at time e reaches the snapshots S with e <= S < e + window;
- a record of an `as_of` source (the plan on an invoice) reaches S from e to its next record;
- a changed entity row (customers keep no history) reaches all of that customer's snapshots.

Nothing else is rewritten, so a build with nothing new is a no-op. A contract change (or
`full=True`) rebuilds everything.

Whatever it computes, a build holds one chunk of whole snapshot days at a time
(`features.chunks`): targets are generated per chunk from the population, computed, and written
to their day partitions before the next chunk starts, so memory follows the chunk, not the grid.
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
from churnops.features.chunks import BuildMemoryError, Chunk, mib, plan_chunks, spans_per_day
from churnops.features.compute import KEY_TS, Layout
from churnops.features.population import POPULATION, end_source, register_population
from churnops.storage.atomic import write_atomic
from churnops.storage.duck import default_memory_limit, duckdb_connection, parse_size
from churnops.storage.layout import MEMORY_LIMIT_ENV
from churnops.storage.times import from_us, to_us

STATE_FILE = "_build_state.json"
# DuckDB's spill folder under the features folder (inside the home), emptied when a build ends.
SPILL_DIR = ".spill"
DUCKDB_FLOOR_MIB = 256
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
        chunks: Chunks of whole days the rows were computed and written in.
        seconds: Wall time.
    """

    until: datetime
    full: bool
    customers: int
    snapshots_computed: int
    late_records: int
    partitions_written: int
    chunks: int
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
            "population": contract.population.model_dump(mode="json") if contract.population else None,
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


@dataclass(frozen=True)
class _Run:
    """One build's fixed inputs, shared by its steps.

    Attributes:
        lake_dir: The lake's root folder.
        features_dir: The features folder.
        contract: The feature contract.
        layout: The contract's resolved layout.
        previous_us: The last boundary an earlier build covered, or None for a full build.
        until_us: The last boundary this build covers.
        limit_bytes: The memory the build may use.
    """

    lake_dir: Path
    features_dir: Path
    contract: FeatureContract
    layout: Layout
    previous_us: int | None
    until_us: int
    limit_bytes: int

    @property
    def key(self) -> str:
        return f'"{self.layout.key}"'


def _register_refresh_keys(con: duckdb.DuckDBPyConnection, run: _Run) -> None:
    """`refresh_keys(<key>, s_us)`: the table's snapshots between boundaries, within the population."""
    key, g = run.key, run.layout.grain_us
    body = f"SELECT NULL::VARCHAR AS {key}, 0::BIGINT AS {KEY_TS} WHERE false"
    if table.list_partitions(run.features_dir, run.contract):
        glob = table.table_glob(run.features_dir, run.contract).replace("'", "''")
        body = (
            f"SELECT t.{key}, epoch_us(t.{table.SNAPSHOT_TS}) AS {KEY_TS} "
            f"FROM read_parquet('{glob}', hive_partitioning = false) t "
            f"JOIN {POPULATION} p ON p.{key} = t.{key} "
            f"WHERE epoch_us(t.{table.SNAPSHOT_TS}) % {g} <> 0 "
            f"AND epoch_us(t.{table.SNAPSHOT_TS}) >= p.first_us "
            f"AND epoch_us(t.{table.SNAPSHOT_TS}) < p.end_us"
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE refresh_keys AS {body}")


def _touched(run: _Run, alias: str) -> str:
    """The condition that a key `alias.<key>, alias.s_us` is one an incremental build recomputes."""
    return (
        f"{alias}.{KEY_TS} > {run.previous_us} OR EXISTS (SELECT 1 FROM late_ranges r "
        f"WHERE r.{run.key} = {alias}.{run.key} AND {alias}.{KEY_TS} >= r.start_us "
        f"AND {alias}.{KEY_TS} < r.end_us)"
    )


def _fetch_days(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[np.ndarray, np.ndarray]:
    result = con.execute(sql).fetchnumpy()
    return tuple(np.asarray(v, dtype=np.int64) for v in result.values())  # type: ignore[return-value]


def _day_counts(con: duckdb.DuckDBPyConnection, run: _Run) -> tuple[int, np.ndarray]:
    """Per snapshot day, an upper bound of the rows this build computes.

    Returns:
        The first day (days since the epoch) and the counts from it on.
    """
    g, d = run.layout.grain_us, compute.DAY_US
    per_day = max(1, d // g)
    lo, hi = _fetch_days(
        con,
        f"SELECT first_us // {d} AS lo, last_us // {d} AS hi FROM {POPULATION} WHERE first_us <= last_us",
    )
    refresh_where = "" if run.previous_us is None else f"WHERE {_touched(run, 'k')}"
    r_day, r_count = _fetch_days(
        con, f"SELECT {KEY_TS} // {d} AS day, count(*) AS n FROM refresh_keys k {refresh_where} GROUP BY day"
    )
    first_day = int(min(lo.min(initial=run.until_us // d), r_day.min(initial=run.until_us // d)))
    n_days = int(max(run.until_us // d, r_day.max(initial=0))) - first_day + 1
    if run.previous_us is not None:
        # Only boundaries after the previous build are new for every customer.
        lo = np.maximum(lo, (run.previous_us + g) // d)
    counts = spans_per_day(lo_days=lo, hi_days=hi, first_day=first_day, n_days=n_days) * per_day
    if run.previous_us is not None:
        late_lo, late_hi = _fetch_days(
            con,
            f"SELECT greatest(r.start_us, p.first_us) // {d} AS lo, "
            f"least(r.end_us - 1, p.last_us) // {d} AS hi "
            f"FROM late_ranges r JOIN {POPULATION} p ON p.{run.key} = r.{run.key} "
            f"WHERE greatest(r.start_us, p.first_us) <= least(r.end_us - 1, p.last_us)",
        )
        late = spans_per_day(lo_days=late_lo, hi_days=late_hi, first_day=first_day, n_days=n_days)
        counts += late * per_day
    np.add.at(counts, r_day - first_day, r_count)
    return first_day, counts


def _chunk_targets(con: duckdb.DuckDBPyConnection, run: _Run, chunk: Chunk) -> pa.Table:
    """The (customer, snapshot time) targets of one chunk's days, in the population."""
    g, d = run.layout.grain_us, compute.DAY_US
    lo_us, hi_us = chunk.first_day * d, chunk.end_day * d
    first_boundary = -(-lo_us // g) * g
    last_boundary = ((hi_us - 1) // g) * g
    keys = (
        f"SELECT {run.key}, unnest(generate_series(greatest(first_us, {first_boundary}), "
        f"least(last_us, {last_boundary}), {g})) AS {KEY_TS} FROM {POPULATION} "
        f"WHERE first_us <= {last_boundary} AND last_us >= {first_boundary} AND first_us <= last_us "
        f"UNION ALL SELECT {run.key}, {KEY_TS} FROM refresh_keys "
        f"WHERE {KEY_TS} >= {lo_us} AND {KEY_TS} < {hi_us}"
    )
    where = "" if run.previous_us is None else f"WHERE {_touched(run, 'k')}"
    return con.execute(f"SELECT {run.key}, {KEY_TS} FROM ({keys}) k {where}").to_arrow_table()


def _prune(con: duckdb.DuckDBPyConnection, run: _Run, *, marks: dict[str, int]) -> int:
    """Drop the snapshots of customers whose signup or churn changed that now fall outside the population.

    Returns:
        The number of partitions rewritten.
    """
    key = run.key
    if not table.list_partitions(run.features_dir, run.contract):
        return 0
    ends = end_source(run.contract)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE changed_keys AS "
        f'SELECT {key} FROM "src_{run.layout.entity_source}" '
        f"WHERE ingested_us > {marks.get(run.layout.entity_source, -1)} UNION "
        f"SELECT {key} FROM {POPULATION} WHERE end_ingested_us > {marks.get(ends or '', -1)}"
    )
    if con.execute("SELECT count(*) FROM changed_keys").fetchone() == (0,):
        # Nobody's signup or churn changed: no need to scan the table.
        return 0
    s = f"epoch_us(t.{table.SNAPSHOT_TS})"
    outside = f"t.{key} IN (SELECT {key} FROM changed_keys) AND ({s} < p.first_us OR {s} >= p.end_us)"
    joined = f"t LEFT JOIN {POPULATION} p ON p.{key} = t.{key}"
    glob = table.table_glob(run.features_dir, run.contract).replace("'", "''")
    days = con.execute(
        f"SELECT DISTINCT strftime(t.{table.SNAPSHOT_TS}, '%Y-%m-%d') "
        f"FROM read_parquet('{glob}', hive_partitioning = false) {joined} WHERE {outside} ORDER BY 1"
    ).fetchall()
    for (day,) in days:
        path = str(table.partition_path(run.features_dir, run.contract, day)).replace("'", "''")
        kept = con.execute(
            f"SELECT t.* FROM read_parquet('{path}', hive_partitioning = false) {joined} "
            f"WHERE NOT coalesce({outside}, false) ORDER BY t.{key}, t.{table.SNAPSHOT_TS}"
        ).to_arrow_table()
        if kept.num_rows:
            table.write_partition(run.features_dir, run.contract, day, kept)
        else:
            table.drop_partition(run.features_dir, run.contract, day)
    return len(days)


def _write_chunks(
    con: duckdb.DuckDBPyConnection, run: _Run, *, present: set[str], created_us: int
) -> tuple[int, int, int]:
    """Compute and write the build's targets chunk by chunk; nothing outlives its chunk.

    Returns:
        Rows computed, partitions written and chunks.
    """
    first_day, counts = _day_counts(con, run)
    chunks = plan_chunks(counts=counts, first_day=first_day, limit_bytes=run.limit_bytes)
    if run.previous_us is None:
        _state_path(run.features_dir, run.contract).unlink(missing_ok=True)
        table.drop_table(run.features_dir, run.contract)
    computed_rows = partitions = 0
    for chunk in chunks:
        targets = _chunk_targets(con, run, chunk)
        computed = compute.compute(con, contract=run.contract, present=present, targets=targets)
        del targets
        rows = to_rows(computed, run.contract, created_us)
        del computed
        computed_rows += rows.num_rows
        full = run.previous_us is None
        partitions += write_snapshots(
            features_dir=run.features_dir, contract=run.contract, rows=rows, replace_all=full
        )
    return computed_rows, partitions, len(chunks)


def _build(
    con: duckdb.DuckDBPyConnection,
    *,
    lake_dir: Path,
    features_dir: Path,
    contract: FeatureContract,
    until_us: int,
    full: bool,
    limit_bytes: int,
) -> BuildReport:
    started = time.perf_counter()
    layout = Layout.of(contract)
    created_us = to_us(datetime.now(tz=UTC))
    present = compute.register_sources(con, lake_dir=lake_dir, contract=contract)
    if layout.entity_source not in present:
        raise ValueError(
            f"the lake at {lake_dir} has no {layout.entity_source} partitions, so there are no "
            f"customers to snapshot: run `churnops ingest` first"
        )
    state = None if full else _read_state(features_dir, contract)
    marks = _watermarks(con, present)
    customers = int(con.execute("SELECT count(*) FROM entity").fetchone()[0])  # type: ignore[index]
    previous = None if state is None else int(state["until_us"])
    run = _Run(
        lake_dir=lake_dir,
        features_dir=features_dir,
        contract=contract,
        layout=layout,
        previous_us=previous,
        until_us=until_us if previous is None else max(until_us, previous),
        limit_bytes=limit_bytes,
    )
    end_mark = register_population(con, lake_dir=lake_dir, contract=contract, until_us=run.until_us)
    ends = end_source(contract)
    if ends is not None:
        marks[ends] = end_mark
    _register_refresh_keys(con, run)
    late = pruned = 0
    if state is not None:
        _register_late_ranges(con, contract=contract, present=present, marks=state["watermarks"])
        late = _count_late(con, present=present, marks=state["watermarks"], covered_us=int(state["until_us"]))
        pruned = _prune(con, run, marks=state["watermarks"])
    computed, partitions, chunks = _write_chunks(con, run, present=present, created_us=created_us)
    _write_state(
        features_dir,
        contract,
        {"fingerprint": _fingerprint(contract), "until_us": run.until_us, "watermarks": marks},
    )
    return BuildReport(
        until=from_us(run.until_us),
        full=state is None,
        customers=customers,
        snapshots_computed=computed,
        late_records=late,
        partitions_written=partitions + pruned,
        chunks=chunks,
        seconds=time.perf_counter() - started,
    )


def memory_limit_bytes(memory_limit: str | None) -> int:
    """The memory a build may use: the setting when given, else a share of the machine's.

    Args:
        memory_limit: A size such as `4GB`, or None.

    Returns:
        The limit in bytes.
    """
    return parse_size(memory_limit, setting=MEMORY_LIMIT_ENV) if memory_limit else default_memory_limit()


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
    memory_limit: str | None = None,
    spill_dir: Path | None = None,
    engine: str = "duckdb",
) -> BuildReport:
    """Compute snapshots at the contract's grain for the contract's population up to `until`.

    The rows are computed and written in chunks of whole days sized to the memory limit, so a
    build's memory does not grow with its grid; DuckDB spills to `spill_dir` beyond the limit.

    Args:
        lake_dir: The lake's root folder (`<lake>/<source>/date=YYYY-MM-DD/data.parquet`).
        features_dir: Where the offline table and the build state live.
        contract: The feature contract (names, windows, filters, defaults, grain, population).
        until: Build boundaries up to the latest one at or before this time (default: now).
            A naive datetime is taken as UTC.
        full: Recompute every snapshot instead of only new and late-touched ones.
        memory_limit: The memory the build may use, e.g. `4GB` (default: a quarter of the
            machine's, `churnops.storage.duck.default_memory_limit`).
        spill_dir: Where DuckDB spills what does not fit (default: `<features_dir>/.spill`).
        engine: `duckdb` (in process) or `spark` (`features.spark_engine`; always a full build).

    Returns:
        What the build did.

    Raises:
        ValueError: When the lake has no entity (customers) partitions yet.
        BuildMemoryError: When one day's snapshots alone need more than the limit, or DuckDB
            runs out of memory and spill space.
        MemorySettingError: When `memory_limit` is not a size.
    """
    if engine != "duckdb":
        return _build_elsewhere(engine, lake_dir, features_dir, contract, until)
    layout = Layout.of(contract)
    until_us = (to_us(until or datetime.now(tz=UTC)) // layout.grain_us) * layout.grain_us
    limit = memory_limit_bytes(memory_limit)
    spill = spill_dir or features_dir / SPILL_DIR
    spill.mkdir(parents=True, exist_ok=True)
    # DuckDB gets part of the limit (the chunk's Arrow copies live outside it), and never less
    # than it needs to hold the sources' scans at all.
    duck_mib = max(DUCKDB_FLOOR_MIB, limit * 3 // 5 // 2**20)
    with duckdb_connection(memory_limit=f"{duck_mib}MiB", temp_directory=spill) as con:
        try:
            return _build(
                con,
                lake_dir=lake_dir,
                features_dir=features_dir,
                contract=contract,
                until_us=until_us,
                full=full,
                limit_bytes=limit,
            )
        except duckdb.OutOfMemoryException as exc:
            raise BuildMemoryError(
                f"the build ran out of memory under the limit of {mib(limit)} and could not spill "
                f"enough to {spill} ({exc}): set {MEMORY_LIMIT_ENV} (or `churnops features build "
                "--memory-limit`) higher, or free disk space there"
            ) from exc
