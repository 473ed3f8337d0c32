"""Online feature reads with the contract's join-failure policy and freshness rules applied.

Feast does not enforce a feature view's TTL on online reads: an old snapshot comes back as if
it were current. This module looks at each row's `snapshot_ts` itself, so serving agrees with
training (where Feast's point-in-time join does apply the TTL):

- no row for the customer, or a snapshot older than the contract's `time.ttl` → the contract's
  defaults and the default flag set (`feature_status = "default"`), never NaN and never an
  expired snapshot's values;
- a snapshot older than `serving.freshness_max` but within the TTL → its values, flagged
  `"stale"`;
- otherwise `"present"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from churnops.contracts.feature_contract import FeatureContract
from churnops.storage.times import parse_utc

if TYPE_CHECKING:
    from feast import FeatureStore

SNAPSHOT_COLUMN = "snapshot_ts"
FeatureStatus = Literal["present", "default", "stale"]
_NUMPY_DTYPES: dict[str, type] = {
    "int64": np.int64,
    "float64": np.float64,
    "string": object,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class OnlineFeatures:
    """Features of a list of customers, one row each, in request order.

    Attributes:
        customer_ids: The customers, as requested.
        columns: The contract's features plus the default flag column, each a list of plain
            Python values (one per customer); models and the prediction log read these lists
            directly, as building a DataFrame for one row costs more than scoring it.
        statuses: `present`, `default` or `stale` per customer.
        snapshot_ts: The snapshot boundary the online store holds per customer (None when absent).
    """

    customer_ids: list[str]
    columns: dict[str, list[Any]]
    statuses: list[FeatureStatus]
    snapshot_ts: list[datetime | None]


class OnlineFeatureReader:
    """Reads a feature service's online features for a list of customers.

    Args:
        store: An open Feast feature store whose registry holds the feature service.
        contract: The feature contract (names, dtypes, defaults, TTL, freshness bound).
        feature_service: The feature service's name.

    Raises:
        ValueError: When the feature service lacks a contract feature or `snapshot_ts`, or the
            contract's join-failure policy is not `default` (the only one serving can honour
            without dropping a request).
    """

    def __init__(self, *, store: FeatureStore, contract: FeatureContract, feature_service: str) -> None:
        if contract.entity.join.on_failure != "default":
            raise ValueError(
                f"contract {contract.name} v{contract.version} sets entity.join.on_failure to "
                f"{contract.entity.join.on_failure!r}; online serving needs 'default' so that an unknown "
                "customer still gets a prediction"
            )
        self._store = store
        self._contract = contract
        self._service = store.get_feature_service(feature_service)
        served = {f.name for p in self._service.feature_view_projections for f in p.features}
        missing = [n for n in [*contract.feature_names, SNAPSHOT_COLUMN] if n not in served]
        if missing:
            raise ValueError(
                f"feature service {feature_service!r} does not serve {missing}; it must expose every "
                f"feature of contract {contract.name} v{contract.version} and {SNAPSHOT_COLUMN!r}"
            )
        self._join_key = contract.entity.join_key
        self._flag = contract.entity.join.default_flag
        self._names = contract.feature_names
        self._defaults = contract.defaults
        self._ttl = contract.time.ttl
        self._freshness = contract.serving.freshness_max

    @property
    def default_flag(self) -> str:
        """The column that is 1 where a row holds the contract's defaults."""
        return self._flag

    def read(self, customer_ids: list[str], *, now: datetime) -> OnlineFeatures:
        """Read the customers' online features and apply the defaults and freshness rules.

        Args:
            customer_ids: The customers, in the order the caller wants the rows.
            now: The time staleness is measured against (timezone-aware).

        Returns:
            One row per customer id, in order.
        """
        raw = self._store.get_online_features(
            features=self._service,
            entity_rows=[{self._join_key: cid} for cid in customer_ids],
        ).to_dict()
        columns: dict[str, list[Any]] = {name: [] for name in self._names}
        flags: list[int] = []
        statuses: list[FeatureStatus] = []
        snapshots: list[datetime | None] = []
        for i in range(len(customer_ids)):
            snapshot = parse_utc(raw[SNAPSHOT_COLUMN][i])
            snapshots.append(snapshot)
            age = None if snapshot is None else now - snapshot
            expired = age is None or age > self._ttl
            for name in self._names:
                value = None if expired else raw[name][i]
                columns[name].append(self._defaults[name] if value is None else value)
            flags.append(1 if expired else 0)
            if expired:
                statuses.append("default")
            elif age is not None and age > self._freshness:
                statuses.append("stale")
            else:
                statuses.append("present")
        columns[self._flag] = flags
        return OnlineFeatures(
            customer_ids=list(customer_ids), columns=columns, statuses=statuses, snapshot_ts=snapshots
        )

    def ping(self) -> None:
        """Read one (absent) customer to prove the online store answers.

        Raises:
            Exception: Whatever the online store raises when it cannot be read.
        """
        self._store.get_online_features(
            features=self._service, entity_rows=[{self._join_key: "__churnops_ready_probe__"}]
        ).to_dict()


def probe_frame(contract: FeatureContract, *, rows: int = 256, seed: int = 0) -> pd.DataFrame:
    """Feature rows spread over the contract's ranges, for checking a model's fast scoring path.

    Row 0 holds the contract's defaults. Numeric values are log-uniform between the feature's
    `min` and `max` (counts near zero and the rare large values both occur, as tree splits sit at
    every scale); string features cycle through their allowed values and one value outside them.

    Args:
        contract: The feature contract.
        rows: How many rows.
        seed: The random seed.

    Returns:
        The contract's feature columns (contract dtypes) and the default flag column.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for f in contract.features:
        if f.dtype == "string":
            values = [*(f.allowed_values or []), "__unlisted__"]
            column = np.array([values[i % len(values)] for i in range(rows)], dtype=object)
        elif f.dtype == "bool":
            column = rng.random(rows) < 0.5
        else:
            low = 0.0 if f.min is None else float(f.min)
            high = low + 1e6 if f.max is None else float(f.max)
            spread = np.expm1(rng.random(rows) * np.log1p(high - low))
            column = low + (np.floor(spread) if f.dtype == "int64" else np.round(spread, 3))
        column = column.astype(_NUMPY_DTYPES[f.dtype])
        column[0] = f.default
        columns[f.name] = column
    columns[contract.entity.join.default_flag] = (np.arange(rows) == 0).astype(np.int64)
    return pd.DataFrame(columns)
