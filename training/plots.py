"""Evaluation plots for the MLflow run: ROC, precision-recall, calibration, permutation importance.

Figures are built as bare `matplotlib.figure.Figure` objects rendered by the Agg canvas: no
pyplot state, no display, safe in a server or a test worker. Constrained layout keeps titles,
labels and long feature names inside the image (the MLflow UI shows it as saved).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

CALIBRATION_BINS = 10


def _figure(
    title: str, xlabel: str, ylabel: str, *, size: tuple[float, float] = (6, 4.5)
) -> tuple[Figure, Any]:
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # A figure-wide title is centred on the image, not on the axes, which long tick labels push aside.
    figure.suptitle(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return figure, axes


def roc_figure(*, y_true: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC curves of several models on the same rows.

    Args:
        y_true: Labels, 0 or 1.
        scores: Predicted probabilities by model name.

    Returns:
        The figure.
    """
    figure, axes = _figure("ROC (test window)", "false positive rate", "true positive rate")
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve(y_true, values)
        axes.plot(fpr, tpr, label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.legend(loc="lower right")
    return figure


def precision_recall_figure(*, y_true: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Precision-recall curves of several models, with the base rate as reference.

    Args:
        y_true: Labels, 0 or 1.
        scores: Predicted probabilities by model name.

    Returns:
        The figure.
    """
    figure, axes = _figure("Precision-recall (test window)", "recall", "precision")
    for name, values in scores.items():
        precision, recall, _ = precision_recall_curve(y_true, values)
        axes.plot(recall, precision, label=name)
    axes.axhline(float(np.mean(y_true)), linestyle="--", color="grey", label="base rate")
    axes.legend(loc="upper right")
    return figure


def calibration_figure(*, y_true: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Reliability curves: observed churn rate against mean predicted probability, per quantile bin.

    Args:
        y_true: Labels, 0 or 1.
        scores: Predicted probabilities by model name.

    Returns:
        The figure.
    """
    figure, axes = _figure("Calibration (test window)", "mean predicted probability", "observed churn rate")
    for name, values in scores.items():
        observed, predicted = calibration_curve(y_true, values, n_bins=CALIBRATION_BINS, strategy="quantile")
        axes.plot(predicted, observed, marker="o", label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.legend(loc="upper left")
    return figure


def importance_figure(*, importance: pd.DataFrame, model_name: str) -> Figure:
    """Permutation importance: the drop in test PR AUC when each feature is shuffled.

    Args:
        importance: Columns `mean` and `std`, indexed by feature.
        model_name: The model's name, for the title.

    Returns:
        The figure.
    """
    ordered = importance.sort_values("mean")
    figure, axes = _figure(
        f"Permutation importance: {model_name}\n(test window, drop in PR AUC when a feature is shuffled)",
        "drop in PR AUC",
        "feature",
        size=(8, 0.35 * len(ordered) + 2),
    )
    axes.barh(list(ordered.index), ordered["mean"].to_numpy(), xerr=ordered["std"].to_numpy())
    return figure
