"""One training: labels from the lake, a training set from Feast, two candidates, one MLflow run, one version.

`train` is the wiring (lake → labels → feature service → `run_training`); `run_training` does the
tracked part for any loader of a labelled training set, so it can be exercised without a store.

Lineage follows Feast's MLflow conventions, written by hand: the run and the registered version
carry `feast.feature_service`, the run `feast.project`, `feast.feature_refs` and
`feast.feature_views`, and the run's root holds `feast_features.json`, so Feast's
`store.mlflow.resolve_features("models:/churn-model/champion")` works for serving (Feast's
resolver parses `models:/<name>/<version or alias>`, not MLflow's `@alias` form). When
`feature_store.yaml` enables Feast's `mlflow:` block, Feast's own auto-logging of the historical
retrieval (entity count, retrieval time) lands in the same run, because the retrieval happens
while the run is active. Feast's `store.mlflow.log_model` is not used: it discards the logged
model's info (which registration needs), passes the deprecated positional `artifact_path`, and
swallows lineage errors, while this module must fail loudly when lineage cannot be written.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.storage.times import timestamp_utc
from churnops.training.fit import CONSTANT, FitResult, fit_candidates
from churnops.training.labels import (
    ENTITY_COLUMN,
    FIRST_OBSERVATION_AFTER_SIGNUP,
    HORIZON,
    OBSERVATION_EVERY,
    TIME_COLUMN,
    labelled_observations,
)
from churnops.training.models import CANDIDATES, model_input
from churnops.training.names import CHALLENGER, LABEL_COLUMN, REGISTERED_MODEL
from churnops.training.plots import calibration_figure, importance_figure, precision_recall_figure, roc_figure
from churnops.training.split import DEFAULT_FRACTIONS, Split, SplitDates, out_of_time_split
from churnops.training.tracking import (
    code_version,
    content_hash,
    ensure_experiment,
    hash_entities,
    model_requirements,
    trusted_types,
)

DEFAULT_FEATURE_SERVICE = "customer_profile_v1"
_CHURN_LABELS_SCHEMA = pa.schema([("customer_id", pa.string()), ("churn_date", pa.timestamp("us", tz="UTC"))])
# Event-time columns of the activity sources, which bound the observed history.
_ACTIVITY_TIMESTAMPS = {
    "usage_events": "event_timestamp",
    "billing": "invoice_date",
    "support_tickets": "created_at",
}


@dataclass(frozen=True)
class TrainSettings:
    """Labelling and split settings.

    Attributes:
        horizon: The label window (T, T + horizon].
        fractions: Target row shares of the train, validation and test windows.
        min_history: How much history must precede an observation so its features see whole
            windows; None means the feature contract's lookback.
    """

    horizon: timedelta = HORIZON
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    min_history: timedelta | None = None


@dataclass(frozen=True)
class Lineage:
    """Where a training set came from, as logged on the run and the registered version.

    Attributes:
        feature_service: The Feast feature service name.
        feature_service_version: The feature contract's version behind the service.
        feast_project: The Feast project.
        feature_refs: `view:feature` references of the service, in order.
        data_start: The first event time in the lake.
        data_end: The last event time in the lake.
    """

    feature_service: str
    feature_service_version: int
    feast_project: str
    feature_refs: list[str]
    data_start: pd.Timestamp
    data_end: pd.Timestamp

    def tags(self) -> dict[str, str]:
        """The run tags (Feast's names where Feast has one)."""
        views = sorted({ref.split(":", 1)[0] for ref in self.feature_refs if ":" in ref})
        return {
            "feast.project": self.feast_project,
            "feast.feature_service": self.feature_service,
            "feast.feature_refs": ",".join(self.feature_refs),
            "feast.feature_views": ",".join(views),
            "feature_service": self.feature_service,
            "feature_service_version": str(self.feature_service_version),
            "data_start": self.data_start.isoformat(),
            "data_end": self.data_end.isoformat(),
        }


@dataclass(frozen=True)
class TrainResult:
    """What a training produced.

    Attributes:
        run_id: The MLflow run.
        experiment_id: The MLflow experiment.
        model_name: The registered model (`churn-model`).
        model_version: The new version, now aliased `challenger`.
        model_uri: `models:/churn-model/<version>`.
        chosen: The chosen candidate's name.
        metrics: `{candidate: {"validation": {...}, "test": {...}}}`.
        constant_test: Test metrics of the constant (train churn rate) reference.
        split_dates: First and last observation time of each window.
        rows: Row counts by window (`train`, `validation`, `test`).
        positive_rates: Churn rate by window.
        training_set_hash: SHA-256 of the labelled training set.
        feature_service: The feature service used.
        tags: The tags set on the registered version.
    """

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str
    chosen: str
    metrics: dict[str, dict[str, dict[str, float]]]
    constant_test: dict[str, float]
    split_dates: SplitDates
    rows: dict[str, int]
    positive_rates: dict[str, float]
    training_set_hash: str
    feature_service: str
    tags: dict[str, str]


def _scalar_params(prefix: str, params: dict[str, Any]) -> dict[str, str]:
    return {
        f"{prefix}.{key}": str(value)
        for key, value in sorted(params.items())
        if value is None or isinstance(value, bool | int | float | str)
    }


def _logged_frame(frame: pd.DataFrame, contract: FeatureContract) -> pd.DataFrame:
    out = frame.reset_index(drop=True).copy()
    if contract.privacy.hash_entity_in_training_sets:
        out[ENTITY_COLUMN] = hash_entities(
            out[ENTITY_COLUMN], namespace=f"{contract.name}:v{contract.version}"
        )
    return out


def _check_training_set(frame: pd.DataFrame, contract: FeatureContract) -> None:
    required = [ENTITY_COLUMN, TIME_COLUMN, *contract.feature_names, LABEL_COLUMN]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the training set lacks column(s) {missing}; it needs the entity, the timestamp, every "
            f"feature of {contract.name} v{contract.version} and {LABEL_COLUMN!r}"
        )
    if frame.empty:
        raise ValueError("the training set is empty: no customer was observable with a complete label window")


def _windows(split: Split) -> dict[str, pd.DataFrame]:
    return {"train": split.train, "validation": split.validation, "test": split.test}


def _run_params(
    *,
    split: Split,
    fit: FitResult,
    lineage: Lineage,
    contract: FeatureContract,
    seed: int,
    settings: TrainSettings,
) -> dict[str, str]:
    """The run's parameters: labelling, split, features, the choice, and each candidate's settings."""
    params: dict[str, str] = {
        "seed": str(seed),
        "feature_service": lineage.feature_service,
        "feature_service_version": str(lineage.feature_service_version),
        "horizon_days": str(settings.horizon / timedelta(days=1)),
        "observation_every_days": str(OBSERVATION_EVERY / timedelta(days=1)),
        "first_observation_after_signup_days": str(FIRST_OBSERVATION_AFTER_SIGNUP / timedelta(days=1)),
        "min_history_days": str((settings.min_history or contract.lookback) / timedelta(days=1)),
        "split_fractions": ",".join(str(f) for f in settings.fractions),
        "model_features": ",".join(contract.feature_names),
        "chosen_model": fit.chosen,
        **{f"split.{key}": value for key, value in split.dates.as_dict().items()},
    }
    for name, build in CANDIDATES.items():
        classifier = build(contract=contract, seed=seed).named_steps["classifier"]
        params.update(_scalar_params(name, classifier.get_params()))
    return params


def _run_metrics(*, split: Split, fit: FitResult) -> dict[str, float]:
    """Every candidate's metrics, the constant reference, the chosen one's, and rows per window."""
    metrics: dict[str, float] = {}
    for name, candidate in fit.candidates.items():
        for window, values in (("validation", candidate.validation), ("test", candidate.test)):
            metrics.update({f"{name}.{window}.{key}": value for key, value in values.items()})
    metrics.update({f"{CONSTANT}.test.{key}": value for key, value in fit.constant_test.items()})
    chosen = fit.candidates[fit.chosen]
    metrics.update({f"validation_{key}": value for key, value in chosen.validation.items()})
    metrics.update({f"test_{key}": value for key, value in chosen.test.items()})
    for window, frame in _windows(split).items():
        metrics[f"rows_{window}"] = float(len(frame))
        metrics[f"positive_rate_{window}"] = float(frame[LABEL_COLUMN].mean())
    return metrics


def _training_set_tags(
    *, training_set: pd.DataFrame, fit: FitResult, training_set_hash: str
) -> dict[str, str]:
    times = pd.to_datetime(training_set[TIME_COLUMN], utc=True)
    return {
        "training_set_hash": training_set_hash,
        "training_set_start": times.min().isoformat(),
        "training_set_end": times.max().isoformat(),
        "training_set_rows": str(len(training_set)),
        "chosen_model": fit.chosen,
    }


def _log_plots(fit: FitResult) -> None:
    scores = {name: candidate.test_scores for name, candidate in fit.candidates.items()}
    y = fit.test_labels
    mlflow.log_figure(roc_figure(y_true=y, scores=scores), "plots/roc.png")
    mlflow.log_figure(precision_recall_figure(y_true=y, scores=scores), "plots/precision_recall.png")
    mlflow.log_figure(calibration_figure(y_true=y, scores=scores), "plots/calibration.png")
    mlflow.log_figure(
        importance_figure(importance=fit.importance, model_name=fit.chosen),
        "plots/permutation_importance.png",
    )


def _log_files(*, split: Split, fit: FitResult, lineage: Lineage, contract: FeatureContract) -> None:
    """Log the windows as datasets and files, the importance table, and Feast's feature list."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        datasets = folder / "datasets"
        datasets.mkdir()
        for window, frame in _windows(split).items():
            logged = _logged_frame(frame, contract)
            logged.to_parquet(datasets / f"{window}.parquet", index=False)
            mlflow.log_input(
                mlflow.data.from_pandas(logged, name=window, targets=LABEL_COLUMN), context=window
            )
        mlflow.log_artifacts(str(datasets), artifact_path="datasets")
        importance = fit.importance.rename_axis("feature").reset_index()
        importance.to_csv(folder / "permutation_importance.csv", index=False)
        mlflow.log_artifact(str(folder / "permutation_importance.csv"), artifact_path="plots")
        # Feast's model resolver compares this list with the feature service's current features.
        (folder / "feast_features.json").write_text(json.dumps(lineage.feature_refs), encoding="utf-8")
        mlflow.log_artifact(str(folder / "feast_features.json"))


def _log_run_content(
    *,
    training_set: pd.DataFrame,
    split: Split,
    fit: FitResult,
    lineage: Lineage,
    contract: FeatureContract,
    seed: int,
    settings: TrainSettings,
    training_set_hash: str,
) -> None:
    mlflow.log_params(
        _run_params(split=split, fit=fit, lineage=lineage, contract=contract, seed=seed, settings=settings)
    )
    mlflow.log_metrics(_run_metrics(split=split, fit=fit))
    mlflow.set_tags(
        _training_set_tags(training_set=training_set, fit=fit, training_set_hash=training_set_hash)
    )
    _log_plots(fit)
    _log_files(split=split, fit=fit, lineage=lineage, contract=contract)


def _open_tracking(*, tracking_uri: str, artifact_location: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the tracking store (creating a SQLite store's folder) and get the experiment.

    Returns:
        The client and the `churn` experiment's id.
    """
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = ensure_experiment(client=client, artifact_location=artifact_location)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return client, experiment_id


def _run_tags(*, lineage: Lineage, version_of_code: str) -> dict[str, str]:
    tags = {**lineage.tags(), "code_version": version_of_code}
    if version_of_code.startswith("git:"):
        tags["mlflow.source.git.commit"] = version_of_code.removeprefix("git:")
    return tags


def _log_model(*, fit: FitResult, split: Split, contract: FeatureContract) -> ModelInfo:
    """Log the chosen model with its signature and an input example from the test window.

    Returns:
        MLflow's `ModelInfo` of the logged model.
    """
    example = model_input(frame=split.test.head(5), contract=contract)
    return mlflow.sklearn.log_model(
        fit.model,
        name="model",
        signature=infer_signature(example, fit.model.predict_proba(example)),
        input_example=example,
        pip_requirements=model_requirements(),
        skops_trusted_types=trusted_types(fit.model),
        # Serving and the gate need probabilities; pyfunc's predict returns [P(stay), P(churn)].
        pyfunc_predict_fn="predict_proba",
    )


def _version_tags(
    *, fit: FitResult, split: Split, lineage: Lineage, training_set_hash: str, version_of_code: str
) -> dict[str, str]:
    chosen = fit.candidates[fit.chosen]
    return {
        **{f"test_{key}": str(value) for key, value in chosen.test.items()},
        **{f"validation_{key}": str(value) for key, value in chosen.validation.items()},
        "feast.feature_service": lineage.feature_service,
        "feature_service": lineage.feature_service,
        "feature_service_version": str(lineage.feature_service_version),
        "training_set_hash": training_set_hash,
        "model_type": fit.chosen,
        "code_version": version_of_code,
        "test_start": split.dates.test_start.isoformat(),
        "test_end": split.dates.test_end.isoformat(),
    }


def _register_challenger(*, client: MlflowClient, model_uri: str, tags: dict[str, str]) -> str:
    """Register a logged model as a new version, tag it and alias it `challenger`.

    Returns:
        The new version.
    """
    version = mlflow.register_model(model_uri, REGISTERED_MODEL).version
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    return str(version)


@dataclass(frozen=True)
class _Trained:
    """What the tracked run produced, before registration."""

    run_id: str
    model_uri: str
    split: Split
    fit: FitResult
    training_set_hash: str


def _tracked_run(
    *,
    load_training_set: Callable[[], pd.DataFrame],
    lineage: Lineage,
    experiment_id: str,
    run_tags: dict[str, str],
    seed: int,
    contract: FeatureContract,
    settings: TrainSettings,
) -> _Trained:
    """Inside one MLflow run: load the training set, split, fit, log everything and the model."""
    with (
        warnings.catch_warnings(),
        mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train-{lineage.feature_service}-seed{seed}", tags=run_tags
        ) as run,
    ):
        # Contract features are never null (the join fills defaults), so MLflow's hint that
        # integer columns cannot hold missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        training_set = load_training_set()
        _check_training_set(training_set, contract)
        split = out_of_time_split(frame=training_set, fractions=settings.fractions)
        fit = fit_candidates(split=split, contract=contract, seed=seed)
        training_set_hash = content_hash(training_set)
        _log_run_content(
            training_set=training_set,
            split=split,
            fit=fit,
            lineage=lineage,
            contract=contract,
            seed=seed,
            settings=settings,
            training_set_hash=training_set_hash,
        )
        model_info = _log_model(fit=fit, split=split, contract=contract)
        return _Trained(
            run_id=run.info.run_id,
            model_uri=model_info.model_uri,
            split=split,
            fit=fit,
            training_set_hash=training_set_hash,
        )


def _train_result(
    *, trained: _Trained, experiment_id: str, version: str, lineage: Lineage, tags: dict[str, str]
) -> TrainResult:
    split, fit = trained.split, trained.fit
    return TrainResult(
        run_id=trained.run_id,
        experiment_id=experiment_id,
        model_name=REGISTERED_MODEL,
        model_version=version,
        model_uri=f"models:/{REGISTERED_MODEL}/{version}",
        chosen=fit.chosen,
        metrics={
            name: {"validation": candidate.validation, "test": candidate.test}
            for name, candidate in fit.candidates.items()
        },
        constant_test=fit.constant_test,
        split_dates=split.dates,
        rows={window: len(frame) for window, frame in _windows(split).items()},
        positive_rates={
            window: float(frame[LABEL_COLUMN].mean()) for window, frame in _windows(split).items()
        },
        training_set_hash=trained.training_set_hash,
        feature_service=lineage.feature_service,
        tags=tags,
    )


def run_training(
    *,
    load_training_set: Callable[[], pd.DataFrame],
    lineage: Lineage,
    tracking_uri: str,
    artifact_location: str,
    seed: int = 42,
    contract: FeatureContract | None = None,
    settings: TrainSettings | None = None,
) -> TrainResult:
    """Load a labelled training set inside a new MLflow run, fit, log everything, register a challenger.

    Args:
        load_training_set: Returns the labelled training set (entity, timestamp, contract features,
            `snapshot_ts`, `profile_defaulted`, `label`); called while the run is active, so a
            feature store's own MLflow logging lands in this run.
        lineage: The feature service and data window behind the training set.
        tracking_uri: The MLflow tracking and registry URI.
        artifact_location: The `churn` experiment's artifact location.
        seed: The random seed of every randomised step.
        contract: The feature contract (default: `customer_profile` v1).
        settings: Labelling and split settings.

    Returns:
        The run, the registered version and the metrics.

    Raises:
        ValueError: When the training set is malformed or too small to split and evaluate.
    """
    contract = contract or load_feature_contract()
    settings = settings or TrainSettings()
    client, experiment_id = _open_tracking(tracking_uri=tracking_uri, artifact_location=artifact_location)
    version_of_code = code_version()
    trained = _tracked_run(
        load_training_set=load_training_set,
        lineage=lineage,
        experiment_id=experiment_id,
        run_tags=_run_tags(lineage=lineage, version_of_code=version_of_code),
        seed=seed,
        contract=contract,
        settings=settings,
    )
    version_tags = _version_tags(
        fit=trained.fit,
        split=trained.split,
        lineage=lineage,
        training_set_hash=trained.training_set_hash,
        version_of_code=version_of_code,
    )
    version = _register_challenger(client=client, model_uri=trained.model_uri, tags=version_tags)
    return _train_result(
        trained=trained, experiment_id=experiment_id, version=version, lineage=lineage, tags=version_tags
    )


def observed_window(*, lake_dir: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """When the lake's history starts and ends.

    The start is the latest of the activity sources' first event times (usage, billing, support):
    before it, some source was not yet delivering, so a feature window reaching back there is
    truncated (billing, for one, can hold invoices from before the usage history). The end is the
    last event time of any activity source or churn label.

    Args:
        lake_dir: The lake's root folder.

    Returns:
        `(data_start, data_end)`, UTC.

    Raises:
        ValueError: When the lake holds no activity.
    """
    from churnops.storage.duck import duckdb_connection
    from churnops.storage.lake import list_partitions, source_glob

    starts: list[pd.Timestamp] = []
    ends: list[pd.Timestamp] = []
    columns = {**_ACTIVITY_TIMESTAMPS, "churn_labels": "churn_date"}
    with duckdb_connection() as con:
        for source, column in columns.items():
            if not list_partitions(lake_dir, source):
                continue
            low, high = con.execute(
                f"SELECT min({column}), max({column}) FROM read_parquet(?)", [source_glob(lake_dir, source)]
            ).fetchone()
            if low is None:
                continue
            if source in _ACTIVITY_TIMESTAMPS:
                starts.append(timestamp_utc(low))
            ends.append(timestamp_utc(high))
    if not starts:
        raise ValueError(
            f"the lake at {lake_dir} holds no usage, billing or support rows: ingest the sources first"
        )
    return max(starts), max(ends)


def read_label_sources(*, lake_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customers and churn labels from the lake.

    Args:
        lake_dir: The lake's root folder.

    Returns:
        `(customers, churn_labels)`; churn labels may be empty (nobody churned).

    Raises:
        ValueError: When the lake has no customers.
    """
    from churnops.storage.lake import read_source

    customers = read_source(lake_dir, "customers")
    if customers.empty:
        raise ValueError(f"the lake at {lake_dir} has no customers: ingest the sources first")
    churn_labels = read_source(lake_dir, "churn_labels", schema=_CHURN_LABELS_SCHEMA)
    return customers, churn_labels


def feature_service_refs(*, store: Any, feature_service: str) -> list[str]:
    """The `view:feature` references a Feast feature service serves, in order.

    Args:
        store: A `feast.FeatureStore`.
        feature_service: The service's name.

    Returns:
        The references.

    Raises:
        ValueError: When the registry has no such service.
    """
    try:
        service = store.get_feature_service(feature_service)
    except Exception as exc:  # Feast raises its own FeatureServiceNotFoundException
        raise ValueError(
            f"feature service {feature_service!r} is not in the Feast registry of project "
            f"{store.project!r}: apply the feature repository first ({exc})"
        ) from exc
    return [
        f"{projection.name_to_use()}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def _check_feast_mlflow(*, store: Any, tracking_uri: str) -> None:
    """Refuse a store whose own MLflow logging goes to another tracking store than this training."""
    feast_mlflow = getattr(store.config, "mlflow", None)
    if feast_mlflow is not None and feast_mlflow.enabled:
        configured = feast_mlflow.get_tracking_uri()
        if configured is not None and configured != tracking_uri:
            raise ValueError(
                f"feature_store.yaml sends Feast's MLflow logging to {configured}, but this training "
                f"tracks in {tracking_uri}: make them the same"
            )


def _labelled_entities(
    *, lake_dir: Path, contract: FeatureContract, settings: TrainSettings
) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """The labelled observations the lake supports, and its observed window.

    Returns:
        `(entities, data_start, data_end)`: entity, timestamp and label per observation.

    Raises:
        ValueError: When no observation has both a whole history and a whole label window.
    """
    customers, churn_labels = read_label_sources(lake_dir=lake_dir)
    data_start, data_end = observed_window(lake_dir=lake_dir)
    min_history = settings.min_history or contract.lookback
    entities = labelled_observations(
        customers=customers,
        churn_labels=churn_labels,
        data_end=data_end,
        horizon=settings.horizon,
        observe_from=data_start + min_history,
    )
    if entities.empty:
        raise ValueError(
            f"no observation has {settings.horizon.days} days of labels after "
            f"{min_history.days} days of history between {data_start} and "
            f"{data_end}: generate or ingest a longer history"
        )
    return entities, data_start, data_end


def _check_same_rows(*, features: pd.DataFrame, keys: pd.DataFrame) -> None:
    # The feature service returns exactly the entity rows in order; anything else would
    # silently attach labels to the wrong rows.
    if (
        len(features) != len(keys)
        or not (features[ENTITY_COLUMN].astype(str).to_numpy() == keys[ENTITY_COLUMN].to_numpy()).all()
        or not (
            pd.to_datetime(features[TIME_COLUMN], utc=True).to_numpy() == keys[TIME_COLUMN].to_numpy()
        ).all()
    ):
        raise ValueError(
            f"the feature service returned {len(features)} rows for {len(keys)} entity rows, or in "
            "another order; a training set must keep its entity frame's rows"
        )


def _feature_service_loader(
    *, store: Any, entities: pd.DataFrame, feature_service: str
) -> Callable[[], pd.DataFrame]:
    """A loader of the labelled training set: the entities' features through the service, plus labels."""
    from churnops.features.training_set import get_training_set

    def load_training_set() -> pd.DataFrame:
        keys = entities[[ENTITY_COLUMN, TIME_COLUMN]]
        features = get_training_set(store=store, entities=keys, feature_service=feature_service)
        _check_same_rows(features=features, keys=keys)
        return features.reset_index(drop=True).assign(**{LABEL_COLUMN: entities[LABEL_COLUMN].to_numpy()})

    return load_training_set


def train(
    *,
    store: Any,
    lake_dir: Path,
    tracking_uri: str,
    artifact_location: str,
    seed: int = 42,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    contract: FeatureContract | None = None,
    settings: TrainSettings | None = None,
) -> TrainResult:
    """Label observations from the lake, fetch their features point in time, train and register.

    Args:
        store: The `feast.FeatureStore` (see `features.store.open_store`).
        lake_dir: The lake's root folder (customers, churn labels, activity).
        tracking_uri: The MLflow tracking and registry URI (`sqlite:///<home>/mlruns/mlflow.db`).
        artifact_location: The `churn` experiment's artifact location (`<home>/mlruns/artifacts`).
        seed: The random seed of every randomised step.
        feature_service: The Feast feature service to train on.
        contract: The feature contract (default: `customer_profile` v1).
        settings: Labelling and split settings.

    Returns:
        The run, the registered version (alias `challenger`) and the metrics.

    Raises:
        ValueError: When inputs are missing or malformed, the feature service is unknown, the
            store's MLflow configuration points elsewhere, or the training set cannot be split.
    """
    contract = contract or load_feature_contract()
    settings = settings or TrainSettings()
    _check_feast_mlflow(store=store, tracking_uri=tracking_uri)
    entities, data_start, data_end = _labelled_entities(
        lake_dir=lake_dir, contract=contract, settings=settings
    )
    lineage = Lineage(
        feature_service=feature_service,
        feature_service_version=contract.version,
        feast_project=store.project,
        feature_refs=feature_service_refs(store=store, feature_service=feature_service),
        data_start=data_start,
        data_end=data_end,
    )
    return run_training(
        load_training_set=_feature_service_loader(
            store=store, entities=entities, feature_service=feature_service
        ),
        lineage=lineage,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        seed=seed,
        contract=contract,
        settings=settings,
    )
