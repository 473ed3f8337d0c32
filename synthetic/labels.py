"""Churn labels: the customers who cancelled inside the window, and why."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from churnops.synthetic.columns import ingested, labels, pick_rows, timestamps
from churnops.synthetic.customers import customer_ids
from churnops.synthetic.schemas import make_table
from churnops.synthetic.world import Population, Window

CHURN_REASONS: tuple[str, ...] = ("price", "low_usage", "missing_features", "competitor", "support", "other")


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
    reason = pick_rows(rng, weights) if cust.size else np.zeros(0, dtype=np.int64)
    churn_s = pop.churn_s[cust]
    return make_table(
        "churn_labels",
        {
            "customer_id": customer_ids(cust + 1),
            "churn_date": timestamps(churn_s),
            "churn_reason": labels(CHURN_REASONS, reason),
            "ingested_at": timestamps(ingested(rng, churn_s, window)),
        },
    )
