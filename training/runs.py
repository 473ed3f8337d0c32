"""What one training logs to MLflow: a parent run for the training, a nested child run per candidate.

The parent run holds what the candidates share — the training set (the windows as files and as
MLflow datasets whose source is that file), the labelling and split parameters, the Feast
lineage, plots comparing the candidates — and a description a reviewer reads first. Each
candidate's child run holds its own parameters, its metrics under the same names in every child
(`validation_pr_auc`, `test_roc_auc`, ...: the MLflow UI charts the children side by side), its
plots and its model; the chosen candidate's model is the one registered, so a registered
version's source run is the child of the chosen candidate. Each child also carries the Feast
lineage tags and `feast_features.json`, which Feast's model resolver reads from a model's run.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from churnops.contracts.feature_contract import FeatureContract
from churnops.training.fit import CandidateResult, FitResult
from churnops.training.labels import ENTITY_COLUMN, FIRST_OBSERVATION_AFTER_SIGNUP, OBSERVATION_EVERY
from churnops.training.models import CANDIDATES, model_input
from churnops.training.names import LABEL_COLUMN
from churnops.training.plots import calibration_figure, importance_figure, precision_recall_figure, roc_figure
from churnops.training.split import Split
from churnops.training.tracking import hash_entities, model_requirements, trusted_types

DATASETS = "datasets"
# Significant digits kept on tags and in descriptions: enough to tell models apart.
DIGITS = 4


def figure(value: float) -> str:
    """A metric as text for a tag or a description, rounded to `DIGITS` decimals.

    Args:
        value: The metric.

    Returns:
        E.g. `0.3402`.
    """
    return f"{value:.{DIGITS}f}"


@dataclass(frozen=True)
class TrainingRun:
    """The training set and what the candidates made of it, as the runs describe them.

    Attributes:
        training_set: The labelled training set.
        split: Its out-of-time split.
        fit: The candidates and the choice.
        contract: The feature contract.
        lineage_tags: Feast lineage and data-window tags (`Lineage.tags()`).
        feature_refs: The feature service's `view:feature` references.
        training_set_hash: SHA-256 of the training set.
        seed: The random seed.
    """

    training_set: pd.DataFrame
    split: Split
    fit: FitResult
    contract: FeatureContract
    lineage_tags: dict[str, str]
    feature_refs: list[str]
    training_set_hash: str
    seed: int

    @property
    def windows(self) -> dict[str, pd.DataFrame]:
        """The train, validation and test windows, by name."""
        return {"train": self.split.train, "validation": self.split.validation, "test": self.split.test}

    @property
    def feature_service(self) -> str:
        """The Feast feature service the training set came from."""
        return self.lineage_tags["feast.feature_service"]


def parent_params(*, run: TrainingRun, horizon: timedelta, min_history: timedelta, fractions: str) -> dict:
    """The parent run's parameters: labelling, split, features and the choice.

    Args:
        run: The training.
        horizon: The label window.
        min_history: The history required before an observation.
        fractions: The split's row shares, comma-separated.

    Returns:
        Parameter name → value.
    """
    return {
        "seed": str(run.seed),
        "feature_service": run.feature_service,
        "feature_service_version": run.lineage_tags["feature_service_version"],
        "horizon_days": str(horizon / timedelta(days=1)),
        "observation_every_days": str(OBSERVATION_EVERY / timedelta(days=1)),
        "first_observation_after_signup_days": str(FIRST_OBSERVATION_AFTER_SIGNUP / timedelta(days=1)),
        "min_history_days": str(min_history / timedelta(days=1)),
        "split_fractions": fractions,
        "model_features": ",".join(run.contract.feature_names),
        "candidates": ",".join(run.fit.candidates),
        "chosen_model": run.fit.chosen,
        **{f"split.{key}": value for key, value in run.split.dates.as_dict().items()},
    }


def candidate_metrics(candidate: CandidateResult) -> dict[str, float]:
    """A candidate's metrics, under the names every child run shares.

    Args:
        candidate: The fitted candidate.

    Returns:
        `validation_<metric>` and `test_<metric>` → value.
    """
    return {
        **{f"validation_{key}": value for key, value in candidate.validation.items()},
        **{f"test_{key}": value for key, value in candidate.test.items()},
    }


def parent_metrics(run: TrainingRun) -> dict[str, float]:
    """The parent's metrics: the chosen candidate's, the constant reference's, and the windows' sizes.

    Args:
        run: The training.

    Returns:
        Metric name → value.
    """
    metrics = candidate_metrics(run.fit.candidates[run.fit.chosen])
    metrics.update({f"constant_test_{key}": value for key, value in run.fit.constant_test.items()})
    for window, frame in run.windows.items():
        metrics[f"rows_{window}"] = float(len(frame))
        metrics[f"positive_rate_{window}"] = float(frame[LABEL_COLUMN].mean())
    return metrics


def training_description(run: TrainingRun) -> str:
    """The parent run's description (Markdown): data, feature service, windows, candidates, choice.

    Args:
        run: The training.

    Returns:
        The description.
    """
    tags, fit = run.lineage_tags, run.fit
    windows = ", ".join(
        f"{window} {len(frame):,} rows (churn rate {frame[LABEL_COLUMN].mean():.1%})"
        for window, frame in run.windows.items()
    )
    candidates = "\n".join(
        f"- `{name}`: validation PR AUC {figure(c.validation['pr_auc'])}, test PR AUC "
        f"{figure(c.test['pr_auc'])}, test ROC AUC {figure(c.test['roc_auc'])}"
        + (" — **chosen**" if name == fit.chosen else "")
        for name, c in fit.candidates.items()
    )
    return (
        f"Churn training on Feast feature service `{run.feature_service}` (feature contract "
        f"v{tags['feature_service_version']}, project `{tags['feast.project']}`), lake data "
        f"{tags['data_start'][:10]} to {tags['data_end'][:10]}.\n\n"
        f"Training set: {len(run.training_set):,} labelled observations (sha256 "
        f"`{run.training_set_hash[:12]}`), split out of time: {windows}.\n\n"
        f"Candidates (one child run each; chosen by validation PR AUC):\n{candidates}\n\n"
        f"Constant score (the train churn rate): test PR AUC {figure(fit.constant_test['pr_auc'])}."
    )


def version_description(*, run: TrainingRun, registered_as: str) -> str:
    """The registered version's description (Markdown).

    Args:
        run: The training.
        registered_as: The alias the version gets.

    Returns:
        The description.
    """
    chosen = run.fit.candidates[run.fit.chosen]
    dates = run.split.dates
    return (
        f"`{run.fit.chosen}` trained on Feast feature service `{run.feature_service}` (lake data "
        f"{run.lineage_tags['data_start'][:10]} to {run.lineage_tags['data_end'][:10]}, training set "
        f"sha256 `{run.training_set_hash[:12]}`).\n\n"
        f"Test window {dates.test_start.date()} to {dates.test_end.date()}: PR AUC "
        f"{figure(chosen.test['pr_auc'])} (constant score {figure(run.fit.constant_test['pr_auc'])}), "
        f"ROC AUC {figure(chosen.test['roc_auc'])}, top-decile lift "
        f"{chosen.test['lift_top_decile']:.2f}.\n\n"
        f"Registered as `@{registered_as}`. It serves only once `churnops promote` moves `@champion` "
        "to it through the gate (contracts, quality, PSI drift, PR AUC against the champion); the gate's "
        "figures are logged to this version's run under `gate/`."
    )


MODEL_DESCRIPTION = (
    "Probability that a customer churns within the label horizon, from the Feast feature service "
    "the version's tags name. `churnops train` registers each version as `@challenger`; "
    "`churnops promote` moves `@champion` through the gate (data contracts, quality, PSI drift, PR "
    "AUC against the champion) and records every decision in the audit table; `churnops rollback` "
    "moves it back, audited. The prediction service follows `@champion` only when the audit table "
    "holds the decision behind the move."
)


def version_tags(*, run: TrainingRun, code_version: str) -> dict[str, str]:
    """A registered version's tags: lineage, the model, and its headline test figures (rounded).

    Args:
        run: The training.
        code_version: `git:<sha>` or `package:<version>`.

    Returns:
        Tag name → value.
    """
    chosen = run.fit.candidates[run.fit.chosen]
    return {
        "model_type": run.fit.chosen,
        "feast.feature_service": run.feature_service,
        "feature_service_version": run.lineage_tags["feature_service_version"],
        "training_set_hash": run.training_set_hash,
        "code_version": code_version,
        "test_pr_auc": figure(chosen.test["pr_auc"]),
        "test_roc_auc": figure(chosen.test["roc_auc"]),
    }


def _logged_frame(frame: pd.DataFrame, contract: FeatureContract) -> pd.DataFrame:
    out = frame.reset_index(drop=True).copy()
    if contract.privacy.hash_entity_in_training_sets:
        out[ENTITY_COLUMN] = hash_entities(
            out[ENTITY_COLUMN], namespace=f"{contract.name}:v{contract.version}"
        )
    return out


def log_datasets(run: TrainingRun) -> dict[str, Any]:
    """Log the windows as files of the active (parent) run; return them as MLflow datasets.

    Each dataset's source is its file in the parent run's artifacts, and its name says which
    feature service and window it is, so the UI shows where every row came from.

    Args:
        run: The training.

    Returns:
        Window name → `mlflow.data` dataset, to log as inputs of any run.
    """
    frames = {window: _logged_frame(frame, run.contract) for window, frame in run.windows.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for window, frame in frames.items():
            frame.to_parquet(Path(tmp) / f"{window}.parquet", index=False)
        mlflow.log_artifacts(tmp, artifact_path=DATASETS)
    with warnings.catch_warnings():
        # MLflow registers its local-artifact source class twice and warns, for every file URI,
        # that the URI matches both; they are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return {
            window: mlflow.data.from_pandas(
                frame,
                source=mlflow.get_artifact_uri(f"{DATASETS}/{window}.parquet"),
                name=f"{run.feature_service}/{window}",
                targets=LABEL_COLUMN,
            )
            for window, frame in frames.items()
        }


def log_inputs(datasets: dict[str, Any]) -> None:
    """Log the datasets as the active run's inputs, each with its window as context.

    Args:
        datasets: Window name → dataset (`log_datasets`).
    """
    for window, dataset in datasets.items():
        mlflow.log_input(dataset, context=window)


def log_lineage_file(feature_refs: list[str]) -> None:
    """Log `feast_features.json` at the active run's root (Feast's resolver compares it with the service).

    Args:
        feature_refs: The feature service's `view:feature` references.
    """
    mlflow.log_text(json.dumps(feature_refs), "feast_features.json")


def log_comparison_plots(fit: FitResult) -> None:
    """Plots of every candidate on the test window, in the active (parent) run.

    Args:
        fit: The candidates.
    """
    scores = {name: candidate.test_scores for name, candidate in fit.candidates.items()}
    _log_curves(y_true=fit.test_labels, scores=scores)


def _log_curves(*, y_true: Any, scores: dict[str, Any]) -> None:
    mlflow.log_figure(roc_figure(y_true=y_true, scores=scores), "plots/roc.png")
    mlflow.log_figure(precision_recall_figure(y_true=y_true, scores=scores), "plots/precision_recall.png")
    mlflow.log_figure(calibration_figure(y_true=y_true, scores=scores), "plots/calibration.png")


def _log_importance(fit: FitResult) -> None:
    mlflow.log_figure(
        importance_figure(importance=fit.importance, model_name=fit.chosen),
        "plots/permutation_importance.png",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "permutation_importance.csv"
        fit.importance.rename_axis("feature").reset_index().to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="plots")


def _scalar_params(params: dict[str, Any]) -> dict[str, str]:
    return {
        key: str(value)
        for key, value in sorted(params.items())
        if value is None or isinstance(value, bool | int | float | str)
    }


def log_candidate(*, run: TrainingRun, name: str, datasets: dict[str, Any]) -> ModelInfo:
    """Log one candidate into the active (child) run: parameters, metrics, plots, inputs, model.

    Args:
        run: The training.
        name: The candidate.
        datasets: The windows as MLflow datasets (`log_datasets`).

    Returns:
        MLflow's `ModelInfo` of the logged model.
    """
    candidate = run.fit.candidates[name]
    classifier = CANDIDATES[name](contract=run.contract, seed=run.seed).named_steps["classifier"]
    mlflow.log_params({"candidate": name, "seed": str(run.seed), **_scalar_params(classifier.get_params())})
    mlflow.log_metrics(candidate_metrics(candidate))
    log_inputs(datasets)
    _log_curves(y_true=run.fit.test_labels, scores={name: candidate.test_scores})
    if name == run.fit.chosen:
        _log_importance(run.fit)
    log_lineage_file(run.feature_refs)
    example = model_input(frame=run.split.test.head(5), contract=run.contract)
    return mlflow.sklearn.log_model(
        candidate.model,
        name="model",
        signature=infer_signature(example, candidate.model.predict_proba(example)),
        input_example=example,
        pip_requirements=model_requirements(),
        skops_trusted_types=trusted_types(candidate.model),
        # Serving and the gate need probabilities; pyfunc's predict returns [P(stay), P(churn)].
        pyfunc_predict_fn="predict_proba",
    )


def candidate_description(*, run: TrainingRun, name: str) -> str:
    """A child run's description.

    Args:
        run: The training.
        name: The candidate.

    Returns:
        One paragraph.
    """
    candidate = run.fit.candidates[name]
    verdict = (
        "Chosen (highest validation PR AUC): its model is registered."
        if name == run.fit.chosen
        else f"Not chosen: `{run.fit.chosen}` has the higher validation PR AUC."
    )
    return (
        f"Candidate `{name}`, fitted on the train window and calibrated (sigmoid) on the validation "
        f"window of feature service `{run.feature_service}`: validation PR AUC "
        f"{figure(candidate.validation['pr_auc'])}, test PR AUC {figure(candidate.test['pr_auc'])}, "
        f"test ROC AUC {figure(candidate.test['roc_auc'])}. {verdict}"
    )
