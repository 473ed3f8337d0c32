"""The compiled scoring path: the same probabilities as `predict_proba`, or a refusal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder
from threadpoolctl import threadpool_limits

from churnops.contracts.feature_contract import load_feature_contract
from churnops.serving import scoring
from churnops.serving.features import probe_frame
from churnops.serving.models import LoadedModel
from churnops.serving.scoring import UnsupportedModel, compile_pipeline
from churnops.training.models import build_gradient_boosting, build_logistic_regression, fit_calibrated

CONTRACT = load_feature_contract()
PLANS = ["basic", "pro", "enterprise"]


def _rows(n: int, seed: int, plans: list[str] = PLANS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for f in CONTRACT.features:
        if f.dtype == "string":
            columns[f.name] = rng.choice(plans, n)
        elif f.dtype == "int64":
            columns[f.name] = rng.integers(0, 60, n)
        else:
            columns[f.name] = np.round(rng.gamma(2.0, 10.0, n), 3)
    return pd.DataFrame(columns)


def _labels(x: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logit = (25 - x["sessions_30d"]) / 8 + (x["plan_type"] == "basic") * 0.8 + rng.normal(0, 1, len(x))
    return (logit > 0).to_numpy().astype(int)


def _fit(build: Callable[..., Pipeline], seed: int = 3) -> Pipeline:
    x = _rows(800, seed)
    y = _labels(x, seed)
    # One OpenMP thread: on a busy 2-core machine, threads spinning for a core take 50x longer.
    with threadpool_limits(1):
        return fit_calibrated(
            pipeline=build(contract=CONTRACT, seed=seed),
            train_x=x.iloc[:500],
            train_y=y[:500],
            validation_x=x.iloc[500:],
            validation_y=y[500:],
        )


@pytest.fixture(scope="module", params=[build_gradient_boosting, build_logistic_regression])
def trained(request: pytest.FixtureRequest) -> Pipeline:
    return _fit(request.param)


def test_compiled_probabilities_are_those_of_predict_proba(trained: Pipeline) -> None:
    compiled = compile_pipeline(trained, probe=probe_frame(CONTRACT))
    # Fresh rows, not the probe: another seed, plan values the model never saw, the defaults and
    # missing plans.
    rows = pd.concat(
        [
            _rows(500, 99, plans=[*PLANS, "unknown", "platinum"]),
            pd.DataFrame([CONTRACT.defaults]),
            _rows(3, 98).assign(plan_type=None),
        ],
        ignore_index=True,
    )
    expected = trained.predict_proba(rows[CONTRACT.feature_names])[:, 1]
    got = compiled.predict(rows, len(rows))
    assert np.abs(got - expected).max() <= scoring.TOLERANCE
    assert len(np.unique(np.round(expected, 4))) > 50  # the rows exercise many paths, not one leaf
    one = rows.iloc[[7]]
    assert compiled.predict(one, 1)[0] == pytest.approx(expected[7], abs=scoring.TOLERANCE)


def test_trees_run_in_treelite_and_match_predict_proba_on_the_probe_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import treelite.gtil

    model = _fit(build_gradient_boosting)
    probe = probe_frame(CONTRACT)
    calls: list[int] = []
    predict = treelite.gtil.predict

    def counted(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(args[1]))
        return predict(*args, **kwargs)

    monkeypatch.setattr(treelite.gtil, "predict", counted)
    compiled = compile_pipeline(model, probe=probe)
    assert compiled.engine == "treelite"
    assert calls == [len(probe)]  # the load-time check already went through treelite
    expected = model.predict_proba(probe[CONTRACT.feature_names])[:, 1]
    lists = {name: probe[name].tolist() for name in CONTRACT.feature_names}
    got = compiled.predict(lists, len(probe))
    assert calls == [len(probe)] * 2
    assert np.abs(got - expected).max() <= 1e-12
    assert compile_pipeline(_fit(build_logistic_regression), probe=probe).engine == "numpy"


def test_a_forest_treelite_cannot_import_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import treelite.sklearn

    def refuse(_: Any) -> None:
        raise AssertionError("unexpected _preprocessor layout")

    monkeypatch.setattr(treelite.sklearn, "import_model", refuse)
    with pytest.raises(
        UnsupportedModel,
        match="HistGradientBoostingClassifier: treelite cannot import it: AssertionError: unexpected",
    ):
        compile_pipeline(_fit(build_gradient_boosting), probe=probe_frame(CONTRACT))


def test_plain_lists_score_like_a_dataframe(trained: Pipeline) -> None:
    compiled = compile_pipeline(trained, probe=probe_frame(CONTRACT))
    rows = _rows(20, 5)
    lists = {name: rows[name].tolist() for name in rows.columns}
    assert compiled.predict(lists, 20).tolist() == compiled.predict(rows, 20).tolist()


def test_a_replay_that_drifts_from_predict_proba_is_refused(
    trained: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "expit", lambda z: expit(z) + 1e-9)
    with pytest.raises(UnsupportedModel, match="differs from predict_proba by 1e-09"):
        compile_pipeline(trained, probe=probe_frame(CONTRACT))


def _uncalibrated() -> Pipeline:
    x = _rows(300, 4)
    preprocess = ColumnTransformer(
        [
            ("numeric", MinMaxScaler(), CONTRACT.numeric_features),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CONTRACT.categorical_features),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("classifier", LogisticRegression())]).fit(x, _labels(x, 4))


def test_structures_it_cannot_replay_are_refused_by_name() -> None:
    model = _uncalibrated()
    with pytest.raises(UnsupportedModel, match="MinMaxScaler: this transformer is not replayed"):
        compile_pipeline(model, probe=probe_frame(CONTRACT))
    with pytest.raises(UnsupportedModel, match="two-step preprocess"):
        compile_pipeline(model.named_steps["classifier"], probe=probe_frame(CONTRACT))
    trained = _fit(build_logistic_regression)
    x = _rows(300, 8)
    isotonic = CalibratedClassifierCV(FrozenEstimator(trained.named_steps["classifier"]), method="isotonic")
    isotonic.fit(trained.named_steps["preprocess"].transform(x), _labels(x, 8))
    swapped = Pipeline([("preprocess", trained.named_steps["preprocess"]), ("classifier", isotonic)])
    with pytest.raises(UnsupportedModel, match="method='sigmoid'"):
        compile_pipeline(swapped, probe=probe_frame(CONTRACT))


def test_a_model_without_a_compiled_path_is_scored_by_predict_proba() -> None:
    model = _uncalibrated()
    loaded = LoadedModel(name="m", version="1", model=model, input_columns=tuple(CONTRACT.feature_names))
    rows = _rows(30, 6)
    lists = {name: rows[name].tolist() for name in rows.columns}
    assert loaded.compiled is None
    assert loaded.predict(lists).tolist() == model.predict_proba(rows)[:, 1].tolist()


def test_probe_rows_hold_the_defaults_every_category_and_stay_in_range() -> None:
    probe = probe_frame(CONTRACT, rows=64, seed=1)
    flag = CONTRACT.entity.join.default_flag
    assert list(probe.columns) == [*CONTRACT.feature_names, flag]
    assert probe.iloc[0][CONTRACT.feature_names].to_dict() == CONTRACT.defaults
    assert probe[flag].tolist() == [1] + [0] * 63
    for f in CONTRACT.features:
        if f.dtype == "string":
            assert set(probe[f.name]) == {*(f.allowed_values or []), "__unlisted__"}
        else:
            assert str(probe[f.name].dtype) == f.dtype
            assert probe[f.name].min() >= (f.min or 0)
            if f.max is not None:
                assert probe[f.name].max() <= f.max
            assert probe[f.name].nunique() > 10


def test_a_changed_library_internal_means_predict_proba_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fit(build_gradient_boosting)

    def renamed(_: Any) -> None:
        raise AttributeError("'HistGradientBoostingClassifier' object has no attribute '_bin_mapper'")

    monkeypatch.setattr(scoring, "_gradient_boosting", renamed)
    with pytest.raises(
        UnsupportedModel, match=r"cannot replay CalibratedClassifierCV: AttributeError: .*_bin_mapper"
    ):
        compile_pipeline(model, probe=probe_frame(CONTRACT))


def test_an_empty_probe_is_refused(trained: Pipeline) -> None:
    with pytest.raises(ValueError, match="at least one probe row"):
        compile_pipeline(trained, probe=probe_frame(CONTRACT).iloc[:0])


def test_an_ordinal_encoder_that_encodes_missing_apart_from_unseen_is_refused() -> None:
    model = _fit(build_gradient_boosting)
    encoder = model.named_steps["preprocess"].named_transformers_["categorical"]
    encoder.encoded_missing_value = -2
    with pytest.raises(UnsupportedModel, match="a missing value must encode like an unseen one"):
        compile_pipeline(model, probe=probe_frame(CONTRACT))
