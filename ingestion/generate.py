"""Synthetic landing-zone generator: five churn sources as CSV or Parquet files.

The data comes from one latent world per seed. Every customer has a hidden engagement
score ``e ~ Beta(2.0, 2.5)`` (never written) that drives how often their users show up, what they
do, how many support tickets they open and how they rate them, and whether their payments fail.
A second hidden score, seat utilization ``u`` (the share of the account's seats in real use, with
the same Beta(2.0, 2.5) distribution and rank-correlated with ``e``), drives whether they churn:
accounts that pay for seats nobody uses are the ones that get cancelled. About ``u * sqrt(seats)``
people use an account, so its activity grows with seats, sub-linearly; a large account is active
on most days whatever its utilization, and only its volume relative to its seat count tells how
much of it is in use. Churners fade over their last four weeks and stop producing events, tickets
and invoices at their churn date.

Customers signed up between 30 and 400 days before the window, so tenures differ. Free (basic)
customers and half of pro customers pay month to month and may leave on any day, with a constant
daily hazard; enterprise customers and the other half of pro customers hold annual contracts
(never written) and can only leave when one ends, on a signup anniversary. Whether a customer is
close to a renewal is thus a joint property of plan and tenure, as in real B2B subscriptions.

Each source has a small pure function that turns the world into a typed Arrow table; the
``generate`` function wires them together and writes the files. Everything is vectorised with
NumPy: there is no Python loop over customers, days or events.

Randomness comes from one ``numpy.random.SeedSequence(seed)`` split into one independent
stream per purpose, so a change in one source (or turning fault injection on) never shifts
the numbers another source draws: with ``dirty_rate > 0`` the clean rows are exactly those of
``dirty_rate = 0``, and the faulty rows are extra rows interleaved with them (late arrivals,
which stay valid rows, are the one in-place change).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy.special import betainc, betaincinv, ndtr, ndtri

from churnops.storage.atomic import write_atomic

SOURCES: tuple[str, ...] = ("customers", "usage_events", "support_tickets", "billing", "churn_labels")

# Column kinds: "str", "ts" (UTC instant), "date", "f1"/"f2" (float written with 1/2 decimals
# in CSV), "int" (int64, nullable where the schema says so) and "bool".
SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": (
        ("customer_id", "str"),
        ("company_name", "str"),
        ("signup_date", "date"),
        ("plan_type", "str"),
        ("seat_count", "int"),
        ("industry", "str"),
        ("country", "str"),
        ("marketing_source", "str"),
        ("is_active", "bool"),
        ("ingested_at", "ts"),
    ),
    "usage_events": (
        ("event_id", "str"),
        ("customer_id", "str"),
        ("event_timestamp", "ts"),
        ("event_type", "str"),
        ("course_id", "str"),
        ("watch_minutes", "f2"),
        ("quiz_score", "f1"),
        ("ingested_at", "ts"),
    ),
    "support_tickets": (
        ("ticket_id", "str"),
        ("customer_id", "str"),
        ("created_at", "ts"),
        ("category", "str"),
        ("priority", "str"),
        ("resolution_hours", "f2"),
        ("satisfaction_score", "int"),
        ("ingested_at", "ts"),
    ),
    "billing": (
        ("invoice_id", "str"),
        ("customer_id", "str"),
        ("invoice_date", "ts"),
        ("amount", "f2"),
        ("currency", "str"),
        ("payment_status", "str"),
        ("plan_type", "str"),
        ("previous_plan_type", "str"),
        ("ingested_at", "ts"),
    ),
    "churn_labels": (
        ("customer_id", "str"),
        ("churn_date", "ts"),
        ("churn_reason", "str"),
        ("ingested_at", "ts"),
    ),
}

KEY_COLUMNS: dict[str, str] = {
    "customers": "customer_id",
    "usage_events": "event_id",
    "support_tickets": "ticket_id",
    "billing": "invoice_id",
    "churn_labels": "customer_id",
}

# (prefix, zero-padded width) of the identifiers a source mints itself.
_ID_FORMATS: dict[str, tuple[str, int]] = {
    "customers": ("CUST-", 6),
    "usage_events": ("EVT-", 10),
    "support_tickets": ("TCK-", 6),
    "billing": ("INV-", 7),
}

PLAN_TYPES: tuple[str, ...] = ("basic", "pro", "enterprise")
PAID_PLANS: tuple[str, ...] = ("pro", "enterprise")
INDUSTRIES: tuple[str, ...] = (
    "education",
    "technology",
    "healthcare",
    "finance",
    "retail",
    "manufacturing",
    "government",
    "nonprofit",
)
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "BR", "CA", "AU", "NL", "ES")
MARKETING_SOURCES: tuple[str, ...] = ("organic", "paid_search", "social", "referral", "partner", "events")
EVENT_TYPES: tuple[str, ...] = ("login", "course_enroll", "video_watch", "quiz_attempt", "certificate_earned")
COURSE_IDS: tuple[str, ...] = tuple(f"COURSE-{i:03d}" for i in range(1, 41))
TICKET_CATEGORIES: tuple[str, ...] = ("bug", "feature_request", "how_to", "billing")
TICKET_PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")
PAYMENT_STATUSES: tuple[str, ...] = ("paid", "failed", "refunded")
CHURN_REASONS: tuple[str, ...] = ("price", "low_usage", "missing_features", "competitor", "support", "other")
CURRENCY = "USD"

FAULT_KINDS: tuple[str, ...] = (
    "duplicate_row",
    "null_key",
    "unknown_enum",
    "negative_amount",
    "malformed_timestamp",
    "unknown_customer",
    "late_arrival",
    "future_timestamp",
)

# Which faults each source can carry, and the column each one damages (None: the whole row).
# future_timestamp is limited to facts that cannot lie ahead (an event, a ticket); an invoice
# or a churn date may legitimately be scheduled, so a future one would not be a fault.
FAULT_PLAN: dict[str, tuple[tuple[str, str | None], ...]] = {
    "customers": (
        ("duplicate_row", None),
        ("null_key", "customer_id"),
        ("unknown_enum", "plan_type"),
        ("malformed_timestamp", "signup_date"),
    ),
    "usage_events": (
        ("duplicate_row", None),
        ("null_key", "event_id"),
        ("unknown_enum", "event_type"),
        ("malformed_timestamp", "event_timestamp"),
        ("unknown_customer", "customer_id"),
        ("late_arrival", "ingested_at"),
        ("future_timestamp", "event_timestamp"),
    ),
    "support_tickets": (
        ("duplicate_row", None),
        ("null_key", "ticket_id"),
        ("unknown_enum", "priority"),
        ("malformed_timestamp", "created_at"),
        ("unknown_customer", "customer_id"),
        ("future_timestamp", "created_at"),
    ),
    "billing": (
        ("duplicate_row", None),
        ("null_key", "invoice_id"),
        ("unknown_enum", "payment_status"),
        ("negative_amount", "amount"),
        ("malformed_timestamp", "invoice_date"),
        ("unknown_customer", "customer_id"),
    ),
    "churn_labels": (
        ("duplicate_row", None),
        ("null_key", "customer_id"),
        ("unknown_enum", "churn_reason"),
        ("malformed_timestamp", "churn_date"),
    ),
}

# Values outside each enum, the kind a feed starts sending before anyone updates the contract.
UNKNOWN_ENUM_VALUES: dict[str, str] = {
    "plan_type": "platinum",
    "event_type": "teleport",
    "priority": "critical",
    "payment_status": "pending",
    "churn_reason": "acquired",
}

# Pandas reads "NA", "null", "N/A" and "" as missing, so none of these may look like a null.
_MALFORMED_TIMESTAMPS: tuple[str, ...] = (
    "{y}-13-45T99:00:00Z",
    "yesterday",
    "0000-00-00T00:00:00Z",
    "{y}-02-30T25:61:00Z",
)
_MALFORMED_DATES: tuple[str, ...] = ("{y}-13-45", "yesterday", "0000-00-00", "{y}-02-30")

MANIFEST_NAME = "_manifest.json"

_DAY = 86_400
_HOUR = 3_600
_US = 1_000_000
_BILLING_PERIOD_DAYS = 30
_PLAN_PRICE_PER_SEAT = np.array([0.0, 15.0, 45.0])  # basic (free), pro, enterprise; USD/seat/month
_BASIC, _PRO, _ENTERPRISE = 0, 1, 2
_LOGIN, _ENROLL, _VIDEO, _QUIZ, _CERTIFICATE = range(5)

_NAME_FIRST: tuple[str, ...] = (
    "Blue", "Bright", "Cedar", "Crescent", "Silver", "Golden", "Northern", "Summit", "Maple", "Harbor",
    "Granite", "Evergreen", "Copper", "Pioneer", "Lakeside", "Redwood", "Horizon", "Falcon", "Juniper",
    "Atlas", "Beacon", "Clearwater", "Ironwood", "Keystone", "Meridian", "Oakridge", "Pinnacle", "Quartz",
    "Riverbend", "Sterling", "Timber", "Vertex", "Willow", "Aspen", "Bluebird", "Coral", "Driftwood",
    "Elm", "Foxglove", "Highland",
)  # fmt: skip
_NAME_SECOND: tuple[str, ...] = (
    "Peak", "River", "Stone", "Field", "Ridge", "Bridge", "Harbor", "Grove", "Valley", "Point", "Crest",
    "Brook", "Gate", "Path", "Forge", "Works", "Light", "Wave", "Trail", "Mill", "Sound", "Haven",
    "Springs", "Hill", "Leaf", "Line", "Port", "Star", "Wind", "Wood",
)  # fmt: skip
_NAME_SUFFIX: tuple[str, ...] = (
    "Learning", "Labs", "Systems", "Group", "Partners", "Academy", "Solutions", "Industries", "Holdings",
    "Institute", "Health", "Analytics", "Logistics", "Retail", "Capital", "Foundation", "Co", "Inc", "Ltd",
    "GmbH", "LLC", "Consulting",
)  # fmt: skip

_COUNTRY_WEIGHTS = np.array([0.34, 0.10, 0.09, 0.07, 0.10, 0.07, 0.07, 0.06, 0.05, 0.05])
# Churners' activity fades over their last four weeks, down to a fifth of their usual rate.
_FADE_DAYS = 28
_FADE_FLOOR = 0.2
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
# An account has about utilization * seats ** _SEAT_EXPONENT active users (at least one): usage
# grows with seats, but sub-linearly, as large accounts roll out to teams over time.
_SEAT_EXPONENT = 0.5
_MARKETING_WEIGHTS = np.array([0.30, 0.22, 0.15, 0.15, 0.10, 0.08])
_INDUSTRY_NULL_SHARE = 0.08
_TICKET_CATEGORY_WEIGHTS = np.array([0.30, 0.20, 0.35, 0.15])
_TICKET_PRIORITY_WEIGHTS = np.array([0.35, 0.40, 0.20, 0.05])
_TICKET_MEDIAN_HOURS = np.array([48.0, 24.0, 8.0, 3.0])  # by priority: low, medium, high, urgent
# A popular head and a long tail, like any course catalogue.
_COURSE_WEIGHTS = 1.0 / np.arange(1, len(COURSE_IDS) + 1) ** 0.8
_COURSE_WEIGHTS /= _COURSE_WEIGHTS.sum()


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote.

    Attributes:
        out_dir: The folder holding the files.
        start: First instant of the window (UTC-aware).
        end: End of the window (UTC-aware); nothing is dated or ingested after it, except
            injected `future_timestamp` faults.
        files: Source name to the file written for it, in `SOURCES` order.
        rows: Source name to the number of data rows in its file (injected faults included).
        manifest: The fault manifest, or None when `dirty_rate` was 0.
    """

    out_dir: Path
    start: datetime
    end: datetime
    files: dict[str, Path]
    rows: dict[str, int]
    manifest: Path | None


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
        return self.plan != _BASIC


# --------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass, and True customers is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}; pass an int.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; pass {minimum} or more.")
    return int(value)


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}.")
    rate = float(value)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1 (a fraction, not a percentage), got {value!r}.")
    return rate


def resolve_window(*, start: datetime | date | None, days: int, now: datetime | None = None) -> Window:
    """Turn the user's `start` into the generation window.

    Args:
        start: None for a window ending at the current hour; a date (00:00 UTC) or a datetime
            (naive means UTC; sub-second parts are dropped) for a window starting there.
        days: Window length in days.
        now: The clock, for tests; defaults to the current UTC time.

    Returns:
        The window in whole epoch seconds.
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
    return Window(start_s=start_s, end_s=start_s + days * _DAY, days=days)


def _to_datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------


def _ids(prefix: str, width: int, numbers: np.ndarray) -> pa.Array:
    """`prefix` + zero-padded numbers, e.g. CUST-000042 (wider numbers are never truncated)."""
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _labels(values: tuple[str, ...], codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Strings from integer codes; rows where `valid` is False become null."""
    dictionary = pa.array(values, type=pa.string())
    out = pc.take(dictionary, pa.array(codes, type=pa.int64()))
    if valid is not None:
        out = pc.if_else(pa.array(valid), out, pa.nulls(len(out), pa.string()))
    return out


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * _US, type=pa.timestamp("us", tz="UTC"))


def _floats(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pa.array(np.asarray(values, dtype=np.float64), type=pa.float64(), mask=mask)


def _ints(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64(), mask=mask)


def _pick(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Category codes drawn with fixed `weights` (inverse CDF, one uniform per row)."""
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(weights) - 1)


def _pick_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category code per row of a (rows, categories) weight matrix."""
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random(weights.shape[0])[:, None]
    return np.minimum((cdf <= draws).sum(axis=1), weights.shape[1] - 1)


def _ingested(rng: np.random.Generator, event_s: np.ndarray, window: Window) -> np.ndarray:
    """Landing time: a few minutes after the event, but never after the window end."""
    return np.minimum(event_s + rng.integers(60, 15 * 60 + 1, event_s.size), window.end_s)


def _table(source: str, columns: dict[str, pa.Array]) -> pa.Table:
    names = [name for name, _ in SCHEMAS[source]]
    return pa.table([columns[name] for name in names], names=names)


# --------------------------------------------------------------------------------------------
# The world and the five sources (pure functions of the world, the window and a stream)
# --------------------------------------------------------------------------------------------


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
    plan = np.where(enterprise, _ENTERPRISE, np.where(paid, _PRO, _BASIC))

    seat_low = np.array([1, 2, 20])[plan]
    seat_high = np.array([3, 25, 200])[plan]
    seats = rng.integers(seat_low, seat_high + 1)

    start_day = window.start_s // _DAY
    signup_day = start_day - rng.integers(_SIGNUP_GAP_DAYS[0], _SIGNUP_GAP_DAYS[1] + 1, n)
    annual = (plan == _ENTERPRISE) | ((plan == _PRO) & (rng.random(n) < _PRO_ANNUAL_SHARE))

    u = rng.random(n)
    # An annual contract ends on a signup anniversary: its holder decides once, at the first
    # renewal inside the span (below), and cannot leave when the span holds no renewal.
    first = window.days // 4
    span = window.days - first
    years = np.maximum(1, -((signup_day - start_day - first) // _CONTRACT_YEAR_DAYS))
    renewal_day = signup_day + years * _CONTRACT_YEAR_DAYS - start_day
    renewal_s = window.start_s + renewal_day * _DAY + rng.integers(0, _DAY, n)
    utilization = _utilization(engagement, rng.standard_normal(n))

    # Accounts that use few of their seats leave more often (shelfware is what gets cancelled at
    # renewal); paying customers have more reasons to stay. Churn can happen from day days // 4
    # of the window on (the span), so that every churner has some history first. churn_p is the
    # chance of deciding to leave within the span.
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
    monthly_s = window.start_s + first * _DAY + np.floor(leave_days * _DAY).astype(np.int64)
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


def build_customers(
    pop: Population, window: Window, rng: np.random.Generator, *, plan_change_s: np.ndarray
) -> pa.Table:
    """The CRM extract: one row per customer, in its state at the window end.

    `ingested_at` is when the row's current version landed: a few minutes after the last
    change to it (signup, plan change or churn).

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.
        plan_change_s: Per customer, the instant of their plan change, or -1 for none.

    Returns:
        The `customers` table.
    """
    n = pop.size
    first = _labels(_NAME_FIRST, rng.integers(0, len(_NAME_FIRST), n))
    second = _labels(_NAME_SECOND, rng.integers(0, len(_NAME_SECOND), n))
    suffix = _labels(_NAME_SUFFIX, rng.integers(0, len(_NAME_SUFFIX), n))
    company = pc.binary_join_element_wise(first, second, suffix, " ")

    industry_valid = rng.random(n) >= _INDUSTRY_NULL_SHARE
    industry = _labels(INDUSTRIES, rng.integers(0, len(INDUSTRIES), n), industry_valid)
    country = _labels(COUNTRIES, _pick(rng, _COUNTRY_WEIGHTS, n))
    marketing = _labels(MARKETING_SOURCES, _pick(rng, _MARKETING_WEIGHTS, n))

    last_change = np.maximum(pop.signup_day * _DAY, plan_change_s)
    last_change = np.where(pop.churned, np.maximum(last_change, pop.churn_s), last_change)
    return _table(
        "customers",
        {
            "customer_id": _ids(*_ID_FORMATS["customers"], np.arange(1, n + 1)),
            "company_name": company,
            "signup_date": pa.array(pop.signup_day.astype(np.int32), type=pa.date32()),
            "plan_type": _labels(PLAN_TYPES, pop.plan),
            "seat_count": _ints(pop.seats),
            "industry": industry,
            "country": country,
            "marketing_source": marketing,
            "is_active": pa.array(~pop.churned, type=pa.bool_()),
            "ingested_at": _timestamps(_ingested(rng, last_change, window)),
        },
    )


def build_usage_events(pop: Population, window: Window, rng: np.random.Generator) -> pa.Table:
    """Product usage: sessions of a login plus learning events, on the customer's active days.

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.

    Returns:
        The `usage_events` table, in event-time order with ids minted in that order.
    """
    e = pop.engagement
    day_start = window.start_s + np.arange(window.days, dtype=np.int64) * _DAY
    # float32 halves the memory of the customer x day matrix; its resolution is plenty here.
    draws = rng.random((pop.size, window.days), dtype=np.float32)
    # Churners fade before they leave: activity thins out over the last weeks, as it does in real
    # feeds, which is what makes the timing of a churn predictable at all.
    days_left = (pop.stop_s[:, None] - day_start[None, :]) / _DAY
    fade = np.where(pop.churned[:, None], np.clip(days_left / _FADE_DAYS, _FADE_FLOOR, 1.0), 1.0).astype(
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
    sess_start = day_start[np.repeat(act_d, sessions)] + rng.integers(0, _DAY - _HOUR, sess_c.size)
    se = e[sess_c]

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
    offset = np.where(etype == _LOGIN, 0, rng.integers(30, _HOUR, etype.size))
    cust = sess_c[sess_idx]
    ts = sess_start[sess_idx] + offset
    ee = e[cust]

    minutes = np.round(np.minimum(rng.gamma(2.0, 3.0 + 12.0 * ee), 240.0), 2)
    score = np.round(np.clip(rng.normal(45.0 + 45.0 * ee, 12.0), 0.0, 100.0), 1)
    course = _pick(rng, _COURSE_WEIGHTS, etype.size)

    # A session cut short by the churn keeps only what happened before it.
    keep = ts < pop.stop_s[cust]
    order = np.lexsort((etype[keep], cust[keep], ts[keep]))
    cust, ts, etype = cust[keep][order], ts[keep][order], etype[keep][order]
    minutes, score, course = minutes[keep][order], score[keep][order], course[keep][order]
    ingested = _ingested(rng, ts, window)

    return _table(
        "usage_events",
        {
            "event_id": _ids(*_ID_FORMATS["usage_events"], np.arange(1, ts.size + 1)),
            "customer_id": _ids(*_ID_FORMATS["customers"], cust + 1),
            "event_timestamp": _timestamps(ts),
            "event_type": _labels(EVENT_TYPES, etype),
            "course_id": _labels(COURSE_IDS, course, etype != _LOGIN),
            "watch_minutes": _floats(minutes, etype == _VIDEO),
            "quiz_score": _floats(score, etype == _QUIZ),
            "ingested_at": _timestamps(ingested),
        },
    )


def build_support_tickets(pop: Population, window: Window, rng: np.random.Generator) -> pa.Table:
    """Support tickets: about 0.5% of customer-days, more and less happy for disengaged customers.

    A ticket whose resolution would fall after the window end is still open (null
    `resolution_hours`). `ingested_at` follows the row's last change: the resolution if any,
    else the creation.

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.

    Returns:
        The `support_tickets` table, in creation order with ids minted in that order.
    """
    e = pop.engagement
    alive_s = pop.stop_s - window.start_s
    # The factor averages 1 over Beta(2, 2.5), keeping the overall rate at 0.5% of customer-days.
    per_day = 0.005 * (0.3 + 1.26 * (1.0 - e))
    counts = rng.poisson(per_day * alive_s / _DAY)
    cust = np.repeat(np.arange(pop.size), counts)
    created = window.start_s + np.floor(rng.random(cust.size) * alive_s[cust]).astype(np.int64)
    order = np.lexsort((cust, created))
    cust, created = cust[order], created[order]
    ce = e[cust]

    category = _pick(rng, _TICKET_CATEGORY_WEIGHTS, cust.size)
    priority = _pick(rng, _TICKET_PRIORITY_WEIGHTS, cust.size)
    hours = np.round(_TICKET_MEDIAN_HOURS[priority] * np.exp(rng.normal(0.0, 0.8, cust.size)), 2)
    resolved = (rng.random(cust.size) >= 0.10) & (created + np.ceil(hours * _HOUR) <= window.end_s)
    score = np.clip(np.rint(rng.normal(1.8 + 2.8 * ce, 0.9)), 1, 5).astype(np.int64)
    answered = resolved & (rng.random(cust.size) >= 0.25)
    last_change = np.where(resolved, created + np.ceil(hours * _HOUR).astype(np.int64), created)

    return _table(
        "support_tickets",
        {
            "ticket_id": _ids(*_ID_FORMATS["support_tickets"], np.arange(1, cust.size + 1)),
            "customer_id": _ids(*_ID_FORMATS["customers"], cust + 1),
            "created_at": _timestamps(created),
            "category": _labels(TICKET_CATEGORIES, category),
            "priority": _labels(TICKET_PRIORITIES, priority),
            "resolution_hours": _floats(hours, resolved),
            "satisfaction_score": _ints(score, answered),
            "ingested_at": _timestamps(_ingested(rng, last_change, window)),
        },
    )


def build_billing(pop: Population, window: Window, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """Monthly invoices of paid customers, from signup until churn or the window end.

    Annual-contract customers are billed monthly too (an annual commitment, billed monthly).
    Plans are the customers' current plans; a few customers changed plan at one invoice
    (mostly pro to enterprise upgrades, some downgrades), so ~2% of invoices carry
    `previous_plan_type` and the invoices before it bill the previous plan.

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.

    Returns:
        The `billing` table in invoice-date order, and per customer the instant of their
        plan change (-1 for none).
    """
    n = pop.size
    e = pop.engagement
    paid = pop.paid
    signup_s = pop.signup_day * _DAY
    billing_time = rng.integers(0, 6 * _HOUR, n)  # the nightly billing run
    periods = int((window.end_s - signup_s.min()) // (_BILLING_PERIOD_DAYS * _DAY)) + 1 if n else 0
    k = np.arange(periods, dtype=np.int64)
    due = signup_s[:, None] + billing_time[:, None] + k[None, :] * _BILLING_PERIOD_DAYS * _DAY
    issued = paid[:, None] & (due < pop.stop_s[:, None])
    n_invoices = issued.sum(axis=1)

    # Pick changers so that ~2% of all invoices carry a change, upgrades four times as likely.
    eligible = paid & (n_invoices >= 2)
    enterprise = pop.plan == _ENTERPRISE
    weight = np.where(enterprise, 1.0, 0.25) * eligible
    change_p = min(1.0, 0.02 * n_invoices.sum() / weight.sum()) if weight.sum() > 0 else 0.0
    changed = rng.random(n) < change_p * weight
    change_k = 1 + np.floor(rng.random(n) * np.maximum(n_invoices - 1, 0)).astype(np.int64)
    change_k = np.where(changed, change_k, periods)
    previous_plan = np.where(enterprise, _PRO, _ENTERPRISE)
    plan_change_s = np.where(changed, due[np.arange(n), np.minimum(change_k, max(periods - 1, 0))], -1)

    cust, inv_k = np.nonzero(issued)
    inv_s = due[cust, inv_k]
    # Only a changer's invoices before the change bill the previous plan.
    billed = np.where(changed[cust] & (inv_k < change_k[cust]), previous_plan[cust], pop.plan[cust])
    is_change = inv_k == change_k[cust]
    amount = np.round(pop.seats[cust] * _PLAN_PRICE_PER_SEAT[billed], 2)

    # Disengaged customers' cards fail more (the factor averages 1 over Beta(2, 2.5)), and a leaving
    # customer's last invoices bounce more (cancelled cards, disputes); together about 7% fail.
    fail_p = 0.065 * (0.25 + 1.35 * (1.0 - e[cust]))
    leaving = pop.churned[cust] & (pop.stop_s[cust] - inv_s < _FADE_DAYS * _DAY)
    fail_p = np.where(leaving, fail_p + 0.15, fail_p)
    u = rng.random(cust.size)
    status = np.where(u < fail_p, 1, np.where(u < fail_p + 0.01, 2, 0))

    order = np.lexsort((cust, inv_s))
    cust, inv_s, billed, is_change = cust[order], inv_s[order], billed[order], is_change[order]
    amount, status = amount[order], status[order]
    table = _table(
        "billing",
        {
            "invoice_id": _ids(*_ID_FORMATS["billing"], np.arange(1, cust.size + 1)),
            "customer_id": _ids(*_ID_FORMATS["customers"], cust + 1),
            "invoice_date": _timestamps(inv_s),
            "amount": _floats(amount),
            "currency": pa.array(np.full(cust.size, CURRENCY), type=pa.string()),
            "payment_status": _labels(PAYMENT_STATUSES, status),
            "plan_type": _labels(PLAN_TYPES, billed),
            "previous_plan_type": _labels(PLAN_TYPES, previous_plan[cust], is_change),
            "ingested_at": _timestamps(_ingested(rng, inv_s, window)),
        },
    )
    return table, plan_change_s


def build_churn_labels(pop: Population, window: Window, rng: np.random.Generator) -> pa.Table:
    """One row per customer who churned inside the window, in churn-date order.

    Args:
        pop: The population.
        window: The generation window.
        rng: This source's random stream.

    Returns:
        The `churn_labels` table.
    """
    cust = np.flatnonzero(pop.churned)
    cust = cust[np.lexsort((cust, pop.churn_s[cust]))]
    e = pop.engagement[cust]
    u = pop.utilization[cust]
    paid = pop.paid[cust].astype(np.float64)
    # Columns follow CHURN_REASONS: price, low_usage, missing_features, competitor, support, other.
    weights = np.column_stack(
        [
            0.10 + 0.15 * paid,
            0.10 + 0.50 * (1.0 - u),
            np.full(cust.size, 0.15),
            np.full(cust.size, 0.15),
            0.05 + 0.10 * (1.0 - e),
            np.full(cust.size, 0.08),
        ]
    )
    reason = _pick_rows(rng, weights) if cust.size else np.zeros(0, dtype=np.int64)
    churn_s = pop.churn_s[cust]
    return _table(
        "churn_labels",
        {
            "customer_id": _ids(*_ID_FORMATS["customers"], cust + 1),
            "churn_date": _timestamps(churn_s),
            "churn_reason": _labels(CHURN_REASONS, reason),
            "ingested_at": _timestamps(_ingested(rng, churn_s, window)),
        },
    )


# --------------------------------------------------------------------------------------------
# Text forms and fault injection
# --------------------------------------------------------------------------------------------


def _iso_strings(column: pa.ChunkedArray | pa.Array, kind: str) -> pa.Array:
    """ISO-8601 text of a timestamp (`2026-07-24T13:05:12Z`) or date (`2026-07-24`) column."""
    if pa.types.is_string(column.type):
        return column
    if kind == "date":
        return pc.cast(column, pa.string())
    # Arrow renders "2026-07-24 13:05:12"; the text is ASCII, so a byte slice swap is safe.
    text = pc.binary_join_element_wise(pc.cast(pc.cast(column, pa.timestamp("s")), pa.string()), "Z", "")
    return pc.binary_replace_slice(text, 10, 11, "T")


def stringify_times(source: str, table: pa.Table) -> pa.Table:
    """Replace every timestamp and date column by its ISO-8601 text.

    Args:
        source: The source name.
        table: A table of that source.

    Returns:
        The table with string time columns.
    """
    for name, kind in SCHEMAS[source]:
        if kind in ("ts", "date"):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, _iso_strings(table.column(i), kind))
    return table


def _fixed_decimals(column: pa.ChunkedArray, decimals: int) -> pa.Array:
    """Floats as text with exactly `decimals` decimals (Arrow would write 30.0 as `30`)."""
    values = column.to_numpy(zero_copy_only=False)
    valid = ~np.isnan(values)
    scaled = np.rint(np.abs(np.where(valid, values, 0.0)) * 10**decimals).astype(np.int64)
    whole = pa.array(scaled // 10**decimals).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(scaled % 10**decimals).cast(pa.string()), decimals, "0")
    sign = pa.array(np.where(values < 0, "-", ""), type=pa.string())
    text = pc.binary_join_element_wise(sign, whole, ".", frac, "")
    return pc.if_else(pa.array(valid), text, pa.nulls(len(text), pa.string()))


def to_csv_table(source: str, table: pa.Table) -> pa.Table:
    """The table as CSV text columns: ISO times, fixed-decimal floats; other types as they are.

    Args:
        source: The source name.
        table: A table of that source.

    Returns:
        The table to hand to the CSV writer.
    """
    table = stringify_times(source, table)
    for name, kind in SCHEMAS[source]:
        if kind in ("f1", "f2"):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, _fixed_decimals(table.column(i), int(kind[1])))
    return table


def fault_count(rows: int, rate: float) -> int:
    """How many rows of one fault kind a source of `rows` clean rows gets.

    At least one when both are positive, so a small dirty sample still shows every kind.

    Args:
        rows: Clean rows in the source.
        rate: The dirty rate.

    Returns:
        The count.
    """
    if rows <= 0 or rate <= 0.0:
        return 0
    return max(1, math.floor(rate * rows + 0.5))


def _seconds(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy() // _US


def _bad_times(rng: np.random.Generator, size: int, patterns: tuple[str, ...], year: int) -> pa.Array:
    values = np.array([p.format(y=year) for p in patterns])
    return pa.array(values[rng.integers(0, len(values), size)], type=pa.string())


def inject_faults(
    source: str,
    table: pa.Table,
    *,
    rate: float,
    window: Window,
    rng: np.random.Generator,
    next_id: int,
    ghost_ids: np.ndarray,
    spare_label_ids: np.ndarray,
) -> tuple[pa.Table, list[dict[str, object]]]:
    """Add faulty rows to one source's clean table and say where they landed.

    Every fault except `late_arrival` is an extra row: a copy of a random clean row with one
    thing broken and, unless the key is the broken thing or the row is an exact duplicate, a
    fresh key (so valid rows keep unique keys). Late arrivals are clean event rows whose
    `ingested_at` is moved 2-10 days after the event (never past the window end). Extra rows
    are scattered through the file; a duplicate always lands after its original.

    Args:
        source: The source name.
        table: Its clean typed table.
        rate: The dirty rate.
        window: The generation window.
        rng: This source's fault stream.
        next_id: The first unused number of the source's own id sequence.
        ghost_ids: Customer ids that exist nowhere in `customers`, for `unknown_customer`.
        spare_label_ids: Ids of customers without a churn label, the fresh keys of faulty
            `churn_labels` rows.

    Returns:
        The table with string time columns and the faults in place, and one manifest entry per
        faulty row (1-based row of the final file).
    """
    n = table.num_rows
    key = KEY_COLUMNS[source]
    plan = [(kind, col, fault_count(n, rate)) for kind, col in FAULT_PLAN[source]]
    # Without replacement, so two null-key copies of one row never make an unlisted duplicate.
    sources = {
        kind: np.sort(rng.choice(n, size=count, replace=False))
        for kind, _, count in plan
        if kind != "late_arrival"
    }

    late_rows = np.zeros(0, dtype=np.int64)
    late_count = next((count for kind, _, count in plan if kind == "late_arrival"), 0)
    if late_count:
        event_s = _seconds(table.column("event_timestamp"))
        # Extra rows are copies taken after this step: a late original would hand its late
        # ingested_at to a copy, giving that row a second fault (or breaking a duplicate).
        taken = np.zeros(n, dtype=bool)
        for src in sources.values():
            taken[src] = True
        eligible = np.flatnonzero(~taken & (event_s + 2 * _DAY <= window.end_s))
        late_rows = np.sort(rng.permutation(eligible)[:late_count])
        room = np.minimum(10 * _DAY, window.end_s - event_s[late_rows])
        delay = 2 * _DAY + np.floor(rng.random(late_rows.size) * (room - 2 * _DAY + 1)).astype(np.int64)
        ingested = _seconds(table.column("ingested_at"))
        ingested[late_rows] = event_s[late_rows] + delay
        i = table.schema.get_field_index("ingested_at")
        table = table.set_column(i, "ingested_at", _timestamps(ingested))

    table = stringify_times(source, table)
    year = _to_datetime(window.end_s).year
    kinds_of = dict(SCHEMAS[source])
    extras: list[pa.Table] = []
    extra_kinds: list[str] = []
    extra_cols: list[str | None] = []
    anchors: list[np.ndarray] = []
    spare = rng.permutation(spare_label_ids)
    for kind, col, _ in plan:
        if kind == "late_arrival":
            continue
        src = sources[kind]
        if kind != "duplicate_row" and kind != "null_key" and source == "churn_labels":
            # Labels have no id of their own: borrow unlabeled customers, while they last.
            src = src[: spare.size]
        part = table.take(pa.array(src, type=pa.int64()))
        count = part.num_rows
        if kind not in ("duplicate_row", "null_key"):
            if source == "churn_labels":
                fresh, spare = pa.array(spare[:count], type=pa.string()), spare[count:]
            else:
                fresh = _ids(*_ID_FORMATS[source], np.arange(next_id, next_id + count))
                next_id += count
            part = part.set_column(part.schema.get_field_index(key), key, fresh)
        if col is not None and kind != "duplicate_row":
            i = part.schema.get_field_index(col)
            part = part.set_column(
                i, col, _broken(kind, col, kinds_of[col], part.column(i), rng, window, year, ghost_ids)
            )
        if kind == "duplicate_row":
            anchor = rng.integers(src, n) if count else np.zeros(0, dtype=np.int64)
        else:
            anchor = rng.integers(-1, n, count)
        extras.append(part)
        extra_kinds += [kind] * count
        extra_cols += [col] * count
        anchors.append(anchor)

    extra_anchor = np.concatenate(anchors) if anchors else np.zeros(0, dtype=np.int64)
    m = extra_anchor.size
    # Clean rows keep their order; each extra row lands right after its anchor row (-1: first).
    anchor = np.concatenate([np.arange(n), extra_anchor])
    after = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)])
    tiebreak = np.concatenate([np.zeros(n), rng.random(m)])
    order = np.lexsort((tiebreak, after, anchor))
    final = pa.concat_tables([table, *extras]).take(pa.array(order, type=pa.int64()))
    position = np.empty(n + m, dtype=np.int64)
    position[order] = np.arange(n + m)

    rows = np.concatenate([position[late_rows], position[n:]]) + 1
    kinds = ["late_arrival"] * late_rows.size + extra_kinds
    cols = ["ingested_at"] * late_rows.size + extra_cols
    keys = final.column(key).take(pa.array(rows - 1, type=pa.int64())).to_pylist()
    faults = [
        {"source": source, "kind": kind, "row": int(row), "key": k, "column": col}
        for row, kind, k, col in zip(rows.tolist(), kinds, keys, cols, strict=True)
    ]
    faults.sort(key=lambda f: f["row"])
    return final, faults


def _broken(
    kind: str,
    col: str,
    col_kind: str,
    values: pa.ChunkedArray,
    rng: np.random.Generator,
    window: Window,
    year: int,
    ghost_ids: np.ndarray,
) -> pa.Array:
    """The damaged replacement of one column for `count` faulty rows of one kind."""
    count = len(values)
    if kind == "null_key":
        return pa.nulls(count, pa.string())
    if kind == "unknown_enum":
        return pa.array([UNKNOWN_ENUM_VALUES[col]] * count, type=pa.string())
    if kind == "negative_amount":
        return pc.negate(values.combine_chunks())
    if kind == "malformed_timestamp":
        patterns = _MALFORMED_DATES if col_kind == "date" else _MALFORMED_TIMESTAMPS
        return _bad_times(rng, count, patterns, year)
    if kind == "unknown_customer":
        return pa.array(ghost_ids[rng.integers(0, ghost_ids.size, count)], type=pa.string())
    if kind == "future_timestamp":
        ahead = window.end_s + rng.integers(_DAY, 30 * _DAY, count)
        return _iso_strings(_timestamps(ahead), "ts")
    raise ValueError(f"no column damage is defined for fault kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_csv(table: pa.Table, path: Path) -> None:
    # Arrow quotes every string and the header unless told not to; plain values keep readers'
    # type sniffing simple. Our values never hold a comma, quote or newline, but should one
    # ever appear, quoting where needed keeps the file valid.
    header = (",".join(table.column_names) + "\n").encode()
    for style in ("none", "needed"):
        try:
            with path.open("wb") as sink:
                sink.write(header)
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style=style))
            return
        except pa.ArrowInvalid:
            if style == "needed":
                raise


def write_source(source: str, table: pa.Table, path: Path, fmt: str) -> None:
    """Write one source table as CSV (ISO text times, empty = null) or Parquet, atomically.

    Args:
        source: The source name.
        table: Its table (typed, or with string time columns when dirty).
        path: Destination file.
        fmt: "csv" or "parquet".
    """
    if fmt == "csv":
        text = to_csv_table(source, table)
        write_atomic(path, lambda tmp: _write_csv(text, tmp))
    else:
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def _write_manifest(path: Path, *, seed: int, dirty_rate: float, faults: list[dict[str, object]]) -> None:
    # One fault per line keeps a large manifest diffable and greppable while staying plain JSON.
    head = f'{{"seed": {json.dumps(seed)}, "dirty_rate": {json.dumps(dirty_rate)}, "faults": ['
    lines = ",\n".join("  " + json.dumps(f) for f in faults)
    body = head + ("\n" + lines + "\n" if faults else "") + "]}\n"
    write_atomic(path, lambda tmp: tmp.write_text(body, encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------


def generate(
    *,
    out_dir: Path,
    customers: int = 2000,
    days: int = 120,
    seed: int = 42,
    churn_base_rate: float = 0.35,
    paid_ratio: float = 0.35,
    start: datetime | date | None = None,
    fmt: Literal["csv", "parquet"] = "csv",
    dirty_rate: float = 0.0,
) -> GenerateResult:
    """Generate the five landing sources into `out_dir`.

    With an explicit `start`, the same arguments always give byte-identical files.

    Args:
        out_dir: Folder for `<source>.csv` / `<source>.parquet` (created if missing).
        customers: Number of customers (>= 1).
        days: Window length in days (>= 1).
        seed: Random seed (>= 0).
        churn_base_rate: Base churn probability in [0, 1]: the chance that a customer decides to
            leave within the window's last three quarters (scaled by seat utilization and plan). An
            annual-contract customer (65% of paid customers) can only act on it when a signup
            anniversary falls in that part of the window, which happens for a share `r` of them
            (90/371 for 120 days, from signups spread evenly over 30-400 days before the window).
            The realised rate is about
            `churn_base_rate * 0.986 * (1 - 0.25 * paid_ratio - 0.4875 * paid_ratio * (1 - r))`.
        paid_ratio: Share of customers on paid plans (pro or enterprise) in [0, 1].
        start: Window start: a datetime (naive means UTC), a date (00:00 UTC), or None for a
            window of `days` ending at the current UTC hour.
        fmt: "csv" or "parquet".
        dirty_rate: In [0, 1]; when positive, about this share of each source's rows per
            applicable fault kind is injected and `_manifest.json` lists every faulty row.
            At 0 no faults are injected and a stale manifest is removed.

    Returns:
        What was written.

    Raises:
        ValueError: If an argument is out of range.
    """
    customers = _check_int("customers", customers, 1)
    days = _check_int("days", days, 1)
    seed = _check_int("seed", seed, 0)
    churn_base_rate = _check_rate("churn_base_rate", churn_base_rate)
    paid_ratio = _check_rate("paid_ratio", paid_ratio)
    dirty_rate = _check_rate("dirty_rate", dirty_rate)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}.")
    window = resolve_window(start=start, days=days)

    # One independent stream per purpose: fixed order, so adding a purpose means appending.
    streams = np.random.SeedSequence(seed).spawn(7)
    population_rng, *source_streams, faults_stream = streams
    rngs = {s: np.random.default_rng(ss) for s, ss in zip(SOURCES, source_streams, strict=True)}

    pop = build_population(
        customers=customers,
        window=window,
        churn_base_rate=churn_base_rate,
        paid_ratio=paid_ratio,
        rng=np.random.default_rng(population_rng),
    )
    billing, plan_change_s = build_billing(pop, window, rngs["billing"])
    tables = {
        "customers": build_customers(pop, window, rngs["customers"], plan_change_s=plan_change_s),
        "usage_events": build_usage_events(pop, window, rngs["usage_events"]),
        "support_tickets": build_support_tickets(pop, window, rngs["support_tickets"]),
        "billing": billing,
        "churn_labels": build_churn_labels(pop, window, rngs["churn_labels"]),
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    faults: list[dict[str, object]] = []
    if dirty_rate > 0:
        fault_rngs = [np.random.default_rng(ss) for ss in faults_stream.spawn(len(SOURCES))]
        # Ghosts are numbered past every customer id the customers file can contain.
        customer_extras = sum(fault_count(customers, dirty_rate) for _ in FAULT_PLAN["customers"])
        ghost_start = customers + customer_extras + 1
        ghosts = np.array(
            _ids("CUST-", 6, np.arange(ghost_start, ghost_start + max(1, customers // 20))).to_pylist(),
            dtype=str,
        )
        unlabeled = np.array(_ids("CUST-", 6, np.flatnonzero(~pop.churned) + 1).to_pylist(), dtype=str)
        for source, frng in zip(SOURCES, fault_rngs, strict=True):
            tables[source], found = inject_faults(
                source,
                tables[source],
                rate=dirty_rate,
                window=window,
                rng=frng,
                next_id=tables[source].num_rows + 1 if source != "customers" else customers + 1,
                ghost_ids=ghosts,
                spare_label_ids=unlabeled,
            )
            faults += found

    files: dict[str, Path] = {}
    for source in SOURCES:
        files[source] = out_dir / f"{source}.{fmt}"
        write_source(source, tables[source], files[source], fmt)

    if dirty_rate > 0:
        _write_manifest(manifest_path, seed=seed, dirty_rate=dirty_rate, faults=faults)
        manifest: Path | None = manifest_path
    else:
        manifest_path.unlink(missing_ok=True)
        manifest = None

    return GenerateResult(
        out_dir=out_dir,
        start=_to_datetime(window.start_s),
        end=_to_datetime(window.end_s),
        files=files,
        rows={source: tables[source].num_rows for source in SOURCES},
        manifest=manifest,
    )
