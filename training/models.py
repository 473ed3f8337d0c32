"""The candidate models: a logistic-regression baseline and histogram gradient boosting.

Each model is a scikit-learn `Pipeline` whose input is a DataFrame with exactly the feature
contract's feature columns, by name and in contract order, as serving reads them from the online
store. `snapshot_ts` and the join's default flag (`profile_defaulted`) are not model inputs: the
first is a timestamp whose value only says when the row was computed (a model would learn the
calendar), the second is a property of the join, not of the customer, and a defaulted profile
already shows as the contract's defaults.

Both models weight classes inversely to their frequency (churners are the minority) and are then
calibrated with a sigmoid fitted on the validation window: the weighting inflates probabilities,
and the calibration maps them back to churn rates. A sigmoid is monotonic, so calibration does not
change the ranking metrics used to choose between the models.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from churnops.contracts.feature_contract import FeatureContract

LOGISTIC_REGRESSION = "logistic_regression"
GRADIENT_BOOSTING = "hist_gradient_boosting"


def model_input(*, frame: pd.DataFrame, contract: FeatureContract) -> pd.DataFrame:
    """The model's input: the contract's features, in contract order, with the contract's dtypes.

    Args:
        frame: A training set or a batch of online features (extra columns are ignored).
        contract: The feature contract.

    Returns:
        A new frame with exactly `contract.feature_names` as columns.

    Raises:
        ValueError: When a feature column is missing or holds nulls.
    """
    names = contract.feature_names
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame lacks feature column(s) {missing} of contract {contract.name} v{contract.version}"
        )
    selected = frame[names]
    null_counts = selected.isna().sum()
    if null_counts.any():
        column = str(null_counts[null_counts > 0].index[0])
        row = int(np.flatnonzero(selected[column].isna().to_numpy())[0])
        raise ValueError(
            f"feature {column!r} is null at row {row}; the contract's join fills defaults, so a null "
            "means the training set was not built through the feature service"
        )
    dtypes = {f.name: f.types.numpy for f in contract.features}
    out = selected.astype(dtypes)
    for name in contract.categorical_features:
        out[name] = out[name].astype(str)
    return out.reset_index(drop=True)


def _categories(contract: FeatureContract) -> list[list[str]]:
    categories = []
    for name in contract.categorical_features:
        allowed = contract.feature(name).allowed_values
        if not allowed:
            raise ValueError(f"categorical feature {name!r} needs allowed_values in the contract")
        categories.append(sorted(allowed))
    return categories


def build_logistic_regression(*, contract: FeatureContract, seed: int) -> Pipeline:
    """The baseline: standardised numerics, one-hot categoricals, class-weighted logistic regression.

    Args:
        contract: The feature contract (names, types, allowed categories).
        seed: The random seed.

    Returns:
        An unfitted pipeline.
    """
    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), contract.numeric_features),
            (
                "categorical",
                OneHotEncoder(categories=_categories(contract), handle_unknown="ignore"),
                contract.categorical_features,
            ),
        ]
    )
    classifier = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def build_gradient_boosting(*, contract: FeatureContract, seed: int) -> Pipeline:
    """Histogram gradient boosting with native categorical splits and class weighting.

    Categoricals are ordinal-encoded over the contract's allowed values (an unseen value becomes
    missing, which the trees route like any missing value) and declared categorical, so the trees
    split on category sets rather than on an arbitrary order.

    Args:
        contract: The feature contract (names, types, allowed categories).
        seed: The random seed (the early-stopping holdout and tie-breaking).

    Returns:
        An unfitted pipeline.
    """
    categorical = contract.categorical_features
    preprocess = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(
                    categories=_categories(contract),
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                categorical,
            ),
            ("numeric", "passthrough", contract.numeric_features),
        ]
    )
    classifier = HistGradientBoostingClassifier(
        categorical_features=list(range(len(categorical))),
        class_weight="balanced",
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=20,
        random_state=seed,
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


CANDIDATES: dict[str, Callable[..., Pipeline]] = {
    LOGISTIC_REGRESSION: build_logistic_regression,
    GRADIENT_BOOSTING: build_gradient_boosting,
}


def fit_calibrated(
    *,
    pipeline: Pipeline,
    train_x: pd.DataFrame,
    train_y: np.ndarray,
    validation_x: pd.DataFrame,
    validation_y: np.ndarray,
) -> Pipeline:
    """Fit a candidate on the train window, then calibrate its probabilities on the validation window.

    Args:
        pipeline: An unfitted `preprocess` → `classifier` pipeline.
        train_x: The train window's model input.
        train_y: Its labels (0/1).
        validation_x: The validation window's model input.
        validation_y: Its labels (0/1), with both classes present.

    Returns:
        A fitted pipeline `preprocess` → `classifier`, the classifier being the frozen trained
        model wrapped in a sigmoid calibration; its input is the model input DataFrame.

    Raises:
        ValueError: When either window lacks one of the classes.
    """
    for name, labels in (("train", train_y), ("validation", validation_y)):
        if len(np.unique(labels)) < 2:
            raise ValueError(
                f"the {name} window has only one class; a longer history or more customers are needed"
            )
    pipeline.fit(train_x, train_y)
    preprocess = pipeline.named_steps["preprocess"]
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline.named_steps["classifier"]), method="sigmoid")
    calibrated.fit(preprocess.transform(validation_x), validation_y)
    return Pipeline([("preprocess", preprocess), ("classifier", calibrated)])
