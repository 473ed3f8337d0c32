"""The CRM extract: one row per customer, in its state at the window end."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churnops.synthetic.columns import ids, ingested, ints, labels, pick, timestamps
from churnops.synthetic.schemas import id_format, make_table
from churnops.synthetic.world import DAY, PLAN_TYPES, Population, Window

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
_MARKETING_WEIGHTS = np.array([0.30, 0.22, 0.15, 0.15, 0.10, 0.08])
_INDUSTRY_NULL_SHARE = 0.08


def customer_ids(numbers: np.ndarray) -> pa.Array:
    """Customer ids in the format the `customers` contract gives them.

    Args:
        numbers: 1-based customer numbers.

    Returns:
        The ids, e.g. CUST-000042.
    """
    return ids(*id_format("customers"), numbers)


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
    first = labels(_NAME_FIRST, rng.integers(0, len(_NAME_FIRST), n))
    second = labels(_NAME_SECOND, rng.integers(0, len(_NAME_SECOND), n))
    suffix = labels(_NAME_SUFFIX, rng.integers(0, len(_NAME_SUFFIX), n))
    company = pc.binary_join_element_wise(first, second, suffix, " ")

    industry_valid = rng.random(n) >= _INDUSTRY_NULL_SHARE
    industry = labels(INDUSTRIES, rng.integers(0, len(INDUSTRIES), n), industry_valid)
    country = labels(COUNTRIES, pick(rng, _COUNTRY_WEIGHTS, n))
    marketing = labels(MARKETING_SOURCES, pick(rng, _MARKETING_WEIGHTS, n))

    last_change = np.maximum(pop.signup_day * DAY, plan_change_s)
    last_change = np.where(pop.churned, np.maximum(last_change, pop.churn_s), last_change)
    return make_table(
        "customers",
        {
            "customer_id": customer_ids(np.arange(1, n + 1)),
            "company_name": company,
            "signup_date": pa.array(pop.signup_day.astype(np.int32), type=pa.date32()),
            "plan_type": labels(PLAN_TYPES, pop.plan),
            "seat_count": ints(pop.seats),
            "industry": industry,
            "country": country,
            "marketing_source": marketing,
            "is_active": pa.array(~pop.churned, type=pa.bool_()),
            "ingested_at": timestamps(ingested(rng, last_change, window)),
        },
    )
