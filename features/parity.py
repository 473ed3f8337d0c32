"""Offline/online parity: the online store's values against `get_historical_features` at one time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.features.online import read_online
from churnops.features.table import EVENT_TIMESTAMP, SNAPSHOT_TS, list_partitions, table_glob
from churnops.features.training_set import get_training_set
from churnops.storage.duck import duckdb_connection

if TYPE_CHECKING:
    from feast import FeatureStore


@dataclass(frozen=True)
class ParityReport:
    """The comparison of a customer sample, online vs offline at one time.

    Attributes:
        at: The time compared (the offline side is the point-in-time join at `at`).
        tolerance: The largest relative difference allowed for a numeric feature.
        sampled: Customers compared.
        mismatches: (customer, feature) pairs beyond tolerance, or differing categorical values,
            snapshot times or presence.
        worst: The worst pairs: customer, feature, online, offline, relative difference.
    """

    at: datetime
    tolerance: float
    sampled: int
    mismatches: int
    worst: pd.DataFrame

    @property
    def passed(self) -> bool:
        """True when every compared value is within tolerance."""
        return self.mismatches == 0


def relative_difference(online: float, offline: float) -> float:
    """|online - offline| relative to the offline value (absolute below 1, so zeros compare sanely)."""
    if pd.isna(online) or pd.isna(offline):
        return 0.0 if pd.isna(online) and pd.isna(offline) else float("inf")
    return abs(float(online) - float(offline)) / max(abs(float(offline)), 1.0)


def _sample_customers(
    features_dir: Path, contract: FeatureContract, at: datetime, sample: int, seed: int
) -> list[str]:
    key = contract.entity.join_key
    if not list_partitions(features_dir, contract):
        return []
    # A refresh at `at` appends exactly the customers it loads online (the contract's population
    # then): those are the ones both sides must hold. A churned customer has no online row, while
    # the offline join may still find its last snapshot from before its churn within the ttl.
    # At a time that was not a refresh, every customer with a snapshot by then is compared.
    with duckdb_connection() as con:
        ids: list[str] = []
        for condition in (f"{SNAPSHOT_TS} = ?", f"{SNAPSHOT_TS} <= ?"):
            ids = [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT {key} FROM read_parquet(?, hive_partitioning = false) "
                    f"WHERE {condition} ORDER BY {key}",
                    [table_glob(features_dir, contract), at],
                ).fetchall()
            ]
            if ids:
                break
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, size=min(sample, len(ids)), replace=False).tolist()) if ids else []


def check_parity(
    *,
    store: FeatureStore,
    at: datetime,
    sample: int,
    tolerance: float,
    seed: int = 0,
    features_dir: Path | None = None,
    contract: FeatureContract | None = None,
) -> ParityReport:
    """Compare online values with the offline point-in-time values at `at` for a customer sample.

    Args:
        store: The Feast store.
        at: The time to compare at: the last refresh time, so the online snapshot is the
            offline one (naive is UTC).
        sample: How many customers to compare.
        tolerance: The contract's relative tolerance for numeric features.
        seed: The sampling seed.
        features_dir: The features folder to sample customers from (default: the store's home).
        contract: The feature contract (default: `customer_profile` v1).

    Returns:
        The report; `.passed` is False when any numeric feature differs beyond `tolerance`, or a
        categorical value, snapshot time or presence differs.
    """
    from churnops.features.definitions import repo_definitions

    contract = contract or load_feature_contract()
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if features_dir is None:
        features_dir = repo_definitions().features_dir
    key = contract.entity.join_key
    customers = _sample_customers(features_dir, contract, at, sample, seed)
    columns = ["customer_id", "feature", "online", "offline", "relative_difference"]
    if not customers:
        return ParityReport(
            at=at, tolerance=tolerance, sampled=0, mismatches=0, worst=pd.DataFrame(columns=columns)
        )
    offline = get_training_set(
        store=store,
        entities=pd.DataFrame({key: customers, EVENT_TIMESTAMP: [at] * len(customers)}),
        contract=contract,
    )
    online = read_online(store=store, customer_ids=customers).set_index(key).loc[customers].reset_index()
    records = []
    for i, customer in enumerate(customers):
        off_ts = offline[SNAPSHOT_TS].iloc[i]
        on_ts = online[SNAPSHOT_TS].iloc[i]
        same_ts = (pd.isna(off_ts) and pd.isna(on_ts)) or (
            not pd.isna(off_ts) and not pd.isna(on_ts) and pd.Timestamp(off_ts) == pd.Timestamp(on_ts)
        )
        records.append((customer, SNAPSHOT_TS, on_ts, off_ts, 0.0 if same_ts else float("inf")))
        for f in contract.features:
            on, off = online[f.name].iloc[i], offline[f.name].iloc[i]
            exact = 0.0 if on == off else float("inf")
            diff = relative_difference(on, off) if f.is_numeric else exact
            records.append((customer, f.name, on, off, diff))
    table = pd.DataFrame.from_records(records, columns=columns)
    bad = table[table["relative_difference"] > tolerance]
    worst = table.sort_values("relative_difference", ascending=False, kind="stable").head(10)
    return ParityReport(
        at=at,
        tolerance=tolerance,
        sampled=len(customers),
        mismatches=len(bad),
        worst=worst[worst["relative_difference"] > 0].reset_index(drop=True),
    )
