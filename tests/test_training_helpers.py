"""Shared builders for the training tests: labelled frames with the feature service's schema.

The frames have exactly the columns `features.training_set.get_training_set` returns (entity,
timestamp, every contract feature, `snapshot_ts`, `profile_defaulted`) plus `label`, with churn
driven by disengagement and failed payments, so a model has something real to learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.contracts.feature_contract import load_feature_contract

CONTRACT = load_feature_contract()
START = pd.Timestamp("2026-01-05", tz="UTC")


def engaged_profile() -> dict[str, object]:
    """A customer who logs in daily and pays every invoice."""
    return {
        "sessions_30d": 30,
        "active_days_30d": 30,
        "events_30d": 120,
        "watch_minutes_30d": 600.0,
        "quiz_attempts_30d": 12,
        "quiz_avg_score_30d": 82.0,
        "orders_30d": 1,
        "distinct_order_days_30d": 1,
        "avg_order_value_30d": 490.0,
        "payment_failures_30d": 0,
        "support_tickets_30d": 1,
        "days_since_last_event": 0,
        "tenure_days": 200,
        "plan_type": "pro",
        "seat_count": 25,
    }


def disengaged_profile() -> dict[str, object]:
    """The same account with no sessions at all and only failed payments."""
    profile = engaged_profile()
    profile.update(
        {
            "sessions_30d": 0,
            "active_days_30d": 0,
            "events_30d": 0,
            "watch_minutes_30d": 0.0,
            "quiz_attempts_30d": 0,
            "quiz_avg_score_30d": 0.0,
            "orders_30d": 0,
            "distinct_order_days_30d": 0,
            "avg_order_value_30d": 0.0,
            "payment_failures_30d": 2,
            "days_since_last_event": 90,
        }
    )
    return profile


def synthetic_training_set(*, customers: int = 400, weeks: int = 10, seed: int = 0) -> pd.DataFrame:
    """A labelled training set: weekly observations of `customers` accounts over `weeks` weeks.

    Args:
        customers: Number of accounts.
        weeks: Number of weekly observation times.
        seed: Random seed.

    Returns:
        Rows sorted by time then customer, with the feature service's columns and `label`.
    """
    rng = np.random.default_rng(seed)
    n = customers * weeks
    engagement = np.repeat(rng.beta(2, 2, customers), weeks) + rng.normal(0, 0.1, n)
    engagement = np.clip(engagement, 0, 1)
    plan = np.repeat(rng.choice(["basic", "pro", "enterprise"], customers, p=[0.6, 0.3, 0.1]), weeks)
    paid = plan != "basic"
    failures = np.where(paid, rng.poisson(0.15 + 1.2 * (1 - engagement)), 0)
    sessions = rng.poisson(30 * engagement)
    active_days = np.minimum(sessions, rng.binomial(30, engagement))
    events = sessions + rng.poisson(60 * engagement)
    quiz = rng.poisson(8 * engagement)
    orders = np.where(paid, rng.binomial(1, 0.9, n), 0)
    logit = -1.2 - 3.5 * engagement + 0.9 * failures + np.where(plan == "basic", 0.4, -0.3)
    label = rng.random(n) < 1 / (1 + np.exp(-logit))
    times = START + pd.to_timedelta(np.tile(np.arange(weeks) * 7, customers), unit="D")
    ids = np.repeat([f"CUST-{i:06d}" for i in range(1, customers + 1)], weeks)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": times.astype("datetime64[us, UTC]"),
            "sessions_30d": sessions.astype("int64"),
            "active_days_30d": active_days.astype("int64"),
            "events_30d": events.astype("int64"),
            "watch_minutes_30d": np.round(rng.gamma(2, 150 * engagement + 1e-3), 1),
            "quiz_attempts_30d": quiz.astype("int64"),
            "quiz_avg_score_30d": np.where(quiz > 0, np.round(rng.uniform(40, 100, n), 1), 0.0),
            "orders_30d": orders.astype("int64"),
            "distinct_order_days_30d": orders.astype("int64"),
            "avg_order_value_30d": np.where(orders > 0, np.where(plan == "pro", 490.0, 2400.0), 0.0),
            "payment_failures_30d": failures.astype("int64"),
            "support_tickets_30d": rng.poisson(1.0, n).astype("int64"),
            "days_since_last_event": np.where(events > 0, rng.integers(0, 5, n), 90).astype("int64"),
            "tenure_days": (
                np.repeat(rng.integers(30, 700, customers), weeks) + np.tile(np.arange(weeks) * 7, customers)
            ).astype("int64"),
            "plan_type": plan.astype(object),
            "seat_count": np.repeat(rng.integers(1, 200, customers), weeks).astype("int64"),
            "label": label.astype("int64"),
        }
    )
    frame["snapshot_ts"] = frame["event_timestamp"]
    frame["profile_defaulted"] = False
    frame = frame[
        [
            "customer_id",
            "event_timestamp",
            *CONTRACT.feature_names,
            "snapshot_ts",
            "profile_defaulted",
            "label",
        ]
    ]
    return frame.sort_values(["event_timestamp", "customer_id"], kind="stable").reset_index(drop=True)
