"""The offline feature table: Parquet partitions by snapshot day, the file Feast's source reads.

Layout: `<features_dir>/<name>_v<version>/date=YYYY-MM-DD/data.parquet`, one row per
(customer, snapshot time). A partition holds the day's boundary snapshot and any refresh
snapshots taken during that day; it is always rewritten whole and swapped in with a rename.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnops.contracts.feature_contract import (
    DEFAULT_FEATURE_CONTRACT,
    FeatureContract,
    load_feature_contract,
)
from churnops.storage.atomic import write_atomic
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import PARTITION_FILE, PARTITION_PREFIX, day_partitions
from churnops.storage.times import as_utc

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
SNAPSHOT_TS = "snapshot_ts"
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


def table_name(contract: FeatureContract) -> str:
    """The table's folder name, e.g. `customer_profile_v1`."""
    return f"{contract.name}_v{contract.version}"


def table_dir(features_dir: Path, contract: FeatureContract) -> Path:
    """The folder holding the table's partitions."""
    return features_dir / table_name(contract)


def table_glob(features_dir: Path, contract: FeatureContract) -> str:
    """A glob over every partition file, the path Feast's `FileSource` and DuckDB read."""
    return str(table_dir(features_dir, contract) / f"{PARTITION_PREFIX}*" / PARTITION_FILE)


def table_schema(contract: FeatureContract) -> pa.Schema:
    """The Arrow schema of the table: keys, timestamps, then every contract feature in order.

    Args:
        contract: The feature contract.

    Returns:
        The schema every partition file has.
    """
    fields = [
        pa.field(contract.entity.join_key, pa.string(), nullable=False),
        pa.field(EVENT_TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
        pa.field(CREATED_TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
        pa.field(SNAPSHOT_TS, TIMESTAMP_TYPE, nullable=False),
    ]
    fields += [pa.field(f.name, f.types.arrow_type, nullable=False) for f in contract.features]
    return pa.schema(fields)


def partition_path(features_dir: Path, contract: FeatureContract, day: str) -> Path:
    """The file of one partition; `day` is `YYYY-MM-DD`."""
    return table_dir(features_dir, contract) / f"{PARTITION_PREFIX}{day}" / PARTITION_FILE


def list_partitions(features_dir: Path, contract: FeatureContract) -> list[str]:
    """The snapshot days that have a partition file, sorted."""
    return day_partitions(table_dir(features_dir, contract))


def read_partition(features_dir: Path, contract: FeatureContract, day: str) -> pa.Table | None:
    """One partition, or None when it does not exist."""
    path = partition_path(features_dir, contract, day)
    return pq.read_table(path, schema=table_schema(contract)) if path.is_file() else None


def write_partition(features_dir: Path, contract: FeatureContract, day: str, table: pa.Table) -> Path:
    """Replace one partition, atomically (temporary file, then rename).

    Args:
        features_dir: The features folder.
        contract: The feature contract (names the table).
        day: The snapshot day, `YYYY-MM-DD`.
        table: The partition's complete contents, in the table schema.

    Returns:
        The partition file.
    """
    typed = table.cast(table_schema(contract))
    return write_atomic(partition_path(features_dir, contract, day), lambda tmp: pq.write_table(typed, tmp))


def drop_partition(features_dir: Path, contract: FeatureContract, day: str) -> None:
    """Delete one partition (every row it held left the population)."""
    shutil.rmtree(partition_path(features_dir, contract, day).parent, ignore_errors=True)


def drop_table(features_dir: Path, contract: FeatureContract) -> None:
    """Delete every partition of the table (a full rebuild starts from nothing)."""
    shutil.rmtree(table_dir(features_dir, contract), ignore_errors=True)


def read_table(
    *,
    features_dir: Path,
    contract: FeatureContract | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Rows of the offline table, optionally limited to snapshots in [start, end].

    Args:
        features_dir: The features folder.
        contract: The feature contract (default: `customer_profile` v1).
        start: The earliest snapshot time to return, or None.
        end: The latest snapshot time to return, or None.

    Returns:
        The rows sorted by customer and snapshot time; empty (with the table's columns) when
        nothing was built.
    """
    contract = contract or load_feature_contract(DEFAULT_FEATURE_CONTRACT)
    schema = table_schema(contract)
    if not list_partitions(features_dir, contract):
        return schema.empty_table().to_pandas()
    key = contract.entity.join_key
    bounds = [(">=", start), ("<=", end)]
    where = [f"{SNAPSHOT_TS} {op} ?" for op, value in bounds if value is not None]
    params = [as_utc(value) for _, value in bounds if value is not None]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    with duckdb_connection() as con:
        result = con.execute(
            f"SELECT * FROM read_parquet(?, hive_partitioning = false) {clause} "
            f"ORDER BY {key}, {SNAPSHOT_TS}",
            [table_glob(features_dir, contract), *params],
        ).to_arrow_table()
    return result.cast(schema).to_pandas()


def read_latest(*, features_dir: Path, contract: FeatureContract | None = None) -> pd.DataFrame:
    """The latest snapshot of every customer (the drift monitor's "current" frame).

    Args:
        features_dir: The features folder.
        contract: The feature contract (default: `customer_profile` v1).

    Returns:
        One row per customer, sorted by customer, with the table's columns; empty when nothing
        was built.
    """
    contract = contract or load_feature_contract(DEFAULT_FEATURE_CONTRACT)
    schema = table_schema(contract)
    if not list_partitions(features_dir, contract):
        return schema.empty_table().to_pandas()
    key = contract.entity.join_key
    with duckdb_connection() as con:
        result = con.execute(
            f"SELECT * FROM read_parquet(?, hive_partitioning = false) "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {SNAPSHOT_TS} DESC) = 1 "
            f"ORDER BY {key}",
            [table_glob(features_dir, contract)],
        ).to_arrow_table()
    return result.cast(schema).to_pandas()
