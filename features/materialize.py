"""Refresh: every customer's snapshot as of a time, into the offline table and the online store.

The offline table keeps its daily grain (the build brings it up to the latest boundary at or
before `at`) and gains one refresh snapshot per customer at `at`; the online store receives
exactly those rows, so offline and online agree at every refresh time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from churnops.contracts.feature_contract import FeatureContract
from churnops.features import compute, table
from churnops.features.build import BuildReport, build_features, to_rows, write_snapshots
from churnops.features.compute import KEY_TS, Layout
from churnops.features.online import write_online
from churnops.features.population import POPULATION, register_population
from churnops.storage.duck import duckdb_connection
from churnops.storage.times import to_us

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass(frozen=True)
class MaterializeReport:
    """What a refresh did.

    Attributes:
        at: The refresh time (whole seconds, UTC).
        build: The build that brought the daily grid up to date first.
        customers: Customers whose snapshot was computed and loaded.
        compute_seconds: Time to compute and append the refresh snapshots.
        online_seconds: Time to load the online store.
        seconds: Total wall time.
    """

    at: datetime
    build: BuildReport
    customers: int
    compute_seconds: float
    online_seconds: float
    seconds: float


def refresh_time(at: datetime | None) -> datetime:
    """The refresh time: `at` (naive is UTC) or now, truncated to whole seconds.

    Feast's online store keeps event times in whole seconds, so a refresh snapshot is taken on
    a whole second to stay comparable offline and online.
    """
    value = at or datetime.now(tz=UTC)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=0)


def snapshot_rows_at(
    *, lake_dir: Path, features_dir: Path, contract: FeatureContract, at: datetime
) -> pa.Table:
    """Every customer's snapshot at `at`: those in the contract's population then (signed up, not churned).

    Between boundaries the snapshot is computed from the lake with the single-time plan
    (`compute.snapshot_sql`), reading only each source's lookback (`compute.lookbacks`: 90 days
    of usage events for `days_since_last_event`, 30 of tickets, all of billing for `plan_type`),
    and appended to the offline table.

    Args:
        lake_dir: The lake.
        features_dir: The features folder.
        contract: The feature contract.
        at: The snapshot time (UTC).

    Returns:
        Rows in the offline table's schema, sorted by customer.
    """
    layout = Layout.of(contract)
    at_us = to_us(at)
    if at_us % layout.grain_us == 0:
        # A boundary: the build just wrote it.
        frame = table.read_table(features_dir=features_dir, contract=contract, start=at, end=at)
        return pa.Table.from_pandas(frame, schema=table.table_schema(contract), preserve_index=False)
    created_us = to_us(datetime.now(tz=UTC))
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=lake_dir, contract=contract, snapshots_from_us=at_us)
        register_population(con, lake_dir=lake_dir, contract=contract, until_us=at_us)
        targets = con.execute(
            f'SELECT "{layout.key}", CAST({at_us} AS BIGINT) AS {KEY_TS} FROM {POPULATION} '
            f"WHERE first_us <= {at_us} AND end_us > {at_us}"
        ).to_arrow_table()
        computed = compute.compute(con, contract=contract, present=present, targets=targets)
    rows = to_rows(computed, contract, created_us)
    write_snapshots(features_dir=features_dir, contract=contract, rows=rows, replace_all=False)
    return rows.sort_by([(layout.key, "ascending")])


def refresh_customers(
    *,
    store: FeatureStore,
    lake_dir: Path,
    features_dir: Path,
    contract: FeatureContract,
    customer_ids: list[str],
    at: datetime | None = None,
) -> int:
    """Recompute some customers' snapshot at `at` from the lake; append it offline and load it online.

    What `materialize` does for every customer, for a few: the stream calls it with the customers
    a micro-batch touched, so their served features follow their events within seconds, and the
    offline table holds the same rows (parity at `at`). Repeating it at the same `at` writes the
    same values.

    Args:
        store: The Feast store (definitions applied).
        lake_dir: The lake.
        features_dir: The features folder.
        contract: The feature contract.
        customer_ids: The customers to refresh (unknown ones and ones not signed up by `at` are skipped).
        at: The snapshot time (default: now); truncated to whole seconds.

    Returns:
        How many customers were written.
    """
    from churnops.features.naming import view_name

    at = refresh_time(at)
    if not customer_ids:
        return 0
    layout = Layout.of(contract)
    at_us = to_us(at)
    created_us = to_us(datetime.now(tz=UTC))
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=lake_dir, contract=contract, snapshots_from_us=at_us)
        if layout.entity_source not in present:
            return 0
        con.register("wanted", pa.table({layout.key: pa.array(sorted(set(customer_ids)), pa.string())}))
        targets = con.execute(
            f'SELECT e."{layout.key}", CAST({at_us} AS BIGINT) AS {KEY_TS} FROM entity e '
            f'JOIN wanted w ON e."{layout.key}" = w."{layout.key}" WHERE e.first_us <= {at_us} '
            f'ORDER BY e."{layout.key}"'
        ).to_arrow_table()
        if targets.num_rows == 0:
            return 0
        computed = compute.compute(con, contract=contract, present=present, targets=targets)
    rows = to_rows(computed, contract, created_us).sort_by([(layout.key, "ascending")])
    write_snapshots(features_dir=features_dir, contract=contract, rows=rows, replace_all=False)
    return write_online(store=store, view=store.get_feature_view(view_name(contract)), rows=rows)


def materialize(
    *,
    store: FeatureStore,
    lake_dir: Path,
    features_dir: Path,
    contract: FeatureContract,
    at: datetime | None = None,
    memory_limit: str | None = None,
) -> MaterializeReport:
    """Bring the daily grid up to `at`, add every customer's snapshot at `at`, load it online.

    Args:
        store: The Feast store (definitions applied; its source reads `features_dir`).
        lake_dir: The lake.
        features_dir: The features folder (the offline table).
        contract: The feature contract.
        at: The refresh time (default: now); naive is UTC; truncated to whole seconds.
        memory_limit: The memory the build may use (`build.build_features`), e.g. `4GB`.

    Returns:
        What the refresh did.

    Raises:
        ValueError: When the store's source does not read `features_dir`'s table.
    """
    from churnops.features.naming import view_name

    started = time.perf_counter()
    at = refresh_time(at)
    view = store.get_feature_view(view_name(contract))
    expected = table.table_glob(features_dir, contract)
    if view.batch_source is None or view.batch_source.path != expected:  # type: ignore[attr-defined]
        raise ValueError(
            f"the Feast view {view.name} reads {getattr(view.batch_source, 'path', None)}, not {expected}: "
            "open the store with the same home as the features folder and run `churnops features apply`"
        )
    build = build_features(
        lake_dir=lake_dir, features_dir=features_dir, contract=contract, until=at, memory_limit=memory_limit
    )
    computing = time.perf_counter()
    rows = snapshot_rows_at(lake_dir=lake_dir, features_dir=features_dir, contract=contract, at=at)
    loading = time.perf_counter()
    write_online(store=store, view=view, rows=rows, replace=True)
    # Recorded like Feast's own materialize, so `feast materialize-incremental` continues from here.
    store.registry.apply_materialization(view, store.project, at - contract.time.ttl, at)
    done = time.perf_counter()
    return MaterializeReport(
        at=at,
        build=build,
        customers=rows.num_rows,
        compute_seconds=loading - computing,
        online_seconds=done - loading,
        seconds=done - started,
    )


def last_materialized(store: FeatureStore, contract: FeatureContract) -> datetime | None:
    """The end of the view's latest materialization interval, or None when never materialized."""
    from churnops.features.naming import view_name

    intervals = store.get_feature_view(view_name(contract)).materialization_intervals
    if not intervals:
        return None
    end = max(end for _, end in intervals)
    return end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
