"""Fit both candidates on an out-of-time split, choose one by validation PR AUC, score the test window.

Pure computation (no tracking): the same split and seed give the same models and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from churnops.contracts.feature_contract import FeatureContract
from churnops.training.evaluate import classification_metrics
from churnops.training.models import CANDIDATES, fit_calibrated, model_input
from churnops.training.names import LABEL_COLUMN
from churnops.training.split import Split

CONSTANT = "constant"
PERMUTATION_REPEATS = 5
# HistGradientBoosting's OpenMP threads spin-wait, which slows the same fit on a busy shared
# machine, for identical results; `bench/results/training.md` times both thread modes.
THREADS = 1


@dataclass(frozen=True)
class CandidateResult:
    """One fitted candidate with its validation and test metrics and test scores."""

    name: str
    model: Pipeline
    validation: dict[str, float]
    test: dict[str, float]
    test_scores: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """Both candidates, the chosen one, a constant-score reference, and permutation importances.

    Attributes:
        candidates: Results by candidate name.
        chosen: The name of the candidate with the highest validation PR AUC.
        constant_test: Test metrics of a model scoring every row with the train churn rate.
        importance: Mean and standard deviation of the drop in test PR AUC when each feature is
            permuted, for the chosen model, indexed by feature, largest first.
        test_labels: The test window's labels, in test order.
    """

    candidates: dict[str, CandidateResult]
    chosen: str
    constant_test: dict[str, float]
    importance: pd.DataFrame
    test_labels: np.ndarray

    @property
    def model(self) -> Pipeline:
        """The chosen, calibrated model."""
        return self.candidates[self.chosen].model


def _labels(frame: pd.DataFrame) -> np.ndarray:
    if LABEL_COLUMN not in frame.columns:
        raise ValueError(f"the training set lacks the {LABEL_COLUMN!r} column")
    return frame[LABEL_COLUMN].to_numpy(dtype=int)


def fit_candidates(*, split: Split, contract: FeatureContract, seed: int) -> FitResult:
    """Train and calibrate every candidate, choose by validation PR AUC, evaluate on test.

    Runs with `THREADS` OpenMP/BLAS threads.

    Args:
        split: The out-of-time split of the labelled training set.
        contract: The feature contract (model inputs).
        seed: The random seed for every randomised step.

    Returns:
        The fitted candidates and their metrics.

    Raises:
        ValueError: When a window lacks a class or a feature.
    """
    with threadpool_limits(limits=THREADS):
        return _fit_candidates(split=split, contract=contract, seed=seed)


def _fit_candidates(*, split: Split, contract: FeatureContract, seed: int) -> FitResult:
    train_x = model_input(frame=split.train, contract=contract)
    validation_x = model_input(frame=split.validation, contract=contract)
    test_x = model_input(frame=split.test, contract=contract)
    train_y, validation_y, test_y = _labels(split.train), _labels(split.validation), _labels(split.test)

    candidates: dict[str, CandidateResult] = {}
    for name, build in CANDIDATES.items():
        model = fit_calibrated(
            pipeline=build(contract=contract, seed=seed),
            train_x=train_x,
            train_y=train_y,
            validation_x=validation_x,
            validation_y=validation_y,
        )
        test_scores = model.predict_proba(test_x)[:, 1]
        candidates[name] = CandidateResult(
            name=name,
            model=model,
            validation=classification_metrics(
                y_true=validation_y, scores=model.predict_proba(validation_x)[:, 1]
            ),
            test=classification_metrics(y_true=test_y, scores=test_scores),
            test_scores=test_scores,
        )
    # Highest validation PR AUC wins; an exact tie goes to the first (simpler) candidate.
    chosen = max(candidates, key=lambda n: candidates[n].validation["pr_auc"])
    constant_test = classification_metrics(y_true=test_y, scores=np.full(len(test_y), float(train_y.mean())))
    result = permutation_importance(
        candidates[chosen].model,
        test_x,
        test_y,
        scoring="average_precision",
        n_repeats=PERMUTATION_REPEATS,
        random_state=seed,
    )
    importance = pd.DataFrame(
        {"mean": result.importances_mean, "std": result.importances_std}, index=test_x.columns
    ).sort_values("mean", ascending=False, kind="stable")
    return FitResult(
        candidates=candidates,
        chosen=chosen,
        constant_test=constant_test,
        importance=importance,
        test_labels=test_y,
    )
