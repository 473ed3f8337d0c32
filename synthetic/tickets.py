"""Support tickets: more, and less happy, for disengaged customers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from churnops.synthetic.columns import floats, ids, ingested, ints, labels, pick, timestamps
from churnops.synthetic.customers import customer_ids
from churnops.synthetic.schemas import id_format, make_table
from churnops.synthetic.world import DAY, HOUR, Population, Window

TICKET_CATEGORIES: tuple[str, ...] = ("bug", "feature_request", "how_to", "billing")
TICKET_PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")

_TICKET_CATEGORY_WEIGHTS = np.array([0.30, 0.20, 0.35, 0.15])
_TICKET_PRIORITY_WEIGHTS = np.array([0.35, 0.40, 0.20, 0.05])
_TICKET_MEDIAN_HOURS = np.array([48.0, 24.0, 8.0, 3.0])  # by priority: low, medium, high, urgent


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
    counts = rng.poisson(per_day * alive_s / DAY)
    cust = np.repeat(np.arange(pop.size), counts)
    created = window.start_s + np.floor(rng.random(cust.size) * alive_s[cust]).astype(np.int64)
    order = np.lexsort((cust, created))
    cust, created = cust[order], created[order]
    ce = e[cust]

    category = pick(rng, _TICKET_CATEGORY_WEIGHTS, cust.size)
    priority = pick(rng, _TICKET_PRIORITY_WEIGHTS, cust.size)
    hours = np.round(_TICKET_MEDIAN_HOURS[priority] * np.exp(rng.normal(0.0, 0.8, cust.size)), 2)
    resolved = (rng.random(cust.size) >= 0.10) & (created + np.ceil(hours * HOUR) <= window.end_s)
    score = np.clip(np.rint(rng.normal(1.8 + 2.8 * ce, 0.9)), 1, 5).astype(np.int64)
    answered = resolved & (rng.random(cust.size) >= 0.25)
    last_change = np.where(resolved, created + np.ceil(hours * HOUR).astype(np.int64), created)

    return make_table(
        "support_tickets",
        {
            "ticket_id": ids(*id_format("support_tickets"), np.arange(1, cust.size + 1)),
            "customer_id": customer_ids(cust + 1),
            "created_at": timestamps(created),
            "category": labels(TICKET_CATEGORIES, category),
            "priority": labels(TICKET_PRIORITIES, priority),
            "resolution_hours": floats(hours, resolved),
            "satisfaction_score": ints(score, answered),
            "ingested_at": timestamps(ingested(rng, last_change, window)),
        },
    )
