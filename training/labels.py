"""Churn labels: who is observed when, and whether they churned in the following horizon.

An observation is a (customer, time T) pair. Observation times fall weekly from the customer's
signup (00:00 UTC) + 7 days, so they coincide with daily snapshot boundaries. A customer is observed
at T only while still active (churn date after T) and only when the whole label window
(T, T + horizon] lies inside the data; the label is 1 when the churn date falls in that window.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from churnops.storage.times import series_to_us, timestamp_utc, to_us
from churnops.training.names import LABEL_COLUMN

HORIZON = timedelta(days=30)
FIRST_OBSERVATION_AFTER_SIGNUP = timedelta(days=7)
OBSERVATION_EVERY = timedelta(days=7)

ENTITY_COLUMN = "customer_id"
TIME_COLUMN = "event_timestamp"

_US = np.int64(1)  # one microsecond, the resolution of every timestamp in the lake


def _require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def _require_no_nulls(frame: pd.DataFrame, column: str, what: str) -> None:
    nulls = frame.index[frame[column].isna()]
    if len(nulls):
        raise ValueError(
            f"{what}: column {column!r} is null in {len(nulls)} row(s), first at row {int(nulls[0])}; "
            "every row needs a value (ingest through the contracts, which quarantine such rows)"
        )


def first_churn_dates(*, churn_labels: pd.DataFrame) -> pd.Series:
    """Each customer's earliest churn date (a customer who churned once is gone from then on).

    Args:
        churn_labels: Rows with `customer_id` and `churn_date` (UTC timestamps).

    Returns:
        The churn date (`datetime64[us, UTC]`) indexed by `customer_id`.

    Raises:
        ValueError: When a column is missing or a key or date is null.
    """
    _require_columns(churn_labels, [ENTITY_COLUMN, "churn_date"], "churn_labels")
    _require_no_nulls(churn_labels, ENTITY_COLUMN, "churn_labels")
    _require_no_nulls(churn_labels, "churn_date", "churn_labels")
    dates = pd.to_datetime(churn_labels["churn_date"], utc=True).astype("datetime64[us, UTC]")
    return dates.groupby(churn_labels[ENTITY_COLUMN].astype(str)).min().rename("churn_date")


def observation_times(
    *,
    customers: pd.DataFrame,
    churn_labels: pd.DataFrame,
    data_end: pd.Timestamp,
    horizon: timedelta = HORIZON,
    observe_from: pd.Timestamp | None = None,
    first_after: timedelta = FIRST_OBSERVATION_AFTER_SIGNUP,
    every: timedelta = OBSERVATION_EVERY,
) -> pd.DataFrame:
    """The observation grid: weekly times per customer while active and while labels are complete.

    For a customer who signed up on day D, the candidate times are D + first_after + k·every
    (k = 0, 1, ...). A time T is kept when T < churn date (a customer whose churn date is ≤ T is no
    longer a customer at T), T + horizon ≤ data_end (the label window is complete), and
    T ≥ observe_from when given.

    Args:
        customers: Rows with `customer_id` and `signup_date` (date or timestamp; read as 00:00 UTC).
        churn_labels: Rows with `customer_id` and `churn_date`.
        data_end: The end of the observed history (UTC).
        horizon: The label window's length.
        observe_from: The earliest time to observe (e.g. data start + the feature lookback), or None.
        first_after: The delay from signup to the first observation.
        every: The spacing of observations.

    Returns:
        `customer_id` (str) and `event_timestamp` (`datetime64[us, UTC]`), sorted by time then customer.

    Raises:
        ValueError: When a column is missing, a key or date is null, a customer appears twice, or a
            duration is not positive.
    """
    if horizon <= timedelta(0) or every <= timedelta(0) or first_after < timedelta(0):
        raise ValueError(
            f"horizon ({horizon}) and every ({every}) must be positive and first_after ({first_after}) "
            "not negative"
        )
    _require_columns(customers, [ENTITY_COLUMN, "signup_date"], "customers")
    _require_no_nulls(customers, ENTITY_COLUMN, "customers")
    _require_no_nulls(customers, "signup_date", "customers")
    ids = customers[ENTITY_COLUMN].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(
            f"customers: customer_id {duplicated.iloc[0]!r} appears more than once "
            f"(row {int(duplicated.index[0])}); the customers table needs one row per customer"
        )
    churn_at = ids.map(first_churn_dates(churn_labels=churn_labels))
    never_churned = churn_at.isna().to_numpy()
    # A customer who never churned is bounded by data_end alone; the fill keeps the arithmetic finite.
    churn_us = series_to_us(churn_at.fillna(pd.Timestamp(data_end)))

    step = np.int64(every // timedelta(microseconds=1))
    first = series_to_us(customers["signup_date"]) + np.int64(first_after // timedelta(microseconds=1))
    # The last admissible time: label window complete, and strictly before the churn date.
    last = np.full(len(ids), to_us(timestamp_utc(data_end)) - np.int64(horizon // timedelta(microseconds=1)))
    last = np.where(never_churned, last, np.minimum(last, churn_us - _US))
    k_start = np.zeros(len(ids), dtype=np.int64)
    if observe_from is not None:
        lag = to_us(timestamp_utc(observe_from)) - first
        k_start = np.where(lag > 0, -(-lag // step), 0)  # ceiling division
    k_end = np.where(last >= first, (last - first) // step, -1)
    counts = np.clip(k_end - k_start + 1, 0, None)

    rows = np.repeat(np.arange(len(ids)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    k = np.repeat(k_start, counts) + offsets
    times = first[rows] + k * step
    out = pd.DataFrame(
        {
            ENTITY_COLUMN: ids.to_numpy()[rows],
            TIME_COLUMN: pd.to_datetime(times.astype("datetime64[us]")).tz_localize("UTC"),
        }
    )
    return out.sort_values([TIME_COLUMN, ENTITY_COLUMN], kind="stable").reset_index(drop=True)


def label_observations(
    *, observations: pd.DataFrame, churn_labels: pd.DataFrame, horizon: timedelta = HORIZON
) -> pd.DataFrame:
    """Attach the label: 1 when the customer's churn date falls in (T, T + horizon], else 0.

    Args:
        observations: Rows with `customer_id` and `event_timestamp` (T).
        churn_labels: Rows with `customer_id` and `churn_date`.
        horizon: The label window's length.

    Returns:
        The observations with an int64 `label` column, rows in the same order.

    Raises:
        ValueError: When a column is missing, or an observation is at or after its customer's churn
            date (such a customer is not observable then).
    """
    _require_columns(observations, [ENTITY_COLUMN, TIME_COLUMN], "observations")
    churn = first_churn_dates(churn_labels=churn_labels)
    churn_at = observations[ENTITY_COLUMN].astype(str).map(churn)
    at = pd.to_datetime(observations[TIME_COLUMN], utc=True)
    after_churn = churn_at.notna() & (churn_at <= at)
    if after_churn.any():
        row = int(np.flatnonzero(after_churn.to_numpy())[0])
        raise ValueError(
            f"observations: row {row} observes customer {observations[ENTITY_COLUMN].iloc[row]!r} at "
            f"{at.iloc[row]}, at or after its churn date {churn_at.iloc[row]}; build observations with "
            "observation_times"
        )
    label = churn_at.notna() & (churn_at > at) & (churn_at <= at + horizon)
    return observations.assign(**{LABEL_COLUMN: label.astype("int64").to_numpy()})


def labelled_observations(
    *,
    customers: pd.DataFrame,
    churn_labels: pd.DataFrame,
    data_end: pd.Timestamp,
    horizon: timedelta = HORIZON,
    observe_from: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The observation grid with labels: the entity frame of a training set plus `label`.

    Args:
        customers: Rows with `customer_id` and `signup_date`.
        churn_labels: Rows with `customer_id` and `churn_date`.
        data_end: The end of the observed history (UTC).
        horizon: The label window's length.
        observe_from: The earliest time to observe, or None.

    Returns:
        `customer_id`, `event_timestamp`, `label`, sorted by time then customer.
    """
    grid = observation_times(
        customers=customers,
        churn_labels=churn_labels,
        data_end=data_end,
        horizon=horizon,
        observe_from=observe_from,
    )
    return label_observations(observations=grid, churn_labels=churn_labels, horizon=horizon)
