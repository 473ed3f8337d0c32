"""Who has a snapshot when: the contract's `population`, as a DuckDB table.

`population(<key>, first_us, last_us, end_us, end_ingested_us)` holds one row per customer:
its first boundary (at or after signup), its last boundary up to a time (the build's `until`,
and strictly before its earliest churn date), the churn date itself (or `NO_END`), and when
the latest churn record of the customer was ingested (-1 without one). A customer is in the
population at time S when `first_us <= S < end_us`, whatever its activity; at boundaries that
is `first_us <= S <= last_us`. A customer who churned before its first boundary has
`last_us < first_us` and no snapshot at all.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from churnops.contracts.feature_contract import FeatureContract
from churnops.features.compute import Layout
from churnops.storage.lake import list_partitions, source_glob

POPULATION = "population"
NO_END = 2**62


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def ends_sql(*, lake_dir: Path, contract: FeatureContract) -> str:
    """Each ended customer's earliest end time and latest ingestion, or an empty relation."""
    key = _q(contract.entity.join_key)
    rule = contract.population.ends_at if contract.population else None
    if rule is None or not list_partitions(lake_dir, rule.source):
        return f"SELECT NULL::VARCHAR AS {key}, 0::BIGINT AS end_us, 0::BIGINT AS ingested_us WHERE false"
    glob = source_glob(lake_dir, rule.source).replace("'", "''")
    column = _q(rule.column)
    # The earliest end counts, as for training's labels: a customer who left once is gone from then on.
    return (
        f"SELECT {key}, min(epoch_us(CAST({column} AS TIMESTAMP))) AS end_us, "
        f"max(epoch_us(ingested_at)) AS ingested_us "
        f"FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false) "
        f"WHERE {key} IS NOT NULL AND {column} IS NOT NULL GROUP BY {key}"
    )


def register_population(
    con: duckdb.DuckDBPyConnection, *, lake_dir: Path, contract: FeatureContract, until_us: int
) -> int:
    """Create the `population` table from the registered `entity` view and the contract's end rule.

    Args:
        con: A connection with the sources registered (`compute.register_sources`).
        lake_dir: The lake's root folder (the end rule's source is read from it).
        contract: The feature contract.
        until_us: The last boundary a build covers; `last_us` never passes it.

    Returns:
        The latest ingestion time of the end rule's source (its watermark), or -1 without rows.
    """
    layout = Layout.of(contract)
    key = _q(layout.key)
    g = layout.grain_us
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {POPULATION} AS "
        f"SELECT e.{key}, e.first_us, "
        f"least({until_us}, coalesce(((n.end_us - 1) // {g}) * {g}, {until_us})) AS last_us, "
        f"coalesce(n.end_us, {NO_END}) AS end_us, coalesce(n.ingested_us, -1) AS end_ingested_us "
        f"FROM entity e LEFT JOIN ({ends_sql(lake_dir=lake_dir, contract=contract)}) n ON n.{key} = e.{key}"
    )
    row = con.execute(f"SELECT max(end_ingested_us) FROM {POPULATION}").fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def end_source(contract: FeatureContract) -> str | None:
    """The source whose dates end customers' snapshots, or None when nothing ends them."""
    rule = contract.population.ends_at if contract.population else None
    return rule.source if rule else None
