"""Candidate models, metrics and the fitting step, on synthetic frames with the feature service's schema."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from test_training_helpers import CONTRACT, disengaged_profile, engaged_profile, synthetic_training_set

from churnops.training.evaluate import classification_metrics, expected_top_hits
from churnops.training.fit import FitResult, fit_candidates
from churnops.training.models import GRADIENT_BOOSTING, LOGISTIC_REGRESSION, model_input
from churnops.training.split import out_of_time_split


@pytest.fixture(scope="module")
def fitted() -> FitResult:
    frame = synthetic_training_set(customers=300, weeks=8, seed=3)
    return fit_candidates(split=out_of_time_split(frame=frame), contract=CONTRACT, seed=42)


def test_model_input_is_exactly_the_contract_features_in_order() -> None:
    frame = synthetic_training_set(customers=5, weeks=3)
    shuffled = frame[list(reversed(frame.columns))]
    x = model_input(frame=shuffled, contract=CONTRACT)
    assert list(x.columns) == CONTRACT.feature_names
    assert "snapshot_ts" not in x.columns and "profile_defaulted" not in x.columns
    assert x["sessions_30d"].dtype == np.int64 and x["plan_type"].dtype == object


def test_model_input_names_a_missing_feature_and_a_null() -> None:
    frame = synthetic_training_set(customers=5, weeks=3)
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['seat_count'\]"):
        model_input(frame=frame.drop(columns="seat_count"), contract=CONTRACT)
    frame.loc[4, "tenure_days"] = None
    with pytest.raises(ValueError, match=r"feature 'tenure_days' is null at row 4"):
        model_input(frame=frame, contract=CONTRACT)


def test_both_candidates_are_calibrated_pipelines_over_the_contract_columns(fitted: FitResult) -> None:
    assert set(fitted.candidates) == {LOGISTIC_REGRESSION, GRADIENT_BOOSTING}
    for candidate in fitted.candidates.values():
        assert isinstance(candidate.model, Pipeline)
        assert list(candidate.model.feature_names_in_) == CONTRACT.feature_names
        assert type(candidate.model.named_steps["classifier"]).__name__ == "CalibratedClassifierCV"


def test_gradient_boosting_splits_plan_type_natively(fitted: FitResult) -> None:
    calibrated = fitted.candidates[GRADIENT_BOOSTING].model.named_steps["classifier"]
    booster = calibrated.estimator.estimator  # CalibratedClassifierCV → FrozenEstimator → model
    assert isinstance(booster, HistGradientBoostingClassifier)
    assert booster.class_weight == "balanced"
    assert list(booster.is_categorical_) == [True] + [False] * len(CONTRACT.numeric_features)


def test_an_unseen_plan_is_scored_not_rejected(fitted: FitResult) -> None:
    row = pd.DataFrame([{**engaged_profile(), "plan_type": "platinum"}])
    for candidate in fitted.candidates.values():
        probability = candidate.model.predict_proba(model_input(frame=row, contract=CONTRACT))[0, 1]
        assert 0 < probability < 1


def test_calibration_brings_mean_probability_near_the_churn_rate(fitted: FitResult) -> None:
    # Class weighting alone would put the mean probability near 0.5 for a ~10% churn rate.
    base_rate = fitted.test_labels.mean()
    for candidate in fitted.candidates.values():
        assert abs(candidate.test_scores.mean() - base_rate) < 0.05


def test_choice_is_the_higher_validation_pr_auc(fitted: FitResult) -> None:
    best = max(fitted.candidates.values(), key=lambda c: c.validation["pr_auc"])
    assert fitted.chosen == best.name
    assert fitted.constant_test["roc_auc"] == 0.5
    assert set(fitted.importance.index) == set(CONTRACT.feature_names)


def test_disengaged_customer_with_failed_payments_scores_higher(fitted: FitResult) -> None:
    rows = model_input(frame=pd.DataFrame([disengaged_profile(), engaged_profile()]), contract=CONTRACT)
    for candidate in fitted.candidates.values():
        risky, safe = candidate.model.predict_proba(rows)[:, 1]
        assert risky > safe


def test_same_data_and_seed_give_identical_metrics(fitted: FitResult) -> None:
    frame = synthetic_training_set(customers=300, weeks=8, seed=3)
    again = fit_candidates(split=out_of_time_split(frame=frame), contract=CONTRACT, seed=42)
    for name, candidate in fitted.candidates.items():
        assert again.candidates[name].validation == candidate.validation
        assert again.candidates[name].test == candidate.test
    pd.testing.assert_frame_equal(again.importance, fitted.importance)


def test_metrics_on_a_hand_computed_example() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.1])
    metrics = classification_metrics(y_true=y, scores=p)
    # Top decile of 12 rows = ceil(1.2) = 2 rows: scores 0.9 (churn) and 0.8 (stay).
    assert metrics["precision_top_decile"] == 0.5
    assert metrics["recall_top_decile"] == pytest.approx(1 / 3)
    assert metrics["lift_top_decile"] == pytest.approx(0.5 / (3 / 12))
    # Positives rank 1st, 3rd and 4th of 12: AP = (1/1 + 2/3 + 3/4) / 3.
    assert metrics["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Pairs (positive, negative) ordered correctly: 9 + 8 + 8 of 27 (ties at 0.1 do not occur for positives).
    assert metrics["roc_auc"] == pytest.approx(25 / 27)
    assert metrics["brier"] == pytest.approx(float(np.mean((p - y) ** 2)))
    expected_log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)


def test_ties_at_the_cut_are_shared_out_evenly() -> None:
    y = np.array([1, 0, 0, 1] * 5)
    constant = np.full(20, 0.3)
    assert expected_top_hits(y_true=y, scores=constant) == pytest.approx(2 * 10 / 20)
    # One clear top row, then a 19-way tie for the second place.
    scores = np.r_[0.9, np.full(19, 0.3)]
    assert expected_top_hits(y_true=y, scores=scores) == pytest.approx(1 + 9 / 19)
    assert math.isclose(classification_metrics(y_true=y, scores=constant)["lift_top_decile"], 1.0)


def test_metrics_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        classification_metrics(y_true=np.zeros(5), scores=np.full(5, 0.1))


def test_content_hash_follows_values_columns_and_order() -> None:
    from churnops.training.tracking import content_hash

    frame = synthetic_training_set(customers=5, weeks=3)
    assert content_hash(frame) == content_hash(frame.copy())
    changed = frame.copy()
    changed.loc[7, "sessions_30d"] += 1
    assert content_hash(changed) != content_hash(frame)
    assert content_hash(frame[list(reversed(frame.columns))]) != content_hash(frame)
    assert content_hash(frame.iloc[::-1]) != content_hash(frame)


def test_trusted_types_refuse_custom_code_in_the_model(fitted: FitResult) -> None:
    from sklearn.preprocessing import FunctionTransformer

    from churnops.training.tracking import trusted_types

    chosen = trusted_types(fitted.candidates[GRADIENT_BOOSTING].model)
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in chosen
    custom = Pipeline([("double", FunctionTransformer(func=engaged_profile))])
    with pytest.raises(ValueError, match=r"outside scikit-learn/NumPy/SciPy: \['test_training_helpers"):
        trusted_types(custom)
