"""Point-in-time training sets through Feast's `get_historical_features`.

For an entity row (customer, T) Feast returns the customer's latest snapshot S <= T no older
than the view's ttl (about one grain), so S is the latest boundary (or refresh) at or before T
and nothing after T is used. A row without such a snapshot gets the contract's defaults and
`profile_defaulted = True`, never an older snapshot's values and never NaN; its `snapshot_ts`
stays empty (NaT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.features.table import EVENT_TIMESTAMP, SNAPSHOT_TS

if TYPE_CHECKING:
    from feast import FeatureStore

ROW = "__churnops_row"


def prepare_entities(entities: pd.DataFrame, *, key: str, source: str = "entities") -> pd.DataFrame:
    """Check an entity frame and give it a UTC, microsecond `event_timestamp`.

    Args:
        entities: Rows with the join key and `event_timestamp` (naive times are UTC).
        key: The join key column.
        source: What to call the frame in errors (e.g. its file).

    Returns:
        A copy with `event_timestamp` as datetime64[us, UTC].

    Raises:
        ValueError: When a column is missing or a key or timestamp is empty or unparseable.
    """
    missing = [c for c in (key, EVENT_TIMESTAMP) if c not in entities.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; an entity frame needs `{key}` and `{EVENT_TIMESTAMP}`"
        )
    out = entities.copy()
    empty_keys = out[key].isna()
    if empty_keys.any():
        raise ValueError(f"{source}: column {key} is empty in row {int(np.flatnonzero(empty_keys)[0])}")
    try:
        ts = pd.to_datetime(out[EVENT_TIMESTAMP], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{source}: column {EVENT_TIMESTAMP} holds a value that is not a timestamp ({exc})"
        ) from exc
    if ts.isna().any():
        raise ValueError(
            f"{source}: column {EVENT_TIMESTAMP} is empty in row {int(np.flatnonzero(ts.isna())[0])}"
        )
    out[EVENT_TIMESTAMP] = ts.astype("datetime64[us, UTC]")
    out[key] = out[key].astype(str)
    return out


def apply_defaults(frame: pd.DataFrame, contract: FeatureContract) -> pd.DataFrame:
    """Flag rows that found no snapshot within the ttl and give them the contract's defaults.

    Args:
        frame: Rows with `snapshot_ts` (null where no snapshot) and every contract feature.
        contract: The feature contract (defaults, dtypes, the flag's name).

    Returns:
        The frame with the flag column, defaults filled and contract dtypes.
    """
    flag = contract.entity.join.default_flag
    defaulted = frame[SNAPSHOT_TS].isna().to_numpy()
    frame[flag] = defaulted
    for f in contract.features:
        column = frame[f.name].astype(object)
        # A defaulted row takes the default for every feature, whatever the join returned.
        column[defaulted] = f.default
        frame[f.name] = column.astype(f.types.numpy)
    frame[SNAPSHOT_TS] = pd.to_datetime(frame[SNAPSHOT_TS], utc=True).astype("datetime64[us, UTC]")
    return frame


def get_training_set(
    *,
    store: FeatureStore,
    entities: pd.DataFrame,
    feature_service: str = "customer_profile_v1",
    contract: FeatureContract | None = None,
) -> pd.DataFrame:
    """Join every feature of a service to entity rows, point in time, through Feast.

    Args:
        store: The Feast store (definitions applied, offline table built).
        entities: Rows with `customer_id` and `event_timestamp` (T); other columns are kept.
        feature_service: The feature service to read.
        contract: The feature contract (default: `customer_profile` v1).

    Returns:
        Exactly the entity rows, in order, with their own columns, `snapshot_ts`, every feature
        and the default flag (`profile_defaulted`).

    Raises:
        ValueError: When the entity frame is malformed.
        RuntimeError: When Feast returns a different number of rows (never silently).
    """
    contract = contract or load_feature_contract()
    key = contract.entity.join_key
    prepared = prepare_entities(entities, key=key)
    service = store.get_feature_service(feature_service)
    query = prepared[[key, EVENT_TIMESTAMP]].copy()
    query[ROW] = np.arange(len(query), dtype="int64")
    if query.empty:
        joined = pd.DataFrame({SNAPSHOT_TS: pd.Series([], dtype="datetime64[us, UTC]")})
        for f in contract.features:
            joined[f.name] = pd.Series([], dtype=object)
    else:
        joined = store.get_historical_features(entity_df=query, features=service).to_df()
        if len(joined) != len(query) or set(joined[ROW]) != set(query[ROW]):
            raise RuntimeError(
                f"Feast returned {len(joined)} rows for {len(query)} entity rows: a training set must "
                "have exactly its entity frame's rows"
            )
        joined = joined.sort_values(ROW, kind="stable").reset_index(drop=True)
        assert (joined[ROW].to_numpy() == query[ROW].to_numpy()).all()
    feature_columns = [SNAPSHOT_TS, *contract.feature_names]
    result = prepared.reset_index(drop=True)
    for column in feature_columns:
        result[column] = joined[column].to_numpy() if len(joined) else joined[column]
    result = apply_defaults(result, contract)
    result.index = entities.index
    return result
