"""Out-of-time split: no train observation is later than any validation or test observation."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnops.training.split import out_of_time_split

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-02-01", tz="UTC")


def frame_with_days(days: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(len(days))],
            "event_timestamp": [T0 + d * DAY for d in days],
            "label": [i % 2 for i in range(len(days))],
        }
    )


def test_ten_equal_days_split_six_two_two() -> None:
    frame = frame_with_days([d for d in range(10) for _ in range(5)])
    split = out_of_time_split(frame=frame)
    assert (len(split.train), len(split.validation), len(split.test)) == (30, 10, 10)
    assert split.dates.train_start == T0
    assert split.dates.train_end == T0 + 5 * DAY
    assert split.dates.validation_start == T0 + 6 * DAY
    assert split.dates.validation_end == T0 + 7 * DAY
    assert split.dates.test_start == T0 + 8 * DAY
    assert split.dates.test_end == T0 + 9 * DAY
    assert split.dates.as_dict()["test_start"] == "2026-02-09T00:00:00+00:00"


def test_a_crowded_time_is_never_cut_in_two() -> None:
    # Day 0 alone holds 70% of rows: train is day 0, and each later part keeps a time.
    frame = frame_with_days([0] * 70 + [1] * 10 + [2] * 10 + [3] * 10)
    split = out_of_time_split(frame=frame)
    assert set(split.train["event_timestamp"]) == {T0}
    assert set(split.validation["event_timestamp"]) == {T0 + DAY}
    assert set(split.test["event_timestamp"]) == {T0 + 2 * DAY, T0 + 3 * DAY}


def test_three_times_give_one_time_per_part() -> None:
    split = out_of_time_split(frame=frame_with_days([0, 1, 2]))
    assert [len(split.train), len(split.validation), len(split.test)] == [1, 1, 1]


def test_fewer_than_three_times_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 distinct observation times, got 2"):
        out_of_time_split(frame=frame_with_days([0, 1, 1]))


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="three positive shares summing to 1"):
        out_of_time_split(frame=frame_with_days([0, 1, 2]), fractions=(0.5, 0.5, 0.0))


@settings(max_examples=60, deadline=None)
@given(days=st.lists(st.integers(min_value=0, max_value=40), min_size=3, max_size=200))
def test_parts_are_disjoint_in_time_and_cover_every_row(days: list[int]) -> None:
    if len(set(days)) < 3:
        days = [*days, 41, 42, 43]
    frame = frame_with_days(days)
    split = out_of_time_split(frame=frame)
    train, validation, test = (p["event_timestamp"] for p in (split.train, split.validation, split.test))
    assert min(len(train), len(validation), len(test)) > 0
    assert train.max() < validation.min()
    assert validation.max() < test.min()
    assert sorted(pd.concat([split.train, split.validation, split.test])["customer_id"]) == sorted(
        frame["customer_id"]
    )
    assert (split.dates.train_end, split.dates.validation_start) == (train.max(), validation.min())
    assert (split.dates.test_start, split.dates.test_end) == (test.min(), test.max())
