"""Snapshot computation in portable SQL, generated from the feature contract.

A snapshot of customer c at time S aggregates c's records whose event time lies in
(S - window, S]. Times are handled as integer microseconds since the epoch, so nothing depends
on the session's time zone. Three equivalent plans compute the window aggregates:

- `grid`: for snapshot times on the contract's grain. Each record falls in the bucket of the
  first boundary at or after it; a window sum at S is a windowed SUM over the buckets in
  (S - window, S]. Distinct calendar days are counted with +1/-1 deltas: a day's records reach
  the contiguous boundaries from its first record's bucket to its last record's bucket plus the
  window, minus one grain.
- `exact`: for any snapshot time (a refresh at 10:37): a range join of targets and records.
- `snapshot`: every target at one and the same time (a refresh at 10:37 of every customer):
  one scan of each source's lookback, grouped by customer, with no per-target join.

Latest-record features (`days_since_last`, `as_of` of a non-entity source) take, in the first
two plans, a running maximum of the record times over the records and targets merged in time
order (what an ASOF join does), and in the third a grouped maximum; an `as_of` value is then
joined on (customer, that time). Sums and means add integers (`Feature.decimals`), so their bits
never depend on the order of the terms.

The SQL is written in DuckDB's dialect but uses only what Spark reads the same way once SQLGlot
transpiles it (`features.spark_engine`): no ASOF JOIN, no QUALIFY, no GROUP BY ALL, no structs;
the one engine-specific expression, a timestamp's epoch microseconds, comes from `epoch_us_sql`.
The entity source (customers) is the source whose `as_of` feature reads the source's own
timestamp column (signup_date): a customer's snapshots start at the first boundary at or after
that time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.feature_contract import Feature, FeatureContract
from churnops.storage.lake import list_partitions, source_glob
from churnops.storage.times import seconds_to_us

DAY_US = 86_400_000_000
WINDOW_AGGREGATIONS = ("count", "count_distinct_days", "sum", "mean")
TARGETS = "targets"
KEY_TS = "s_us"


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Layout:
    """What the contract says about sources, resolved once.

    Attributes:
        key: The entity's join key column.
        entity_source: The source listing the entities (customers).
        entity_start: The entity source's timestamp column (signup_date).
        timestamps: Each source's event-time column.
        grain_us: The snapshot grain.
    """

    key: str
    entity_source: str
    entity_start: str
    timestamps: dict[str, str]
    grain_us: int

    @classmethod
    def of(cls, contract: FeatureContract) -> Layout:
        """Resolve the layout of a contract.

        Args:
            contract: The feature contract.

        Returns:
            The layout.

        Raises:
            ValueError: When no `as_of` feature reads a source's own timestamp (no entity source).
        """
        timestamps = {s.name: s.timestamp for s in contract.sources}
        entity = [
            f for f in contract.features if f.aggregation == "as_of" and f.column == timestamps[f.source]
        ]
        if not entity:
            raise ValueError(
                f"contract {contract.name} v{contract.version}: no as_of feature reads its source's "
                "timestamp column, so no source lists the entities and their start (e.g. tenure_days "
                "from customers.signup_date)"
            )
        return cls(
            key=contract.entity.join_key,
            entity_source=entity[0].source,
            entity_start=entity[0].column or "",
            timestamps=timestamps,
            grain_us=seconds_to_us(contract.time.grain.total_seconds()),
        )


def window_us(feature: Feature) -> int:
    """A windowed feature's window in microseconds."""
    assert feature.window is not None
    return seconds_to_us(feature.window.total_seconds())


def source_windows(contract: FeatureContract) -> dict[str, int]:
    """The widest window of every source's windowed features, in microseconds."""
    widest: dict[str, int] = {}
    for f in contract.features:
        if f.window is not None:
            widest[f.source] = max(widest.get(f.source, 0), window_us(f))
    return widest


def result_schema(contract: FeatureContract) -> pa.Schema:
    """The schema `compute` returns: key, `s_us`, then the features in contract order."""
    fields = [pa.field(contract.entity.join_key, pa.string()), pa.field(KEY_TS, pa.int64())]
    return pa.schema(fields + [pa.field(f.name, f.types.arrow_type) for f in contract.features])


def lookbacks(contract: FeatureContract) -> dict[str, int | None]:
    """How long before a snapshot each source's records can still change it, in microseconds.

    A source read only by windowed features (counts, sums, `days_since_last`) matters for its
    widest window; the entity source and any source with an `as_of` feature (the latest record,
    however old) need their whole history (None).

    Args:
        contract: The feature contract.

    Returns:
        Per source the contract reads: its lookback, or None for all of its history.
    """
    layout = Layout.of(contract)
    widest = source_windows(contract)
    whole = {layout.entity_source} | {f.source for f in contract.features if f.aggregation == "as_of"}
    return {name: None if name in whole else widest.get(name) for name in layout.timestamps}


def epoch_us_sql(column: str, *, dialect: str) -> str:
    """A timestamp or date column as integer microseconds since the epoch, in one engine's SQL.

    A DATE is taken as its midnight in UTC and a zoned timestamp as its instant; naive
    timestamps are read as UTC. Both engines' sessions run in UTC (`storage.duck`,
    `features.spark_engine`), which the casts rely on.

    Args:
        column: The column name (unquoted).
        dialect: `duckdb` or `spark`.

    Returns:
        The SQL expression.

    Raises:
        ValueError: For another dialect.
    """
    functions = {"duckdb": "epoch_us", "spark": "unix_micros"}
    if dialect not in functions:
        raise ValueError(f"no epoch conversion for dialect {dialect!r}; known: {', '.join(functions)}")
    quoted = _q(column) if dialect == "duckdb" else "`" + column.replace("`", "``") + "`"
    return f"{functions[dialect]}(CAST({quoted} AS TIMESTAMP))"


def entity_sql(contract: FeatureContract) -> str:
    """The query behind view `entity`: one row per customer from the entity source's view.

    The latest ingested row of each customer wins (ties on `ingested_us` go to the later start,
    so every engine picks the same row), with `start_us` (the signup time) and `first_us` (the
    first boundary at or after it).

    Args:
        contract: The feature contract.

    Returns:
        The SELECT statement.
    """
    layout = Layout.of(contract)
    g = layout.grain_us
    return (
        f"SELECT *, ((start_us + {g} - 1) // {g}) * {g} AS first_us FROM ("
        f"SELECT *, ts_us AS start_us, row_number() OVER (PARTITION BY {_q(layout.key)} "
        f"ORDER BY ingested_us DESC, ts_us DESC) AS entity_rank "
        f"FROM {_q('src_' + layout.entity_source)}) ranked WHERE entity_rank = 1"
    )


def register_sources(
    con: duckdb.DuckDBPyConnection,
    *,
    lake_dir: Path,
    contract: FeatureContract,
    snapshots_from_us: int | None = None,
) -> set[str]:
    """Load every lake source the contract reads into a temporary table, with the event time as `ts_us`.

    The entity source becomes view `entity`: one row per customer (the latest ingested), with
    `start_us` (the signup time) and `first_us` (the first boundary at or after it).

    Args:
        con: The connection.
        lake_dir: The lake's root folder.
        contract: The feature contract.
        snapshots_from_us: When given, only snapshots at or after this time will be computed
            (a refresh): a source with a bounded lookback (`lookbacks`) yields only the records
            that can reach one (event time at or after this time minus the lookback), a filter
            DuckDB pushes into the Parquet scan so older day partitions are skipped; and each
            source is a view instead of a table, because a refresh's plan scans a source only
            once or twice and a view reads just the columns the plan uses.

    Returns:
        The sources that have at least one partition; a source without partitions has no view
        and its features take their defaults.
    """
    layout = Layout.of(contract)
    reach = lookbacks(contract)
    present: set[str] = set()
    for name, ts_col in layout.timestamps.items():
        if not list_partitions(lake_dir, name):
            continue
        present.add(name)
        glob = source_glob(lake_dir, name).replace("'", "''")
        ts = epoch_us_sql(ts_col, dialect="duckdb")
        lookback = reach.get(name)
        where = (
            f"WHERE {_q(ts_col)} >= make_timestamptz({snapshots_from_us - lookback})"
            if snapshots_from_us is not None and lookback is not None
            else ""
        )
        # A build reads each source once into a temporary table: the grid plan references a
        # source several times, and re-reading hundreds of partition files per reference
        # slows the build down.
        kind = "TABLE" if snapshots_from_us is None else "VIEW"
        con.execute(
            f"CREATE OR REPLACE TEMP {kind} {_q('src_' + name)} AS "
            f"SELECT *, {ts} AS ts_us, {epoch_us_sql('ingested_at', dialect='duckdb')} AS ingested_us "
            f"FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false) {where}"
        )
    if layout.entity_source in present:
        con.execute(f"CREATE OR REPLACE VIEW entity AS {entity_sql(contract)}")
    return present


def _filter(feature: Feature) -> str:
    return f"({feature.filter})" if feature.filter else "TRUE"


def _finish(contract: FeatureContract, present: set[str], aggregates: dict[str, str]) -> str:
    """The SELECT list turning raw aggregates into contract features, with defaults and types."""
    layout = Layout.of(contract)
    out = [f"t.{_q(layout.key)}", f"t.{KEY_TS}"]
    for f in contract.features:
        default = "'" + str(f.default).replace("'", "''") + "'" if f.dtype == "string" else str(f.default)
        cast = f.types.sql
        expr = aggregates.get(f.name) if f.source in present else None
        if f.aggregation == "as_of":
            expr = _as_of_expr(f, layout, present)
        value = f"COALESCE(CAST({expr} AS {cast}), {default})" if expr else f"CAST({default} AS {cast})"
        out.append(f"{value} AS {_q(f.name)}")
    return ", ".join(out)


def _as_of_expr(feature: Feature, layout: Layout, present: set[str]) -> str | None:
    column = feature.column or ""
    if feature.source == layout.entity_source:
        if layout.entity_source not in present:
            return None
        if column == layout.entity_start:
            # Whole days from the entity's start (signup, 00:00 UTC) to S.
            return f"(t.{KEY_TS} - e.start_us) // {DAY_US}"
        return f"e.{_q(column)}"
    latest = f"{_q('asof_' + feature.name)}.val" if feature.source in present else "NULL"
    fallback = f"e.{_q(column)}" if layout.entity_source in present else "NULL"
    return f"COALESCE({latest}, {fallback})"


def _scaled(feature: Feature, column: str) -> str:
    """A value of a sum or mean feature as a whole number of 10^-decimals (`Feature.decimals`)."""
    return f"CAST(round({column} * CAST({10**feature.decimals} AS DOUBLE)) AS BIGINT)"


def _from_scaled(feature: Feature, *, total: str, count: str) -> str:
    """A sum or mean from its integer total and its count of values; NULL (the default) when empty.

    One division, so the result is the double nearest the exact sum or mean on every engine.
    """
    unit = 10**feature.decimals
    scale = unit if feature.aggregation == "sum" else f"{count} * {unit}"
    divisor = f"CAST({scale} AS DOUBLE)"
    return f"CASE WHEN {count} > 0 THEN CAST({total} AS DOUBLE) / {divisor} END"


def _days_since(feature: Feature, *, at: str, last: str) -> str:
    """Whole days from the latest record at `last` to `at`, capped; NULL beyond the window."""
    age = f"({at} - {last})"
    whole_days = f"{age} // {DAY_US}"
    capped = f"least({whole_days}, {feature.cap})" if feature.cap is not None else whole_days
    return f"CASE WHEN {age} < {window_us(feature)} THEN {capped} END"


def _latest_cte(feature: Feature, *, key: str) -> str:
    """The time of each target's latest matching record at or before the target: an ASOF join.

    Records and targets are merged per customer in time order (records first on a tie, since a
    record at S belongs to S) and a running maximum of the record times is read at each target.
    """
    src = _q("src_" + feature.source)
    lower = (
        f" AND ts_us > (SELECT min({KEY_TS}) FROM {TARGETS}) - {window_us(feature)}"
        if feature.aggregation == "days_since_last"
        else ""
    )
    records = (
        f"SELECT {key}, ts_us AS t_us, 0 AS is_target, ts_us AS rec_us FROM {src} "
        f"WHERE ts_us <= (SELECT max({KEY_TS}) FROM {TARGETS}){lower} "
        f"AND {key} IN (SELECT {key} FROM {TARGETS}) AND {_filter(feature)}"
    )
    targets = f"SELECT {key}, {KEY_TS} AS t_us, 1 AS is_target, CAST(NULL AS BIGINT) AS rec_us FROM {TARGETS}"
    running = (
        f"max(rec_us) OVER (PARTITION BY {key} ORDER BY t_us, is_target "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_us"
    )
    return (
        f"{_q('l_' + feature.name)} AS (SELECT {key}, t_us AS {KEY_TS}, last_us FROM ("
        f"SELECT {key}, t_us, is_target, {running} FROM ({records} UNION ALL {targets}) merged"
        f") ordered WHERE is_target = 1)"
    )


def _latest_joins(contract: FeatureContract, present: set[str]) -> tuple[list[str], str, dict[str, str]]:
    """Latest-record features: their CTEs, joins and value expressions.

    Returns:
        The common table expressions, the joins onto `targets t` (the entity first), and per
        `days_since_last` feature its value expression.
    """
    layout = Layout.of(contract)
    key = _q(layout.key)
    ctes: list[str] = []
    joins: list[str] = []
    exprs: dict[str, str] = {}
    if layout.entity_source in present:
        joins.append(f"LEFT JOIN entity e ON e.{key} = t.{key}")
    for f in contract.features:
        latest = f.aggregation in ("days_since_last", "as_of")
        if not latest or f.source not in present or f.source == layout.entity_source:
            continue
        last = _q("l_" + f.name)
        ctes.append(_latest_cte(f, key=key))
        joins.append(f"LEFT JOIN {last} ON {last}.{key} = t.{key} AND {last}.{KEY_TS} = t.{KEY_TS}")
        if f.aggregation == "days_since_last":
            exprs[f.name] = _days_since(f, at=f"t.{KEY_TS}", last=f"{last}.last_us")
            continue
        # Ties on the event time resolve to the greatest value, so a rebuild is deterministic.
        alias = _q("asof_" + f.name)
        joins.append(
            f"LEFT JOIN (SELECT {key}, ts_us, max({_q(f.column or '')}) AS val FROM {_q('src_' + f.source)} "
            f"WHERE {_filter(f)} GROUP BY {key}, ts_us) {alias} "
            f"ON {alias}.{key} = t.{key} AND {alias}.ts_us = {last}.last_us"
        )
    return ctes, " ".join(joins), exprs


def _window_features(contract: FeatureContract, present: set[str]) -> dict[str, list[Feature]]:
    by_source: dict[str, list[Feature]] = {}
    for f in contract.features:
        if f.aggregation in WINDOW_AGGREGATIONS and f.source in present:
            by_source.setdefault(f.source, []).append(f)
    return by_source


def exact_sql(contract: FeatureContract, present: set[str]) -> str:
    """The query computing every feature for the rows of `targets(<key>, s_us)`, at any time.

    Args:
        contract: The feature contract.
        present: The sources with data.

    Returns:
        SQL producing one row per target: key, `s_us`, then the features in contract order.
    """
    layout = Layout.of(contract)
    key = _q(layout.key)
    ctes: list[str] = []
    joins: list[str] = []
    aggregates: dict[str, str] = {}
    widest = source_windows(contract)
    for source, feats in _window_features(contract, present).items():
        cols = []
        for f in feats:
            inside = f"r.ts_us > t.{KEY_TS} - {window_us(f)} AND {_filter(f)}"
            name = _q("a_" + f.name)
            if f.aggregation == "count":
                cols.append(f"count(*) FILTER (WHERE {inside}) AS {name}")
            elif f.aggregation == "count_distinct_days":
                cols.append(f"count(DISTINCT r.ts_us // {DAY_US}) FILTER (WHERE {inside}) AS {name}")
            else:
                column = f"r.{_q(f.column or '')}"
                total, count = _q("s_" + f.name), _q("c_" + f.name)
                cols.append(f"sum({_scaled(f, column)}) FILTER (WHERE {inside}) AS {total}")
                cols.append(f"count({column}) FILTER (WHERE {inside}) AS {count}")
                w = _q("w_" + source)
                aggregates[f.name] = _from_scaled(f, total=f"{w}.{total}", count=f"{w}.{count}")
                continue
            aggregates[f.name] = f"{_q('w_' + source)}.{name}"
        cte = _q("w_" + source)
        ctes.append(
            f"{cte} AS (SELECT t.{key}, t.{KEY_TS}, {', '.join(cols)} FROM {TARGETS} t "
            f"JOIN {_q('src_' + source)} r ON r.{key} = t.{key} AND r.ts_us <= t.{KEY_TS} "
            f"AND r.ts_us > t.{KEY_TS} - {widest[source]} GROUP BY t.{key}, t.{KEY_TS})"
        )
        joins.append(f"LEFT JOIN {cte} ON {cte}.{key} = t.{key} AND {cte}.{KEY_TS} = t.{KEY_TS}")
    latest_ctes, latest_joins, latest = _latest_joins(contract, present)
    ctes += latest_ctes
    aggregates.update(latest)
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    return (
        f"{with_clause}SELECT {_finish(contract, present, aggregates)} FROM {TARGETS} t "
        f"{' '.join(joins)} {latest_joins}"
    )


def snapshot_sql(contract: FeatureContract, present: set[str], *, at_us: int) -> str:
    """The query computing every feature for `targets(<key>, s_us)` that all share one time (a refresh).

    With a single snapshot time the range join of `exact_sql` reduces to one filtered scan per
    source grouped by customer: the window aggregates, the latest record of each
    `days_since_last` feature and, for an `as_of` feature of another source, the latest record
    at or before the time (ties on the time resolve to the greatest value, as in the other
    plans) all come from plain GROUP BYs, with no per-target join.

    Args:
        contract: The feature contract.
        present: The sources with data.
        at_us: The one snapshot time of every target.

    Returns:
        SQL producing one row per target: key, `s_us`, then the features in contract order.
    """
    layout = Layout.of(contract)
    key = _q(layout.key)
    widest = source_windows(contract)
    ctes: list[str] = []
    joins: list[str] = []
    aggregates: dict[str, str] = {}
    by_source: dict[str, list[Feature]] = {}
    for f in contract.features:
        if f.source in present and (
            f.aggregation in WINDOW_AGGREGATIONS or f.aggregation == "days_since_last"
        ):
            by_source.setdefault(f.source, []).append(f)
    for source, feats in by_source.items():
        cte = _q("w_" + source)
        cols = []
        for f in feats:
            inside = f"ts_us > {at_us - window_us(f)} AND {_filter(f)}"
            name = _q("a_" + f.name)
            column = _q(f.column or "")
            if f.aggregation == "count":
                cols.append(f"count(*) FILTER (WHERE {inside}) AS {name}")
            elif f.aggregation == "count_distinct_days":
                cols.append(f"count(DISTINCT ts_us // {DAY_US}) FILTER (WHERE {inside}) AS {name}")
            elif f.aggregation == "days_since_last":
                cols.append(f"max(ts_us) FILTER (WHERE {inside}) AS {name}")
                aggregates[f.name] = _days_since(f, at=f"t.{KEY_TS}", last=f"{cte}.{name}")
                continue
            else:
                total, count = _q("s_" + f.name), _q("c_" + f.name)
                cols.append(f"sum({_scaled(f, column)}) FILTER (WHERE {inside}) AS {total}")
                cols.append(f"count({column}) FILTER (WHERE {inside}) AS {count}")
                aggregates[f.name] = _from_scaled(f, total=f"{cte}.{total}", count=f"{cte}.{count}")
                continue
            aggregates[f.name] = f"{cte}.{name}"
        ctes.append(
            f"{cte} AS (SELECT {key}, {', '.join(cols)} FROM {_q('src_' + source)} "
            f"WHERE ts_us <= {at_us} AND ts_us > {at_us - widest[source]} GROUP BY {key})"
        )
        joins.append(f"LEFT JOIN {cte} ON {cte}.{key} = t.{key}")
    if layout.entity_source in present:
        joins.append(f"LEFT JOIN entity e ON e.{key} = t.{key}")
    for f in contract.features:
        if f.aggregation != "as_of" or f.source not in present or f.source == layout.entity_source:
            continue
        alias = _q("asof_" + f.name)
        src = _q("src_" + f.source)
        last = (
            f"(SELECT {key}, max(ts_us) AS last_us FROM {src} WHERE ts_us <= {at_us} AND {_filter(f)} "
            f"GROUP BY {key}) l"
        )
        joins.append(
            f"LEFT JOIN (SELECT v.{key}, max(v.{_q(f.column or '')}) AS val FROM {src} v JOIN {last} "
            f"ON l.{key} = v.{key} AND l.last_us = v.ts_us WHERE {_filter(f)} GROUP BY v.{key}) {alias} "
            f"ON {alias}.{key} = t.{key}"
        )
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    return f"{with_clause}SELECT {_finish(contract, present, aggregates)} FROM {TARGETS} t {' '.join(joins)}"


@dataclass
class _Grid:
    """The pieces of the grid plan's query, collected source by source.

    Attributes:
        key: The quoted join key.
        grain_us: The snapshot grain.
        bucket: The expression of a record's bucket: the first boundary at or after `ts_us`.
        ctes: The common table expressions, in the order the query declares them.
        key_sets: The (key, time) sets whose union is the windowed rows `k` (targets first).
        joins: The joins of each bucket or delta table onto those rows.
        windowed: The window sums computed over those rows.
        aggregates: Per feature, the expression of its raw value.
    """

    key: str
    grain_us: int
    bucket: str
    ctes: list[str] = field(default_factory=list)
    key_sets: list[str] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    windowed: list[str] = field(default_factory=list)
    aggregates: dict[str, str] = field(default_factory=dict)


def _grid_distinct_days(grid: _Grid, feature: Feature, *, src: str, recent: str) -> None:
    """Add a `count_distinct_days` feature: +1 at a day's first bucket, -1 once its window has passed."""
    key, name = grid.key, feature.name
    deltas = _q("d_" + name)
    days = (
        f"(SELECT {key}, min({grid.bucket}) AS lo, max({grid.bucket}) + {window_us(feature)} AS hi "
        f"FROM {src} WHERE {recent} AND {_filter(feature)} GROUP BY {key}, ts_us // {DAY_US})"
    )
    grid.ctes.append(
        f"{deltas} AS (SELECT {key}, t_us, sum(delta) AS delta FROM ("
        f"SELECT {key}, lo AS t_us, 1 AS delta FROM {days} UNION ALL "
        f"SELECT {key}, hi AS t_us, -1 AS delta FROM {days}) bounds GROUP BY {key}, t_us)"
    )
    grid.key_sets.append(f"SELECT {key}, t_us FROM {deltas}")
    grid.joins.append(f"LEFT JOIN {deltas} ON {deltas}.{key} = k.{key} AND {deltas}.t_us = k.t_us")
    grid.windowed.append(
        f"sum({deltas}.delta) OVER (PARTITION BY k.{key} ORDER BY k.t_us "
        f"RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {_q('n_' + name)}"
    )
    grid.aggregates[name] = f"k.{_q('n_' + name)}"


def _grid_bucket_sums(grid: _Grid, feature: Feature, *, source: str) -> list[str]:
    """Add a count, sum or mean feature: per-bucket counts and sums, then window sums over buckets.

    Returns:
        The feature's columns of the source's bucket table.
    """
    key, name = grid.key, feature.name
    frame = (
        f"OVER (PARTITION BY k.{key} ORDER BY k.t_us "
        f"RANGE BETWEEN {window_us(feature) - grid.grain_us} PRECEDING AND CURRENT ROW)"
    )
    b = _q("b_" + source)
    cols = [f"count(*) FILTER (WHERE {_filter(feature)}) AS {_q('n_' + name)}"]
    grid.windowed.append(f"sum({b}.{_q('n_' + name)}) {frame} AS {_q('n_' + name)}")
    if feature.aggregation not in ("sum", "mean"):
        grid.aggregates[name] = f"k.{_q('n_' + name)}"
        return cols
    column = _q(feature.column or "")
    cols.append(f"count({column}) FILTER (WHERE {_filter(feature)}) AS {_q('c_' + name)}")
    cols.append(f"sum({_scaled(feature, column)}) FILTER (WHERE {_filter(feature)}) AS {_q('s_' + name)}")
    grid.windowed.append(f"sum({b}.{_q('c_' + name)}) {frame} AS {_q('c_' + name)}")
    grid.windowed.append(f"sum({b}.{_q('s_' + name)}) {frame} AS {_q('s_' + name)}")
    grid.aggregates[name] = _from_scaled(feature, total=f"k.{_q('s_' + name)}", count=f"k.{_q('c_' + name)}")
    return cols


def _grid_source(grid: _Grid, source: str, *, features: list[Feature], lower_us: int) -> None:
    """Add one source's windowed features: its distinct-day deltas and its bucket table."""
    key = grid.key
    src = _q("src_" + source)
    # Only the targets' customers and times: an incremental build touches a few customers.
    recent = (
        f"ts_us >= {lower_us} AND ts_us <= (SELECT max({KEY_TS}) FROM {TARGETS}) "
        f"AND {key} IN (SELECT {key} FROM {TARGETS})"
    )
    cols: list[str] = []
    for f in features:
        if f.aggregation == "count_distinct_days":
            _grid_distinct_days(grid, f, src=src, recent=recent)
        else:
            cols += _grid_bucket_sums(grid, f, source=source)
    if cols:
        b = _q("b_" + source)
        grid.ctes.append(
            f"{b} AS (SELECT {key}, {grid.bucket} AS t_us, {', '.join(cols)} FROM {src} "
            f"WHERE {recent} GROUP BY {key}, {grid.bucket})"
        )
        grid.key_sets.append(f"SELECT {key}, t_us FROM {b}")
        grid.joins.append(f"LEFT JOIN {b} ON {b}.{key} = k.{key} AND {b}.t_us = k.t_us")


def grid_sql(contract: FeatureContract, present: set[str], *, lower_us: int) -> str:
    """The query computing every feature for `targets(<key>, s_us)` whose times are on the grain.

    Args:
        contract: The feature contract.
        present: The sources with data.
        lower_us: Records before this time cannot reach any target's window (the earliest
            target minus the widest window, minus a day, on a day boundary); they are skipped.

    Returns:
        SQL producing one row per target: key, `s_us`, then the features in contract order.
    """
    layout = Layout.of(contract)
    key = _q(layout.key)
    g = layout.grain_us
    grid = _Grid(key=key, grain_us=g, bucket=f"((ts_us + {g} - 1) // {g}) * {g}")
    grid.key_sets.append(f"SELECT {key}, {KEY_TS} AS t_us FROM {TARGETS}")
    for source, feats in _window_features(contract, present).items():
        _grid_source(grid, source, features=feats, lower_us=lower_us)
    latest_ctes, latest_joins, latest = _latest_joins(contract, present)
    grid.ctes += latest_ctes
    grid.aggregates.update(latest)
    window_join = ""
    if grid.windowed:
        grid.ctes.append(f"keys AS ({' UNION '.join(grid.key_sets)})")
        grid.ctes.append(
            f"k AS (SELECT k.{key}, k.t_us, {', '.join(grid.windowed)} FROM keys k {' '.join(grid.joins)})"
        )
        window_join = f"LEFT JOIN k ON k.{key} = t.{key} AND k.t_us = t.{KEY_TS}"
    with_clause = f"WITH {', '.join(grid.ctes)} " if grid.ctes else ""
    return (
        f"{with_clause}SELECT {_finish(contract, present, grid.aggregates)} FROM {TARGETS} t "
        f"{window_join} {latest_joins}"
    )


def compute(
    con: duckdb.DuckDBPyConnection,
    *,
    contract: FeatureContract,
    present: set[str],
    targets: pa.Table,
) -> pa.Table:
    """Compute every feature for the given (customer, snapshot time) targets.

    Targets on the grain take the windowed plan; the others the single-time plan when they all
    share one time (a refresh), else the range-join plan.

    Args:
        con: A connection with the sources registered (`register_sources`).
        contract: The feature contract.
        present: The sources with data.
        targets: Columns `<key>` (string) and `s_us` (int64 microseconds).

    Returns:
        One row per target, sorted by `s_us` then key: key, `s_us`, the features in contract order.
    """
    layout = Layout.of(contract)
    g = layout.grain_us
    widest = max(source_windows(contract).values(), default=0)
    con.register("all_targets", targets)
    parts = []
    try:
        for on_grid in (True, False):
            sign = "=" if on_grid else "<>"
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {TARGETS} AS SELECT {_q(layout.key)}, {KEY_TS} "
                f"FROM all_targets WHERE {KEY_TS} % {g} {sign} 0"
            )
            first = con.execute(f"SELECT min({KEY_TS}) FROM {TARGETS}").fetchone()
            if first is None or first[0] is None:
                continue
            lower = ((first[0] - widest) // DAY_US - 1) * DAY_US
            if on_grid:
                sql = grid_sql(contract, present, lower_us=lower)
            elif con.execute(f"SELECT max({KEY_TS}) = min({KEY_TS}) FROM {TARGETS}").fetchone() == (True,):
                sql = snapshot_sql(contract, present, at_us=first[0])
            else:
                sql = exact_sql(contract, present)
            parts.append(con.execute(f"{sql} ORDER BY t.{KEY_TS}, t.{_q(layout.key)}").to_arrow_table())
    finally:
        con.unregister("all_targets")
    if not parts:
        return result_schema(contract).empty_table()
    table = pa.concat_tables([p.cast(result_schema(contract)) for p in parts])
    return table.take(pc.sort_indices(table, [(KEY_TS, "ascending"), (layout.key, "ascending")]))
