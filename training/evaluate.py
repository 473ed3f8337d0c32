"""Metrics of a churn score: ranking, calibration, and what a retention team acting on the top decile gets."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

TOP_FRACTION = 0.1

METRIC_NAMES = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "precision_top_decile",
    "recall_top_decile",
    "lift_top_decile",
)


def expected_top_hits(*, y_true: np.ndarray, scores: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Expected positives among the ceil(fraction · n) highest-scored rows, ties shared out evenly.

    Rows scored above the cut are taken whole; rows tied at the cut contribute in proportion to
    the places left, as if the tie were broken at random. The result does not depend on row order,
    and a constant score gets exactly the base rate.

    Args:
        y_true: Labels, 0 or 1.
        scores: One score per row.
        fraction: The share of rows to take, in (0, 1].

    Returns:
        The expected number of positives in the top fraction.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(scores, dtype=float)
    count = math.ceil(fraction * len(p))
    cut = np.sort(p)[::-1][count - 1]
    above, tied = p > cut, p == cut
    places_left = count - int(above.sum())
    return float(y[above].sum() + y[tied].sum() * places_left / int(tied.sum()))


def classification_metrics(*, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), Brier score, log loss, and top-decile precision, recall, lift.

    The top decile is the ceil(n / 10) highest scores, ties at the cut shared out evenly
    (`expected_top_hits`); lift is its churn rate over the overall churn rate.

    Args:
        y_true: Labels, 0 or 1, with both classes present.
        scores: Predicted churn probabilities in [0, 1].

    Returns:
        The metrics keyed by `METRIC_NAMES`.

    Raises:
        ValueError: When the lengths differ or a class is absent.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(scores, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError("metrics need both classes in the labels; this window has only one")
    top_count = math.ceil(TOP_FRACTION * len(y))
    top_hits = expected_top_hits(y_true=y, scores=p)
    precision_top = top_hits / top_count
    base_rate = positives / len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "precision_top_decile": precision_top,
        "recall_top_decile": top_hits / positives,
        "lift_top_decile": precision_top / base_rate,
    }
