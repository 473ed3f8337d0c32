"""The latent world every source is drawn from: the window, and the customers' hidden scores.

Every customer has a hidden engagement score ``e ~ Beta(2.0, 2.5)`` (never written) that drives
how often their users show up, what they do, how many support tickets they open and how they rate
them, and whether their payments fail. A second hidden score, seat utilization ``u`` (the share of
the account's seats in real use, with the same Beta(2.0, 2.5) distribution and rank-correlated
with ``e``), drives whether they churn: accounts that pay for seats nobody uses are the ones that
get cancelled. About ``u * sqrt(seats)`` people use an account, so its activity grows with seats,
sub-linearly; a large account is active on most days whatever its utilization, and only its
volume relative to its seat count tells how much of it is in use. Churners fade over their last
four weeks and stop producing events, tickets and invoices at their churn date.

Customers signed up between 30 and 400 days before the window, so tenures differ. Free (basic)
customers and half of pro customers pay month to month and may leave on any day, with a constant
daily hazard; enterprise customers and the other half of pro customers hold annual contracts
(never written) and can only leave when one ends, on a signup anniversary. Whether a customer is
close to a renewal is thus a joint property of plan and tenure, as in real B2B subscriptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from scipy.special import betainc, betaincinv, ndtr, ndtri

DAY = 86_400
HOUR = 3_600
US = 1_000_000

# Plan codes index PLAN_TYPES.
PLAN_TYPES: tuple[str, ...] = ("basic", "pro", "enterprise")
BASIC, PRO, ENTERPRISE = 0, 1, 2

# Churners' activity fades over their last four weeks, down to a fifth of their usual rate.
FADE_DAYS = 28
FADE_FLOOR = 0.2
# Customers signed up between a month and thirteen months before the window starts, so that every
# observation time sees some annual contracts in their last month.
_SIGNUP_GAP_DAYS = (30, 400)
# Annual contracts run 365 days from signup; enterprise always, pro customers half of the time.
_CONTRACT_YEAR_DAYS = 365
_PRO_ANNUAL_SHARE = 0.5
# Engagement's Beta parameters. Seat utilization, the share of an account's seats in real use,
# has the same distribution and follows engagement through a Gaussian copula of this correlation.
_ENGAGEMENT = (2.0, 2.5)
_UTILIZATION_CORR = 0.3


@dataclass(frozen=True)
class Window:
    """The generation window as whole epoch seconds (UTC)."""

    start_s: int
    end_s: int
    days: int


@dataclass(frozen=True)
class Population:
    """The latent customer world every source is drawn from (index i is customer i + 1).

    Attributes:
        engagement: Hidden engagement score in (0, 1); never written.
        utilization: Hidden seat utilization in (0, 1), the share of seats in real use; never
            written.
        plan: Current plan code (0 basic, 1 pro, 2 enterprise).
        seats: Seat count.
        signup_day: Signup date as days since the epoch.
        annual: Whether the customer holds an annual contract (renewing every 365 days from
            signup); never written.
        churned: Whether the customer churns inside the window.
        churn_s: Churn instant (epoch seconds); meaningful only where `churned`.
        stop_s: When the customer's activity stops: the churn instant, or the window end.
    """

    engagement: np.ndarray
    utilization: np.ndarray
    plan: np.ndarray
    seats: np.ndarray
    signup_day: np.ndarray
    annual: np.ndarray
    churned: np.ndarray
    churn_s: np.ndarray
    stop_s: np.ndarray

    @property
    def size(self) -> int:
        """Number of customers."""
        return int(self.engagement.size)

    @property
    def paid(self) -> np.ndarray:
        """Whether each customer is on a paid plan."""
        return self.plan != BASIC


def resolve_window(*, start: datetime | date | None, days: int, now: datetime | None = None) -> Window:
    """Turn the user's `start` into the generation window.

    Args:
        start: None for a window ending at the current hour; a date (00:00 UTC) or a datetime
            (naive means UTC; sub-second parts are dropped) for a window starting there.
        days: Window length in days.
        now: The clock, for tests; defaults to the current UTC time.

    Returns:
        The window in whole epoch seconds.

    Raises:
        ValueError: When `start` is of another type.
    """
    if start is None:
        clock = now if now is not None else datetime.now(UTC)
        end_dt = clock.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        start_dt = end_dt - timedelta(days=days)
    elif isinstance(start, datetime):
        start_dt = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        start_dt = start_dt.replace(microsecond=0)
    elif isinstance(start, date):
        start_dt = datetime(start.year, start.month, start.day, tzinfo=UTC)
    else:
        raise ValueError(f"start must be a datetime, a date or None, got {start!r}.")
    start_s = int(start_dt.timestamp())
    return Window(start_s=start_s, end_s=start_s + days * DAY, days=days)


def to_datetime(seconds: int) -> datetime:
    """An epoch-seconds instant as a UTC-aware datetime.

    Args:
        seconds: Seconds since the epoch.

    Returns:
        The instant.
    """
    return datetime.fromtimestamp(seconds, tz=UTC)


def build_population(
    *, customers: int, window: Window, churn_base_rate: float, paid_ratio: float, rng: np.random.Generator
) -> Population:
    """Draw the latent customer world.

    Args:
        customers: Number of customers.
        window: The generation window.
        churn_base_rate: Scales every customer's churn probability.
        paid_ratio: Share of customers on a paid plan (rounded to a whole number of customers).
        rng: The population's random stream.

    Returns:
        The population.
    """
    n = customers
    engagement = rng.beta(*_ENGAGEMENT, n)

    # An exact paid count keeps the realised share equal to the setting, even for small worlds.
    paid = np.zeros(n, dtype=bool)
    paid[rng.permutation(n)[: round(paid_ratio * n)]] = True
    enterprise = paid & (rng.random(n) < 0.30)
    plan = np.where(enterprise, ENTERPRISE, np.where(paid, PRO, BASIC))

    seat_low = np.array([1, 2, 20])[plan]
    seat_high = np.array([3, 25, 200])[plan]
    seats = rng.integers(seat_low, seat_high + 1)

    start_day = window.start_s // DAY
    signup_day = start_day - rng.integers(_SIGNUP_GAP_DAYS[0], _SIGNUP_GAP_DAYS[1] + 1, n)
    annual = (plan == ENTERPRISE) | ((plan == PRO) & (rng.random(n) < _PRO_ANNUAL_SHARE))

    u = rng.random(n)
    # An annual contract ends on a signup anniversary: its holder decides once, at the first
    # renewal inside the span (below), and cannot leave when the span holds no renewal.
    first = window.days // 4
    years = np.maximum(1, -((signup_day - start_day - first) // _CONTRACT_YEAR_DAYS))
    renewal_day = signup_day + years * _CONTRACT_YEAR_DAYS - start_day
    renewal_s = window.start_s + renewal_day * DAY + rng.integers(0, DAY, n)
    utilization = _utilization(engagement, rng.standard_normal(n))

    decides_to_leave, monthly_s = _monthly_churn(
        u=u, utilization=utilization, paid=paid, churn_base_rate=churn_base_rate, window=window
    )
    churn_s = np.where(annual, renewal_s, monthly_s)
    churned = decides_to_leave & (~annual | (renewal_day < window.days))
    stop_s = np.where(churned, churn_s, window.end_s)
    return Population(
        engagement=engagement,
        utilization=utilization,
        plan=plan,
        seats=seats,
        signup_day=signup_day,
        annual=annual,
        churned=churned,
        churn_s=churn_s,
        stop_s=stop_s,
    )


def _monthly_churn(
    *, u: np.ndarray, utilization: np.ndarray, paid: np.ndarray, churn_base_rate: float, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Who decides to leave within the churnable span, and when a month-to-month customer would.

    Churn can happen from day `days // 4` of the window on (the span), so that every churner has
    some history first; `u` is each customer's uniform draw for the decision.

    Returns:
        Whether each customer decides to leave, and the instant they would leave if month to month.
    """
    first = window.days // 4
    span = window.days - first
    # Accounts that use few of their seats leave more often (shelfware is what gets cancelled at
    # renewal); paying customers have more reasons to stay. churn_p is the chance of deciding to
    # leave within the span.
    churn_p = np.minimum(0.95, churn_base_rate * (0.4 + 1.4 * (1.0 - utilization) ** 1.6))
    churn_p = churn_p * np.where(paid, 0.75, 1.0)
    decides_to_leave = u < churn_p
    # A month-to-month customer leaves with a constant daily hazard h, where 1 - exp(-h * span)
    # = churn_p: the leaving time is the exponential inverse CDF of the same uniform, which falls
    # inside the span exactly when u < churn_p. A constant hazard keeps a remaining customer's
    # chance of leaving in the next 30 days the same early and late in the window (a uniform
    # leaving day made it climb towards certainty near the window end).
    # np.where computes both branches: for customers who stay, a churn_p of 0 (or one so small
    # that its log underflows) divides by ~0 in the branch that is then thrown away.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        leave_days = np.where(decides_to_leave, span * np.log1p(-u) / np.log1p(-churn_p), 0.0)
    monthly_s = window.start_s + first * DAY + np.floor(leave_days * DAY).astype(np.int64)
    return decides_to_leave, monthly_s


def _utilization(engagement: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Seat utilization: engagement's Beta(2, 2.5) distribution, tied to it by a Gaussian copula.

    Each customer's engagement quantile is mapped to a standard normal, mixed with independent
    `noise` at correlation `_UTILIZATION_CORR`, and mapped back through the Beta quantile function,
    so utilization has exactly engagement's distribution without being the same number.
    """
    rho = _UTILIZATION_CORR
    quantile = np.clip(betainc(*_ENGAGEMENT, engagement), 1e-12, 1.0 - 1e-12)
    mixed = rho * ndtri(quantile) + math.sqrt(1.0 - rho * rho) * noise
    return betaincinv(*_ENGAGEMENT, ndtr(mixed))
