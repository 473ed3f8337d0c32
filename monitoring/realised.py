"""Realised performance: served predictions joined to the churn they predicted, per ISO week.

A prediction made at T for customer c predicts churn in (T, T + horizon] (the training label's
window, `training.labels.HORIZON`). It is evaluated at time E only when that window has closed
(T + horizon <= E), and only with what was known at E: a `churn_labels` row whose `ingested_at`
is after E is ignored, as if it had not arrived (the customer counts as not churned), so a run
at E gives the same figures whenever it is repeated. A prediction of a customer whose (known)
churn date is at or before T is left out, as training leaves such observations out.

Each ISO week of prediction time and each model version get ROC AUC, PR AUC (average
precision), the Brier score, the mean predicted probability and the observed churn rate. A group
is graded when it has at least `min_rows` predictions and both outcomes: below the contract's
floor it blocks, and trailing the version's own test figure (from MLflow) by more than
`max_drop` it warns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from churnops.contracts.feature_contract import Performance
from churnops.storage import prediction_log_schema as log
from churnops.training.labels import first_churn_dates

Grade = Literal["ok", "warn", "block", "ungraded"]
_SEVERITY = {"ungraded": 0, "ok": 0, "warn": 1, "block": 2}


@dataclass(frozen=True)
class WeekFigures:
    """Realised figures of one ISO week's predictions by one model version.

    Attributes:
        week: ISO week of the prediction times, e.g. `2026-W45`.
        model_version: The version that answered.
        rows: Matured predictions evaluated.
        positives: Of which the customer churned within the horizon.
        roc_auc: ROC AUC (NaN with one outcome only).
        pr_auc: Average precision (NaN with one outcome only).
        brier: Brier score.
        mean_predicted: Mean predicted probability.
        observed_rate: Observed churn rate.
        test_figure: The version's test figure of the graded metric (NaN when MLflow has none).
        status: `ok`, `warn`, `block`, or `ungraded` (too few rows or one outcome).
    """

    week: str
    model_version: str
    rows: int
    positives: int
    roc_auc: float
    pr_auc: float
    brier: float
    mean_predicted: float
    observed_rate: float
    test_figure: float
    status: Grade

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (NaN as None)."""
        return {k: _json(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Realised:
    """Realised performance over the matured predictions.

    Attributes:
        evaluated_at: The evaluation time E.
        metric: The graded metric.
        floor: The contract's floor.
        max_drop: The contract's tolerated drop from the test figure.
        matured: Matured predictions read from the log.
        excluded_churned_before: Of which left out (the customer had churned before the prediction).
        pending: Predictions whose outcome window has not closed yet (not evaluated).
        late_labels_ignored: `churn_labels` rows ingested after E (not used).
        weeks: One entry per (ISO week, model version), oldest first.
    """

    evaluated_at: datetime
    metric: str
    floor: float
    max_drop: float
    matured: int
    excluded_churned_before: int
    pending: int
    late_labels_ignored: int
    weeks: tuple[WeekFigures, ...] = field(default_factory=tuple)

    @property
    def status(self) -> Grade:
        """The grade of the latest graded week (its worst version), `ungraded` when none is."""
        graded = [w for w in self.weeks if w.status != "ungraded"]
        if not graded:
            return "ungraded"
        latest = max(w.week for w in graded)
        return max((w.status for w in graded if w.week == latest), key=_SEVERITY.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary."""
        return {
            "evaluated_at": self.evaluated_at.isoformat(),
            "metric": self.metric,
            "floor": self.floor,
            "max_drop": self.max_drop,
            "status": self.status,
            "matured": self.matured,
            "excluded_churned_before": self.excluded_churned_before,
            "pending": self.pending,
            "late_labels_ignored": self.late_labels_ignored,
            "weeks": [w.to_dict() for w in self.weeks],
        }


def known_labels(*, churn_labels: pd.DataFrame, at: datetime) -> tuple[pd.DataFrame, int]:
    """The churn labels known at `at`: rows ingested at or before it.

    Args:
        churn_labels: The lake's `churn_labels` (`customer_id`, `churn_date`, `ingested_at`).
        at: The evaluation time (UTC).

    Returns:
        The known rows, and how many rows were left out as ingested later.
    """
    if churn_labels.empty:
        return churn_labels, 0
    ingested = pd.to_datetime(churn_labels["ingested_at"], utc=True)
    known = ingested <= pd.Timestamp(at)
    return churn_labels[known.to_numpy()].reset_index(drop=True), int((~known).sum())


def label_predictions(
    *, predictions: pd.DataFrame, churn_labels: pd.DataFrame, horizon: timedelta
) -> tuple[pd.DataFrame, int]:
    """Attach the realised outcome to matured predictions.

    Args:
        predictions: `customer_id`, `predicted_at` (UTC), `churn_probability`, `model_version`.
        churn_labels: The known labels (see `known_labels`).
        horizon: The outcome window.

    Returns:
        The predictions still observable at their time, with an int `outcome` column, and how many
        were left out because the customer had already churned.
    """
    if churn_labels.empty:
        churn_at = pd.Series(pd.NaT, index=predictions.index, dtype="datetime64[us, UTC]")
    else:
        dates = first_churn_dates(churn_labels=churn_labels)
        churn_at = predictions[log.CUSTOMER_ID].astype(str).map(dates)
    at = predictions[log.PREDICTED_AT]
    gone = (churn_at.notna() & (churn_at <= at)).to_numpy()
    outcome = (churn_at.notna() & (churn_at > at) & (churn_at <= at + horizon)).astype("int64")
    labelled = predictions.assign(outcome=outcome.to_numpy())[~gone].reset_index(drop=True)
    return labelled, int(gone.sum())


def weekly_figures(
    *, labelled: pd.DataFrame, performance: Performance, test_figures: dict[str, float]
) -> tuple[WeekFigures, ...]:
    """Per ISO week of prediction time and model version: ranking and calibration, graded.

    Args:
        labelled: Predictions with `outcome` (see `label_predictions`).
        performance: The contract's grade (metric, floor, max_drop, min_rows).
        test_figures: The graded metric on each version's test set, by version.

    Returns:
        One entry per (week, version), oldest first.
    """
    if labelled.empty:
        return ()
    iso = labelled[log.PREDICTED_AT].dt.isocalendar()
    weeks = iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    out = []
    for (week, version), group in labelled.groupby([weeks, labelled[log.MODEL_VERSION].astype(str)]):
        y = group["outcome"].to_numpy()
        p = group[log.PROBABILITY].to_numpy(dtype=float)
        both = 0 < int(y.sum()) < len(y)
        figures = {
            "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
            "pr_auc": float(average_precision_score(y, p)) if both else math.nan,
        }
        test = test_figures.get(str(version), math.nan)
        out.append(
            WeekFigures(
                week=str(week),
                model_version=str(version),
                rows=len(y),
                positives=int(y.sum()),
                roc_auc=figures["roc_auc"],
                pr_auc=figures["pr_auc"],
                brier=float(brier_score_loss(y, p, labels=[0, 1])),
                mean_predicted=float(np.mean(p)),
                observed_rate=float(np.mean(y)),
                test_figure=test,
                status=grade(
                    figure=figures[performance.metric], test=test, rows=len(y), performance=performance
                ),
            )
        )
    return tuple(out)


def grade(*, figure: float, test: float, rows: int, performance: Performance) -> Grade:
    """Grade one group's figure against the floor and its model's test figure.

    Args:
        figure: The realised metric (NaN with one outcome only).
        test: The model's test figure (NaN when unknown: only the floor applies).
        rows: The group's size.
        performance: The contract's grade.

    Returns:
        `block` below the floor, `warn` trailing the test figure by more than `max_drop`, `ok`,
        or `ungraded` for too few rows or an undefined figure.
    """
    if rows < performance.min_rows or math.isnan(figure):
        return "ungraded"
    if figure < performance.floor:
        return "block"
    if not math.isnan(test) and test - figure > performance.max_drop:
        return "warn"
    return "ok"


def _json(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value
