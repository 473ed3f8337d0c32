"""A lean scoring path for the pipelines churnops trains, checked against scikit-learn at load.

On one row, a fitted pipeline's `predict_proba` spends almost all of its time in per-call
machinery (input validation, `ColumnTransformer`'s DataFrame slicing and output configuration,
a parallel region per tree) rather than in arithmetic (`bench/results/scoring.md`). This module
reads the fitted parameters once and replays the same arithmetic on plain arrays:

- `ColumnTransformer` blocks of `OrdinalEncoder`, `OneHotEncoder`, `StandardScaler` or
  `passthrough`, stacked in the transformer's order;
- `CalibratedClassifierCV(method="sigmoid")` over a (frozen) `HistGradientBoostingClassifier`,
  whose trees (categorical splits included) run in treelite, imported once from the fitted
  estimator and evaluated by its own predictor (GTIL) in one call for all trees, or over a
  `LogisticRegression`, a dot product in NumPy.

Treelite, not ONNX: converters to ONNX drop the gradient boosting's categorical splits, and
scores then differ by up to 0.09 on this project's models.

Anything else is refused with `UnsupportedModel`, and the caller serves that model through its
own `predict_proba`. A compiled pipeline is used only after `compile_pipeline` has compared it
with `predict_proba` on probe rows, so a scikit-learn release that changes an internal fails
that comparison (and falls back) instead of serving different numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

# Agreement required with `predict_proba` on the probe rows: the same operations in the same
# order give the same bits; the margin only absorbs a BLAS kernel choosing another summation
# order for the logistic regression's dot product.
TOLERANCE = 1e-12

TREELITE = "treelite"
NUMPY = "numpy"

Columns = Mapping[str, Any]
Block = Callable[[Columns, int], np.ndarray]


class UnsupportedModel(ValueError):
    """The model's structure is not one this module can replay exactly."""


def _unsupported(what: object, why: str) -> UnsupportedModel:
    return UnsupportedModel(f"{type(what).__name__}: {why}")


def _category_lookups(encoder: Any, code: Callable[[int], Any]) -> list[dict[Any, Any]]:
    """Per input column, each category's code; refuses infrequent-category grouping."""
    if getattr(encoder, "_infrequent_enabled", False):
        raise _unsupported(encoder, "infrequent categories are not replayed")
    return [{value: code(k) for k, value in enumerate(cats)} for cats in encoder.categories_]


def _ordinal_block(encoder: Any, columns: list[str]) -> Block:
    if encoder.handle_unknown != "use_encoded_value":
        raise _unsupported(encoder, "only OrdinalEncoder(handle_unknown='use_encoded_value') is replayed")
    unknown = float(encoder.unknown_value)
    missing = float(encoder.encoded_missing_value)
    # A missing input (None, NaN) is looked up like an unseen one, which is exact only when both
    # encode alike and no category is itself missing.
    if not (missing == unknown or (np.isnan(missing) and np.isnan(unknown))) or any(
        pd.isna(value) for cats in encoder.categories_ for value in cats
    ):
        raise _unsupported(encoder, "a missing value must encode like an unseen one")
    lookups = _category_lookups(encoder, float)

    def block(data: Columns, n: int) -> np.ndarray:
        out = np.empty((n, len(columns)))
        for j, (name, lookup) in enumerate(zip(columns, lookups, strict=True)):
            out[:, j] = [lookup.get(value, unknown) for value in data[name]]
        return out

    return block


def _one_hot_block(encoder: Any, columns: list[str]) -> Block:
    if encoder.handle_unknown != "ignore" or encoder.drop_idx_ is not None:
        raise _unsupported(encoder, "only OneHotEncoder(handle_unknown='ignore', drop=None) is replayed")
    offsets = np.cumsum([0, *(len(c) for c in encoder.categories_)])
    lookups = _category_lookups(encoder, int)

    def block(data: Columns, n: int) -> np.ndarray:
        out = np.zeros((n, int(offsets[-1])))
        for j, (name, lookup) in enumerate(zip(columns, lookups, strict=True)):
            for i, value in enumerate(data[name]):
                code = lookup.get(value)
                if code is not None:
                    out[i, offsets[j] + code] = 1.0
        return out

    return block


def _numeric(data: Columns, columns: list[str], n: int) -> np.ndarray:
    out = np.empty((n, len(columns)))
    for j, name in enumerate(columns):
        out[:, j] = np.asarray(data[name], dtype=np.float64)
    return out


def _scaler_block(scaler: Any, columns: list[str]) -> Block:
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def block(data: Columns, n: int) -> np.ndarray:
        out = _numeric(data, columns, n)
        if mean is not None:
            out -= mean
        if scale is not None:
            out /= scale
        return out

    return block


def _passthrough_block(columns: list[str]) -> Block:
    return lambda data, n: _numeric(data, columns, n)


def _preprocessor(transformer: Any) -> Callable[[Columns, int], np.ndarray]:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

    if type(transformer) is not ColumnTransformer:
        raise _unsupported(transformer, "the pipeline's first step must be a ColumnTransformer")
    if getattr(transformer, "sparse_output_", False):
        raise _unsupported(transformer, "sparse output is not replayed")
    # Exact types: a subclass may change what a step computes.
    builders: dict[type, Callable[[Any, list[str]], Block]] = {
        OrdinalEncoder: _ordinal_block,
        OneHotEncoder: _one_hot_block,
        StandardScaler: _scaler_block,
    }
    blocks: list[Block] = []
    for _, step, columns in transformer.transformers_:
        if not all(isinstance(c, str) for c in columns):
            raise _unsupported(transformer, "columns must be selected by name")
        names = list(columns)
        if step == "drop" or not names:
            continue
        # A fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer.
        if step == "passthrough" or (type(step) is FunctionTransformer and step.func is None):
            blocks.append(_passthrough_block(names))
        elif type(step) in builders:
            blocks.append(builders[type(step)](step, names))
        else:
            raise _unsupported(step, "this transformer is not replayed")

    def transform(data: Columns, n: int) -> np.ndarray:
        return np.hstack([block(data, n) for block in blocks])

    return transform


def _unseen_as_missing(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """What the model's own categorical encoding does that treelite does not: unseen means missing.

    A fitted `HistGradientBoostingClassifier` with categorical columns re-encodes them with an
    internal `OrdinalEncoder` that maps a value it did not see in training to NaN, which the trees
    route as missing. Treelite imports that encoding's known values but routes an unseen one as a
    category outside every split's set, so such values are made NaN before the trees run.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    inner = model._preprocessor
    if inner is None:
        return lambda x: x
    steps = {name: step for name, step, _ in inner.transformers_}
    encoder = steps.get("encoder")
    if (
        type(inner) is not ColumnTransformer
        or set(steps) - {"encoder", "numerical", "remainder"}
        or steps.get("remainder", "drop") != "drop"
        or type(encoder) is not OrdinalEncoder
        or encoder.handle_unknown != "use_encoded_value"
        or not np.isnan(encoder.unknown_value)
        or not np.isnan(encoder.encoded_missing_value)
        or type(steps.get("numerical")) is not FunctionTransformer
    ):
        raise _unsupported(model, "its internal categorical encoding is not the one replayed")
    columns = np.flatnonzero(model.is_categorical_)
    known = [np.asarray(c, dtype=np.float64) for c in encoder.categories_]
    if any(np.isnan(c).any() for c in known):
        raise _unsupported(model, "a missing category learned in training is not replayed")

    def encode(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        for column, values in zip(columns, known, strict=True):
            out[~np.isin(x[:, column], values), column] = np.nan
        return out

    return encode


def _gradient_boosting(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import treelite.gtil
    import treelite.sklearn

    if model.n_trees_per_iteration_ != 1:
        raise _unsupported(model, "only a binary model is replayed")
    encode = _unseen_as_missing(model)
    try:
        forest = treelite.sklearn.import_model(model)
    except Exception as exc:
        # Treelite asserts on the estimator's private layout: a scikit-learn release that changes
        # it lands here, and the model is served through predict_proba.
        raise _unsupported(model, f"treelite cannot import it: {type(exc).__name__}: {exc}") from exc

    def decision(x: np.ndarray) -> np.ndarray:
        # The margin (baseline plus every tree), which is what `decision_function` returns and
        # the calibration's sigmoid takes; one thread, as a few rows never repay a pool.
        margin = treelite.gtil.predict(forest, np.ascontiguousarray(encode(x)), nthread=1, pred_margin=True)
        return margin.reshape(-1)

    return decision


def _logistic_regression(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    if model.coef_.shape[0] != 1:
        raise _unsupported(model, "only a binary model is replayed")
    coef = np.ascontiguousarray(model.coef_.T)
    intercept = model.intercept_

    def decision(x: np.ndarray) -> np.ndarray:
        return (x @ coef + intercept).reshape(-1)

    return decision


def _decision(estimator: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression

    if isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    if list(estimator.classes_) != [0, 1]:
        raise _unsupported(estimator, "classes must be [0, 1]")
    if type(estimator) is HistGradientBoostingClassifier:
        return _gradient_boosting(estimator), TREELITE
    if type(estimator) is LogisticRegression:
        return _logistic_regression(estimator), NUMPY
    raise _unsupported(estimator, "this classifier is not replayed")


def _calibrated(classifier: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    from sklearn.calibration import CalibratedClassifierCV

    if type(classifier) is not CalibratedClassifierCV or classifier.method != "sigmoid":
        raise _unsupported(classifier, "only CalibratedClassifierCV(method='sigmoid') is replayed")
    if list(classifier.classes_) != [0, 1]:
        raise _unsupported(classifier, "classes must be [0, 1]")
    members = []
    engines = set()
    for member in classifier.calibrated_classifiers_:
        (calibrator,) = member.calibrators
        decision, engine = _decision(member.estimator)
        members.append((decision, float(calibrator.a_), float(calibrator.b_)))
        engines.add(engine)

    def positive(x: np.ndarray) -> np.ndarray:
        # `CalibratedClassifierCV.predict_proba`: the mean over members of each member's sigmoid.
        total = np.zeros(x.shape[0])
        for decision, a, b in members:
            total += expit(-(a * decision(x) + b))
        return total / len(members)

    return positive, "+".join(sorted(engines))


@dataclass(frozen=True)
class CompiledPipeline:
    """A fitted pipeline's churn probability, computed without scikit-learn's per-call machinery.

    Attributes:
        engine: What evaluates the classifier: `treelite` (the trees) or `numpy` (a linear model).
    """

    _transform: Callable[[Columns, int], np.ndarray]
    _positive: Callable[[np.ndarray], np.ndarray]
    engine: str

    def predict(self, data: Columns, n: int) -> np.ndarray:
        """The positive-class probability of each row.

        Args:
            data: Column name → the n values of that column (a DataFrame works).
            n: The number of rows.

        Returns:
            n probabilities.
        """
        return self._positive(self._transform(data, n))


def compile_pipeline(model: Any, *, probe: pd.DataFrame) -> CompiledPipeline:
    """Read a fitted `preprocess` → `classifier` pipeline into a `CompiledPipeline`, then check it.

    Args:
        model: A fitted scikit-learn Pipeline.
        probe: Rows the model accepts; both paths score them and must agree within `TOLERANCE`.

    Returns:
        The compiled pipeline.

    Raises:
        UnsupportedModel: When a step is not one this module replays, or the two paths disagree.
    """
    from sklearn.pipeline import Pipeline

    if probe.empty:
        raise ValueError("compile_pipeline needs at least one probe row to check the replay against")
    if type(model) is not Pipeline or len(model.steps) != 2:
        raise _unsupported(model, "only a two-step preprocess → classifier Pipeline is replayed")
    (_, preprocess), (_, classifier) = model.steps
    try:
        transform = _preprocessor(preprocess)
        positive, engine = _calibrated(classifier)
        got = positive(transform(probe, len(probe)))
    except UnsupportedModel:
        raise
    except Exception as exc:
        # The replay reads fitted attributes, some of them private: a scikit-learn release that
        # renames or reshapes one lands here, and the model is served through predict_proba.
        raise UnsupportedModel(
            f"cannot replay {type(classifier).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    expected = model.predict_proba(probe)[:, 1]
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= TOLERANCE:
        raise UnsupportedModel(
            f"the replayed pipeline differs from predict_proba by {difference:.3g} on the probe rows "
            f"(tolerance {TOLERANCE:g})"
        )
    return CompiledPipeline(_transform=transform, _positive=positive, engine=engine)
