"""Out-of-time split: train on the earliest observation times, validate on the next, test on the latest.

Whole observation times go to one part, so every train time is earlier than every validation time,
which is earlier than every test time: nothing is learnt from a period the model is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class SplitDates:
    """The first and last observation time of each part (UTC)."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    validation_start: pd.Timestamp
    validation_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        """The dates as ISO-8601 strings, keyed by field name (for params and reports)."""
        return {name: value.isoformat() for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class Split:
    """The three parts, each with the input's columns and original row order within the part."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    dates: SplitDates


def out_of_time_split(
    *,
    frame: pd.DataFrame,
    time_column: str = "event_timestamp",
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Split:
    """Split rows by observation time into train, validation and test.

    The cut points are the observation times at which the cumulative share of rows first reaches
    the train fraction and the train + validation fraction; each part keeps at least one time.

    Args:
        frame: The labelled training set.
        time_column: The observation time column.
        fractions: Target shares of rows for train, validation and test (positive, summing to 1).

    Returns:
        The three parts and their date ranges.

    Raises:
        ValueError: When the column is missing or null, the fractions are invalid, or there are
            fewer than three distinct observation times.
    """
    if time_column not in frame.columns:
        raise ValueError(f"training set lacks the time column {time_column!r}; it has {list(frame.columns)}")
    if len(fractions) != 3 or min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three positive shares summing to 1, got {fractions}")
    times = pd.to_datetime(frame[time_column], utc=True)
    if times.isna().any():
        raise ValueError(f"training set: {time_column!r} is null in {int(times.isna().sum())} row(s)")
    counts = times.value_counts().sort_index()
    if len(counts) < 3:
        raise ValueError(
            f"an out-of-time split needs at least 3 distinct observation times, got {len(counts)}: "
            "generate a longer history (more days) or more customers"
        )
    share = counts.cumsum().to_numpy() / len(frame)
    last = len(counts) - 1
    # Index of the last time in train and in validation, leaving each later part at least one time.
    train_last = min(int(np.searchsorted(share, fractions[0] - 1e-12)), last - 2)
    validation_last = min(int(np.searchsorted(share, fractions[0] + fractions[1] - 1e-12)), last - 1)
    validation_last = max(validation_last, train_last + 1)
    boundaries = counts.index
    train_mask = times <= boundaries[train_last]
    test_mask = times > boundaries[validation_last]
    validation_mask = ~train_mask & ~test_mask
    dates = SplitDates(
        train_start=boundaries[0],
        train_end=boundaries[train_last],
        validation_start=boundaries[train_last + 1],
        validation_end=boundaries[validation_last],
        test_start=boundaries[validation_last + 1],
        test_end=boundaries[last],
    )
    return Split(
        train=frame[train_mask.to_numpy()],
        validation=frame[validation_mask.to_numpy()],
        test=frame[test_mask.to_numpy()],
        dates=dates,
    )
