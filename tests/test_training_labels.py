"""Labels: who is observed when, and the exact boundaries of the 30-day label window."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from churnops.training.labels import label_observations, labelled_observations, observation_times

SIGNUP = date(2026, 1, 1)
FIRST_T = pd.Timestamp("2026-01-08", tz="UTC")  # signup + 7 days, 00:00 UTC
WEEK = pd.Timedelta(days=7)
HORIZON = pd.Timedelta(days=30)
DATA_END = pd.Timestamp("2026-04-01", tz="UTC")  # last complete label window starts 2026-03-02


def customers(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(ids), "signup_date": [SIGNUP] * len(ids)})


def churns(**dates: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(dates),
            "churn_date": pd.Series(list(dates.values()), dtype="datetime64[us, UTC]"),
        }
    )


def labels_of(frame: pd.DataFrame, customer: str) -> dict[pd.Timestamp, int]:
    rows = frame[frame["customer_id"] == customer]
    return dict(zip(rows["event_timestamp"], rows["label"], strict=True))


def test_grid_is_weekly_from_signup_plus_seven_days_up_to_the_last_complete_window() -> None:
    grid = observation_times(customers=customers("A"), churn_labels=churns(), data_end=DATA_END)
    # T + 30d <= 2026-04-01  <=>  T <= 2026-03-02; weekly from 2026-01-08: 01-08 ... 02-26 (8 times).
    expected = [FIRST_T + k * WEEK for k in range(8)]
    assert list(grid["event_timestamp"]) == expected
    assert expected[-1] + WEEK + HORIZON > DATA_END
    assert str(grid["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_window_ending_exactly_at_data_end_is_complete() -> None:
    end = FIRST_T + 2 * WEEK + HORIZON
    grid = observation_times(customers=customers("A"), churn_labels=churns(), data_end=end)
    assert list(grid["event_timestamp"]) == [FIRST_T, FIRST_T + WEEK, FIRST_T + 2 * WEEK]
    shorter = observation_times(
        customers=customers("A"), churn_labels=churns(), data_end=end - pd.Timedelta(microseconds=1)
    )
    assert list(shorter["event_timestamp"]) == [FIRST_T, FIRST_T + WEEK]


def test_churn_exactly_at_an_observation_time_ends_observation_there() -> None:
    t = FIRST_T + 2 * WEEK
    frame = labelled_observations(customers=customers("A"), churn_labels=churns(A=t), data_end=DATA_END)
    # Observed at T-14d and T-7d (churn inside both windows), not at T itself.
    assert labels_of(frame, "A") == {FIRST_T: 1, FIRST_T + WEEK: 1}


def test_churn_at_t_plus_30_days_is_inside_the_window() -> None:
    t = FIRST_T + 2 * WEEK
    frame = labelled_observations(
        customers=customers("A"), churn_labels=churns(A=t + HORIZON), data_end=DATA_END
    )
    labels = labels_of(frame, "A")
    assert labels[t] == 1
    assert labels[t - WEEK] == 0  # churn at T-7d + 37d: outside that window


def test_churn_one_second_after_t_plus_30_days_is_outside_the_window() -> None:
    t = FIRST_T + 2 * WEEK
    frame = labelled_observations(
        customers=customers("A"),
        churn_labels=churns(A=t + HORIZON + pd.Timedelta(seconds=1)),
        data_end=DATA_END,
    )
    labels = labels_of(frame, "A")
    assert labels[t] == 0
    assert labels[t + WEEK] == 1


def test_customers_are_observed_independently_and_never_churned_are_all_zero() -> None:
    frame = labelled_observations(
        customers=customers("A", "B"),
        churn_labels=churns(A=FIRST_T + pd.Timedelta(days=3)),
        data_end=DATA_END,
    )
    assert labels_of(frame, "A") == {FIRST_T: 1}
    assert labels_of(frame, "B") == {FIRST_T + k * WEEK: 0 for k in range(8)}
    # Sorted by time, then customer.
    assert list(frame["customer_id"][:3]) == ["A", "B", "B"]


def test_earliest_churn_date_counts_when_a_customer_has_several() -> None:
    labels = pd.concat(
        [churns(A=FIRST_T + 3 * WEEK), churns(A=FIRST_T + pd.Timedelta(days=1))], ignore_index=True
    )
    frame = labelled_observations(customers=customers("A"), churn_labels=labels, data_end=DATA_END)
    assert labels_of(frame, "A") == {FIRST_T: 1}


def test_observe_from_drops_early_times_but_keeps_the_weekly_grid() -> None:
    grid = observation_times(
        customers=customers("A"),
        churn_labels=churns(),
        data_end=DATA_END,
        observe_from=FIRST_T + pd.Timedelta(days=10),
    )
    assert list(grid["event_timestamp"]) == [FIRST_T + k * WEEK for k in range(2, 8)]


def test_signup_as_timestamp_or_date_gives_the_same_grid() -> None:
    as_timestamp = customers("A").assign(signup_date=pd.Timestamp("2026-01-01", tz="UTC"))
    a = observation_times(customers=as_timestamp, churn_labels=churns(), data_end=DATA_END)
    b = observation_times(customers=customers("A"), churn_labels=churns(), data_end=DATA_END)
    pd.testing.assert_frame_equal(a, b)


def test_labelling_an_observation_after_churn_is_refused() -> None:
    observations = pd.DataFrame({"customer_id": ["A"], "event_timestamp": [FIRST_T]})
    with pytest.raises(ValueError, match=r"row 0 observes customer 'A'"):
        label_observations(observations=observations, churn_labels=churns(A=FIRST_T))


def test_null_key_is_reported_with_its_row() -> None:
    bad = pd.DataFrame({"customer_id": ["A", None], "signup_date": [SIGNUP, SIGNUP]})
    with pytest.raises(
        ValueError, match=r"customers: column 'customer_id' is null in 1 row\(s\), first at row 1"
    ):
        observation_times(customers=bad, churn_labels=churns(), data_end=DATA_END)


def test_duplicate_customer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'A' appears more than once \(row 1\)"):
        observation_times(customers=customers("A", "A"), churn_labels=churns(), data_end=DATA_END)


def test_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match=r"churn_labels lacks column\(s\) \['churn_date'\]"):
        observation_times(
            customers=customers("A"), churn_labels=pd.DataFrame({"customer_id": ["A"]}), data_end=DATA_END
        )


def test_horizon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        observation_times(
            customers=customers("A"), churn_labels=churns(), data_end=DATA_END, horizon=timedelta(0)
        )
