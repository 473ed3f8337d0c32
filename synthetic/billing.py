"""Monthly invoices of paid customers, with the occasional plan change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from churnops.synthetic.columns import floats, ids, ingested, labels, timestamps
from churnops.synthetic.customers import customer_ids
from churnops.synthetic.schemas import id_format, make_table
from churnops.synthetic.world import DAY, ENTERPRISE, FADE_DAYS, HOUR, PLAN_TYPES, PRO, Population, Window

PAYMENT_STATUSES: tuple[str, ...] = ("paid", "failed", "refunded")
CURRENCY = "USD"

_BILLING_PERIOD_DAYS = 30
_PLAN_PRICE_PER_SEAT = np.array([0.0, 15.0, 45.0])  # basic (free), pro, enterprise; USD/seat/month


@dataclass(frozen=True)
class _PlanChanges:
    """Which customers changed plan, at which invoice, and from what."""

    changed: np.ndarray
    change_k: np.ndarray
    previous_plan: np.ndarray
    plan_change_s: np.ndarray


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
    due, issued = _invoice_schedule(pop, window, rng)
    changes = _plan_changes(pop, due, issued.sum(axis=1), rng)

    cust, inv_k = np.nonzero(issued)
    inv_s = due[cust, inv_k]
    # Only a changer's invoices before the change bill the previous plan.
    before_change = changes.changed[cust] & (inv_k < changes.change_k[cust])
    billed = np.where(before_change, changes.previous_plan[cust], pop.plan[cust])
    is_change = inv_k == changes.change_k[cust]
    amount = np.round(pop.seats[cust] * _PLAN_PRICE_PER_SEAT[billed], 2)
    status = _payment_status(pop, cust, inv_s, rng)

    order = np.lexsort((cust, inv_s))
    cust, inv_s, billed, is_change = cust[order], inv_s[order], billed[order], is_change[order]
    amount, status = amount[order], status[order]
    table = make_table(
        "billing",
        {
            "invoice_id": ids(*id_format("billing"), np.arange(1, cust.size + 1)),
            "customer_id": customer_ids(cust + 1),
            "invoice_date": timestamps(inv_s),
            "amount": floats(amount),
            "currency": pa.array(np.full(cust.size, CURRENCY), type=pa.string()),
            "payment_status": labels(PAYMENT_STATUSES, status),
            "plan_type": labels(PLAN_TYPES, billed),
            "previous_plan_type": labels(PLAN_TYPES, changes.previous_plan[cust], is_change),
            "ingested_at": timestamps(ingested(rng, inv_s, window)),
        },
    )
    return table, changes.plan_change_s


def _invoice_schedule(
    pop: Population, window: Window, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Every customer's due instants (customer x period) and which of them are invoiced."""
    signup_s = pop.signup_day * DAY
    billing_time = rng.integers(0, 6 * HOUR, pop.size)  # the nightly billing run
    periods = int((window.end_s - signup_s.min()) // (_BILLING_PERIOD_DAYS * DAY)) + 1 if pop.size else 0
    k = np.arange(periods, dtype=np.int64)
    due = signup_s[:, None] + billing_time[:, None] + k[None, :] * _BILLING_PERIOD_DAYS * DAY
    issued = pop.paid[:, None] & (due < pop.stop_s[:, None])
    return due, issued


def _plan_changes(
    pop: Population, due: np.ndarray, n_invoices: np.ndarray, rng: np.random.Generator
) -> _PlanChanges:
    """Pick changers so that ~2% of all invoices carry a change, upgrades four times as likely."""
    n = pop.size
    periods = due.shape[1]
    eligible = pop.paid & (n_invoices >= 2)
    enterprise = pop.plan == ENTERPRISE
    weight = np.where(enterprise, 1.0, 0.25) * eligible
    change_p = min(1.0, 0.02 * n_invoices.sum() / weight.sum()) if weight.sum() > 0 else 0.0
    changed = rng.random(n) < change_p * weight
    change_k = 1 + np.floor(rng.random(n) * np.maximum(n_invoices - 1, 0)).astype(np.int64)
    change_k = np.where(changed, change_k, periods)
    previous_plan = np.where(enterprise, PRO, ENTERPRISE)
    plan_change_s = np.where(changed, due[np.arange(n), np.minimum(change_k, max(periods - 1, 0))], -1)
    return _PlanChanges(
        changed=changed, change_k=change_k, previous_plan=previous_plan, plan_change_s=plan_change_s
    )


def _payment_status(
    pop: Population, cust: np.ndarray, inv_s: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Payment status codes (0 paid, 1 failed, 2 refunded) of the invoices."""
    # Disengaged customers' cards fail more (the factor averages 1 over Beta(2, 2.5)), and a leaving
    # customer's last invoices bounce more (cancelled cards, disputes); together about 7% fail.
    fail_p = 0.065 * (0.25 + 1.35 * (1.0 - pop.engagement[cust]))
    leaving = pop.churned[cust] & (pop.stop_s[cust] - inv_s < FADE_DAYS * DAY)
    fail_p = np.where(leaving, fail_p + 0.15, fail_p)
    u = rng.random(cust.size)
    return np.where(u < fail_p, 1, np.where(u < fail_p + 0.01, 2, 0))
