"""Build the offline feature table on Spark: the contract's SQL, transpiled, on a Spark session.

The query is the one DuckDB runs (`features.compute.grid_sql` for the daily boundaries,
`exact_sql` for refresh snapshots kept from earlier `materialize` runs), translated by SQLGlot
from DuckDB's dialect to Spark's after `check_portable` has refused anything Spark would read
differently. Spark reads the lake's Parquet itself, computes every snapshot, and writes one
Parquet file per snapshot day; those files are then renamed into the table's layout
(`<table>/date=YYYY-MM-DD/data.parquet`, `features.table`), so Feast and DuckDB read a Spark-built
table unchanged. The data folders must be visible at the same paths to this process, the
Spark driver and its executors (a local disk for `local[*]`, a shared mount on a cluster).

A Spark build always recomputes every snapshot (the cluster is there for it); it records the
same build state as a DuckDB build, so later incremental DuckDB builds continue from it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from churnops.contracts.feature_contract import FeatureContract
from churnops.errors import REFUSED, ChurnopsError
from churnops.features import build, compute, population, table
from churnops.features.compute import KEY_TS, TARGETS, Layout
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import PARTITION_FILE, PARTITION_PREFIX, list_partitions, source_glob
from churnops.storage.modes import PRIVATE_FILE_MODE
from churnops.storage.times import from_us, to_us

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# What every session running the build must have: UTC (DATE and naive timestamps become UTC
# instants, and snapshot days are UTC days) and Parquet timestamps as microseconds with the
# UTC flag, the type `features.table` writes (Spark's default, INT96, reads back as nanoseconds).
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
# Listing thousands of day partitions on the driver is several times faster than a Spark job
# per listing (measured with Feast's Spark offline store over the feature table).
LISTING_CONF = {"spark.sql.sources.parallelPartitionDiscovery.threshold": "100000"}


class NotPortableError(ChurnopsError):
    """Generated SQL holds a construct Spark would read differently or not at all (exit 2)."""


class SparkBuildError(ChurnopsError):
    """Spark's output does not have the table's layout (exit 1)."""

    exit_code = REFUSED


def check_portable(sql: str) -> exp.Expression:
    """Parse DuckDB SQL and refuse what SQLGlot would pass to Spark with another meaning.

    SQLGlot copies an ASOF JOIN through as a plain join and keeps unknown functions verbatim;
    QUALIFY, GROUP BY ALL and struct literals have no faithful one-to-one Spark form.

    Args:
        sql: A query in DuckDB's dialect (a contract filter is part of it).

    Returns:
        The parsed query.

    Raises:
        NotPortableError: Naming each offending construct.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError as exc:
        raise NotPortableError(f"the generated SQL does not parse as DuckDB SQL: {exc}") from exc
    problems: list[str] = []
    for join in tree.find_all(exp.Join):
        method = str(join.args.get("method") or "").upper()
        if method:
            problems.append(f"{method} JOIN (Spark has no {method.lower()} join; SQLGlot drops the word)")
    if any(True for _ in tree.find_all(exp.Qualify)):
        problems.append("QUALIFY (filter a row_number() in a subquery instead)")
    for group in tree.find_all(exp.Group):
        if group.args.get("all"):
            problems.append("GROUP BY ALL (name the grouping columns)")
    for node in tree.find_all(exp.Struct):
        problems.append(f"struct literal {node.sql(dialect='duckdb')[:60]}")
    for func in tree.find_all(exp.Anonymous):
        problems.append(f"function {func.name}() (unknown to SQLGlot, so it would reach Spark untranslated)")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise NotPortableError(
            "the feature SQL cannot run on Spark as written: "
            + "; ".join(unique)
            + ". Contract filters and columns must use portable SQL (comparisons, IN, LIKE, CASE, "
            "arithmetic and functions both DuckDB and Spark know)."
        )
    return tree


def to_spark_sql(sql: str) -> str:
    """Check DuckDB SQL (`check_portable`) and translate it to Spark SQL with SQLGlot.

    Args:
        sql: A query in DuckDB's dialect.

    Returns:
        The same query in Spark's dialect.

    Raises:
        NotPortableError: When the query holds a construct Spark would read differently, or
            SQLGlot reports one it cannot translate.
    """
    tree = check_portable(sql)
    try:
        return tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise NotPortableError(f"SQLGlot cannot translate the feature SQL to Spark: {exc}") from exc


def spark_session(*, app_name: str = "churnops-features") -> SparkSession:
    """The active Spark session, or a new one, with the settings the build relies on.

    The master comes from where the program runs: `spark-submit --master ...` sets it, a
    `SPARK_REMOTE` (Spark Connect) address selects a remote session, and a plain run gets
    Spark's default, `local[*]`. Python workers use this interpreter unless
    `PYSPARK_PYTHON` says otherwise (the build itself runs no Python on the executors).

    Args:
        app_name: The application name shown in Spark's UI.

    Returns:
        The session.

    Raises:
        ChurnopsError: When pyspark is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ChurnopsError(
            "the Spark engine needs pyspark and Java 17+: pip install 'churnops[spark]' (or run with "
            "--engine duckdb)"
        ) from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in {**SESSION_CONF, **LISTING_CONF}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    for key, value in SESSION_CONF.items():
        session.conf.set(key, value)
    return session


def _register_sources(spark: SparkSession, *, lake_dir: Path, contract: FeatureContract) -> set[str]:
    """Views `src_<source>` (with `ts_us`, `ingested_us`) over the lake, and view `entity`."""
    layout = Layout.of(contract)
    present: set[str] = set()
    for name, ts_col in layout.timestamps.items():
        if not list_partitions(lake_dir, name):
            continue
        present.add(name)
        # The glob names the data files only: hidden temporaries of an unfinished ingest and
        # the `date=` folder names (no partition column is added) stay out, as in DuckDB.
        raw = spark.read.option("mergeSchema", "true").parquet(source_glob(lake_dir, name))
        raw.createOrReplaceTempView(f"raw_{name}")
        ts = compute.epoch_us_sql(ts_col, dialect="spark")
        ingested = compute.epoch_us_sql("ingested_at", dialect="spark")
        frame = spark.sql(f"SELECT *, {ts} AS ts_us, {ingested} AS ingested_us FROM `raw_{name}`")
        # The grid plan reads each source several times; read the Parquet once.
        frame.cache().createOrReplaceTempView(f"src_{name}")
    if layout.entity_source in present:
        # Every target and the grid plan start from it: compute it once.
        spark.sql(to_spark_sql(compute.entity_sql(contract))).cache().createOrReplaceTempView("entity")
    return present


def _population_ends(spark: SparkSession, *, lake_dir: Path, contract: FeatureContract) -> None:
    """`population_ends(<key>, end_us)`: each ended customer's earliest end (the contract's rule).

    The end rule's source is small (one row per ended customer), so DuckDB reads it with the same
    SQL as the in-process build and Spark gets the result.
    """
    layout = Layout.of(contract)
    with duckdb_connection() as con:
        sql = population.ends_sql(lake_dir=lake_dir, contract=contract)
        ends = con.execute(f"SELECT * EXCLUDE (ingested_us) FROM ({sql})").to_arrow_table()
    schema = f"`{layout.key}` STRING, end_us BIGINT"
    rows = [tuple(r.values()) for r in ends.to_pylist()]
    spark.createDataFrame(rows, schema=schema).createOrReplaceTempView("population_ends")


def _targets(
    spark: SparkSession, *, lake_dir: Path, features_dir: Path, contract: FeatureContract, until_us: int
) -> tuple[DataFrame, DataFrame | None]:
    """Every boundary of the population up to `until`, and refresh snapshots already in the table.

    The population is the in-process build's (`features.population`): from each customer's first
    boundary to the last one strictly before its earliest end.
    """
    layout = Layout.of(contract)
    key = f"`{layout.key}`"
    g = layout.grain_us
    _population_ends(spark, lake_dir=lake_dir, contract=contract)
    until = f"CAST({until_us} AS BIGINT)"
    last = f"least({until}, coalesce(div(n.end_us - 1, {g}) * {g}, {until}))"
    # Cached: the grid plan reads its targets in several places.
    grid = spark.sql(
        f"SELECT e.{key}, explode(sequence(e.first_us, {last}, CAST({g} AS BIGINT))) AS {KEY_TS} "
        f"FROM entity e LEFT JOIN population_ends n ON n.{key} = e.{key} WHERE e.first_us <= {last}"
    ).cache()
    if not table.list_partitions(features_dir, contract):
        return grid, None
    spark.read.parquet(table.table_glob(features_dir, contract)).createOrReplaceTempView("refresh_source")
    # Materialized refresh times are off the grain; recomputing them keeps the table whole.
    refresh = spark.sql(
        f"SELECT DISTINCT o.{key}, o.{KEY_TS} FROM "
        f"(SELECT {key}, unix_micros({table.SNAPSHOT_TS}) AS {KEY_TS} FROM refresh_source) o "
        f"JOIN entity e ON e.{key} = o.{key} LEFT JOIN population_ends n ON n.{key} = o.{key} "
        f"WHERE o.{KEY_TS} % {g} <> 0 AND o.{KEY_TS} >= e.first_us "
        f"AND (n.end_us IS NULL OR o.{KEY_TS} < n.end_us)"
    )
    return grid, refresh


def _snapshots(
    spark: SparkSession,
    *,
    contract: FeatureContract,
    present: set[str],
    grid: DataFrame,
    refresh: DataFrame | None,
) -> DataFrame:
    """Every feature for the grid targets (grid plan) and the refresh targets (exact plan)."""
    widest = max(compute.source_windows(contract).values(), default=0)
    grid.createOrReplaceTempView(TARGETS)
    first = grid.agg({KEY_TS: "min"}).collect()[0][0]
    lower = ((int(first) - widest) // compute.DAY_US - 1) * compute.DAY_US if first is not None else 0
    # A query's views are resolved when it is created, so `targets` can be replaced afterwards.
    result = spark.sql(to_spark_sql(compute.grid_sql(contract, present, lower_us=lower)))
    if refresh is not None:
        refresh.createOrReplaceTempView(TARGETS)
        result = result.unionByName(spark.sql(to_spark_sql(compute.exact_sql(contract, present))))
    return result


def _spark_type(sql_type: str) -> str:
    return exp.DataType.build(sql_type, dialect="duckdb").sql(dialect="spark")


def _rows(computed: DataFrame, *, contract: FeatureContract, created_us: int) -> DataFrame:
    """Computed features → the table's columns in its order, plus the partition column `date`."""
    key = f"`{contract.entity.join_key}`"
    ts = f"timestamp_micros({KEY_TS})"
    columns = [
        key,
        f"{ts} AS {table.EVENT_TIMESTAMP}",
        f"timestamp_micros(CAST({created_us} AS BIGINT)) AS {table.CREATED_TIMESTAMP}",
        f"{ts} AS {table.SNAPSHOT_TS}",
        *(f"CAST(`{f.name}` AS {_spark_type(f.types.sql)}) AS `{f.name}`" for f in contract.features),
        f"date_format({ts}, 'yyyy-MM-dd') AS date",
    ]
    return computed.selectExpr(*columns)


def _write_days(rows: DataFrame, *, staging: Path, key: str) -> dict[str, Path]:
    """Write one Parquet file per snapshot day under `staging`, rows sorted by (key, snapshot_ts).

    Returns:
        The file of each day.

    Raises:
        SparkBuildError: When Spark wrote other than one file for a day.
    """
    (
        rows.repartition("date")
        .sortWithinPartitions("date", key, table.SNAPSHOT_TS)
        .write.mode("overwrite")
        .partitionBy("date")
        .parquet(f"file://{staging}")
    )
    files: dict[str, Path] = {}
    for folder in sorted(staging.glob(f"{PARTITION_PREFIX}*")):
        parts = sorted(folder.glob("part-*.parquet"))
        if len(parts) != 1:
            raise SparkBuildError(
                f"Spark wrote {len(parts)} files for snapshot day {folder.name} in {staging}; the table "
                f"needs exactly one {PARTITION_FILE} per day"
            )
        files[folder.name.removeprefix(PARTITION_PREFIX)] = parts[0]
    return files


def _install(files: dict[str, Path], *, features_dir: Path, contract: FeatureContract) -> None:
    """Replace the table by the written day files: each is renamed into its partition."""
    build._state_path(features_dir, contract).unlink(missing_ok=True)
    table.drop_table(features_dir, contract)
    for day, path in sorted(files.items()):
        target = table.partition_path(features_dir, contract, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_FILE_MODE)
        os.replace(path, target)


def _watermarks(spark: SparkSession, present: set[str]) -> dict[str, int]:
    marks = {}
    for source in sorted(present):
        value = spark.sql(f"SELECT max(ingested_us) FROM `src_{source}`").collect()[0][0]
        marks[source] = int(value) if value is not None else -1
    return marks


def _release(spark: SparkSession, present: set[str]) -> None:
    """Drop the build's cached data and temporary views (the session may serve other work)."""
    if spark.catalog.tableExists("entity"):
        spark.table("entity").unpersist()
    for name in sorted(present):
        spark.table(f"src_{name}").unpersist()
        for view in (f"src_{name}", f"raw_{name}"):
            spark.catalog.dropTempView(view)
    for view in ("entity", TARGETS):
        spark.catalog.dropTempView(view)


def build_with_spark(
    *,
    lake_dir: Path,
    features_dir: Path,
    contract: FeatureContract,
    until: datetime | None = None,
    spark: SparkSession | None = None,
) -> build.BuildReport:
    """Compute every snapshot from each customer's signup to `until` on Spark, and replace the table.

    Args:
        lake_dir: The lake's root folder.
        features_dir: Where the offline table and the build state live.
        contract: The feature contract.
        until: Build boundaries up to the latest one at or before this time (default: now).
            A naive datetime is taken as UTC.
        spark: The session to run on (default: `spark_session()`).

    Returns:
        What the build did (always a full build).

    Raises:
        ValueError: When the lake has no entity (customers) partitions yet.
        NotPortableError: When the contract's SQL holds a construct Spark would misread.
    """
    started = time.perf_counter()
    layout = Layout.of(contract)
    if layout.entity_source not in {name for name in layout.timestamps if list_partitions(lake_dir, name)}:
        raise ValueError(
            f"the lake at {lake_dir} has no {layout.entity_source} partitions, so there are no "
            f"customers to snapshot: run `churnops ingest` first"
        )
    spark = spark or spark_session()
    created_us = to_us(datetime.now(tz=UTC))
    until_us = (to_us(until or datetime.now(tz=UTC)) // layout.grain_us) * layout.grain_us
    staging = features_dir.resolve() / f".{table.table_name(contract)}.spark-{uuid.uuid4().hex[:12]}.tmp"
    present = _register_sources(spark, lake_dir=lake_dir, contract=contract)
    grid = None
    try:
        grid, refresh = _targets(
            spark, lake_dir=lake_dir, features_dir=features_dir, contract=contract, until_us=until_us
        )
        computed = _snapshots(spark, contract=contract, present=present, grid=grid, refresh=refresh)
        rows = _rows(computed, contract=contract, created_us=created_us)
        files = _write_days(rows, staging=staging, key=layout.key)
        snapshots = sum(pq.ParquetFile(path).metadata.num_rows for path in files.values())
        marks = _watermarks(spark, present)
        customers = spark.table("entity").count()
        _install(files, features_dir=features_dir, contract=contract)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if grid is not None:
            grid.unpersist()
        _release(spark, present)
    build._write_state(
        features_dir,
        contract,
        {"fingerprint": build._fingerprint(contract), "until_us": until_us, "watermarks": marks},
    )
    return build.BuildReport(
        until=from_us(until_us),
        full=True,
        customers=customers,
        snapshots_computed=snapshots,
        late_records=0,
        partitions_written=len(files),
        seconds=time.perf_counter() - started,
        chunks=1,
    )
