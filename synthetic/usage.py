"""Product usage: sessions of a login plus learning events, on the customers' active days."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from churnops.synthetic.columns import floats, ids, ingested, labels, pick, timestamps
from churnops.synthetic.customers import customer_ids
from churnops.synthetic.schemas import id_format, make_table
from churnops.synthetic.world import DAY, FADE_DAYS, FADE_FLOOR, HOUR, Population, Window

EVENT_TYPES: tuple[str, ...] = ("login", "course_enroll", "video_watch", "quiz_attempt", "certificate_earned")
COURSE_IDS: tuple[str, ...] = tuple(f"COURSE-{i:03d}" for i in range(1, 41))

_LOGIN, _ENROLL, _VIDEO, _QUIZ, _CERTIFICATE = range(5)
# An account has about utilization * seats ** _SEAT_EXPONENT active users (at least one): usage
# grows with seats, but sub-linearly, as large accounts roll out to teams over time.
_SEAT_EXPONENT = 0.5
# A popular head and a long tail, like any course catalogue.
_COURSE_WEIGHTS = 1.0 / np.arange(1, len(COURSE_IDS) + 1) ** 0.8
_COURSE_WEIGHTS /= _COURSE_WEIGHTS.sum()


def build_usage_events(pop: Population, window: Window, rng: np.random.Generator) -> pa.Table:
    """Product usage: sessions of a login plus learning events, on the customer's active days.

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.

    Returns:
        The `usage_events` table, in event-time order with ids minted in that order.
    """
    sess_c, sess_start = _sessions(pop, window, rng)
    cust, ts, etype = _session_events(pop.engagement, sess_c, sess_start, rng)
    ee = pop.engagement[cust]
    minutes = np.round(np.minimum(rng.gamma(2.0, 3.0 + 12.0 * ee), 240.0), 2)
    score = np.round(np.clip(rng.normal(45.0 + 45.0 * ee, 12.0), 0.0, 100.0), 1)
    course = pick(rng, _COURSE_WEIGHTS, etype.size)

    # A session cut short by the churn keeps only what happened before it.
    keep = ts < pop.stop_s[cust]
    order = np.lexsort((etype[keep], cust[keep], ts[keep]))
    cust, ts, etype = cust[keep][order], ts[keep][order], etype[keep][order]
    minutes, score, course = minutes[keep][order], score[keep][order], course[keep][order]

    return make_table(
        "usage_events",
        {
            "event_id": ids(*id_format("usage_events"), np.arange(1, ts.size + 1)),
            "customer_id": customer_ids(cust + 1),
            "event_timestamp": timestamps(ts),
            "event_type": labels(EVENT_TYPES, etype),
            "course_id": labels(COURSE_IDS, course, etype != _LOGIN),
            "watch_minutes": floats(minutes, etype == _VIDEO),
            "quiz_score": floats(score, etype == _QUIZ),
            "ingested_at": timestamps(ingested(rng, ts, window)),
        },
    )


def _sessions(pop: Population, window: Window, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each session's customer index and start instant, over the customers' active days."""
    e = pop.engagement
    day_start = window.start_s + np.arange(window.days, dtype=np.int64) * DAY
    # float32 halves the memory of the customer x day matrix; its resolution is plenty here.
    draws = rng.random((pop.size, window.days), dtype=np.float32)
    # Churners fade before they leave: activity thins out over the last weeks, as it does in real
    # feeds, which is what makes the timing of a churn predictable at all.
    days_left = (pop.stop_s[:, None] - day_start[None, :]) / DAY
    fade = np.where(pop.churned[:, None], np.clip(days_left / FADE_DAYS, FADE_FLOOR, 1.0), 1.0).astype(
        np.float32
    )
    # Each of the account's active users shows up on a day with an engagement-driven chance; the
    # account is active when any of them does, so a many-user account is active on most days.
    users = pop.utilization * pop.seats.astype(np.float64) ** _SEAT_EXPONENT
    p_user = (0.15 + 0.8 * e)[:, None].astype(np.float32) * fade
    p_day = 1.0 - (1.0 - p_user) ** np.maximum(1.0, users)[:, None].astype(np.float32)
    active = (draws < p_day) & (day_start[None, :] < pop.stop_s[:, None])
    act_c, act_d = np.nonzero(active)

    # An active day brings one session plus more the more people use the account (fewer as a
    # churner fades), so volume follows seats and only volume relative to seats shows utilization.
    sessions = 1 + rng.poisson(users[act_c] * fade[act_c, act_d])
    sess_c = np.repeat(act_c, sessions)
    # Sessions start early enough in the day for their last event to stay on that day.
    sess_start = day_start[np.repeat(act_d, sessions)] + rng.integers(0, DAY - HOUR, sess_c.size)
    return sess_c, sess_start


def _session_events(
    engagement: np.ndarray, sess_c: np.ndarray, sess_start: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events of every session: customer index, instant and event-type code, unsorted."""
    se = engagement[sess_c]
    # Engaged customers watch more, quiz more, enrol and finish more often.
    per_session = {
        _LOGIN: np.ones(sess_c.size, dtype=np.int64),
        _VIDEO: rng.poisson(0.2 + 1.6 * se),
        _QUIZ: rng.poisson(0.05 + 0.6 * se),
        _ENROLL: rng.binomial(1, 0.03 + 0.07 * se),
        _CERTIFICATE: rng.binomial(1, 0.004 + 0.02 * se),
    }
    sess_idx = np.concatenate([np.repeat(np.arange(sess_c.size), k) for k in per_session.values()])
    etype = np.concatenate([np.full(int(k.sum()), code) for code, k in per_session.items()])
    offset = np.where(etype == _LOGIN, 0, rng.integers(30, HOUR, etype.size))
    return sess_c[sess_idx], sess_start[sess_idx] + offset, etype
