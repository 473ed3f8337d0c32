"""One training: labels from the lake, a training set from Feast, two candidates, MLflow runs, one version.

`train` is the wiring (lake → labels → feature service → `run_training`); `run_training` does the
tracked part for any loader of a labelled training set, so it can be exercised without a store.
A training is one parent run with a nested child run per candidate (`training.runs` says what
goes where); the chosen candidate's model is registered from its child run.

Lineage follows Feast's MLflow conventions, written by hand: the runs and the registered version
carry `feast.feature_service`, the runs `feast.project`, `feast.feature_refs` and
`feast.feature_views`, and each run's root holds `feast_features.json`, so Feast's
`store.mlflow.resolve_features("models:/churn-model/champion")` works for serving (Feast's
resolver parses `models:/<name>/<version or alias>`, not MLflow's `@alias` form). When
`feature_store.yaml` enables Feast's `mlflow:` block, Feast's own auto-logging of the historical
retrieval (entity count, retrieval time) lands in the same run, because the retrieval happens
while the run is active. Feast's `store.mlflow.log_model` is not used: it discards the logged
model's info (which registration needs), passes the deprecated positional `artifact_path`, and
swallows lineage errors, while this module must fail loudly when lineage cannot be written.
"""

from __future__ import annotations

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

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.storage.times import timestamp_utc
from churnops.training.fit import fit_candidates
from churnops.training.labels import (
    ENTITY_COLUMN,
    HORIZON,
    TIME_COLUMN,
    labelled_observations,
)
from churnops.training.names import CHALLENGER, LABEL_COLUMN, REGISTERED_MODEL
from churnops.training.runs import (
    MODEL_DESCRIPTION,
    TrainingRun,
    candidate_description,
    log_candidate,
    log_comparison_plots,
    log_datasets,
    log_inputs,
    log_lineage_file,
    parent_metrics,
    parent_params,
    training_description,
    version_description,
    version_tags,
)
from churnops.training.split import DEFAULT_FRACTIONS, Split, SplitDates, out_of_time_split
from churnops.training.tracking import (
    code_version,
    content_hash,
    ensure_experiment,
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
        run_id: The chosen candidate's MLflow run (the registered version's source run).
        parent_run_id: The training's parent run (the training set, lineage, comparison plots).
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
    parent_run_id: str
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


def _register_challenger(
    *, client: MlflowClient, model_uri: str, tags: dict[str, str], description: str
) -> str:
    """Register a logged model as a new version, describe and tag it, and alias it `challenger`.

    Returns:
        The new version.
    """
    version = mlflow.register_model(model_uri, REGISTERED_MODEL).version
    client.update_registered_model(REGISTERED_MODEL, description=MODEL_DESCRIPTION)
    client.update_model_version(REGISTERED_MODEL, version, description=description)
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    return str(version)


@dataclass(frozen=True)
class _Trained:
    """What the tracked runs produced, before registration."""

    parent_run_id: str
    run_id: str
    model_uri: str
    run: TrainingRun


def _training_tags(*, training_set: pd.DataFrame, training_set_hash: str) -> dict[str, str]:
    times = pd.to_datetime(training_set[TIME_COLUMN], utc=True)
    return {
        "training_set_hash": training_set_hash,
        "training_set_start": times.min().isoformat(),
        "training_set_end": times.max().isoformat(),
        "training_set_rows": str(len(training_set)),
    }


def _log_parent(*, run: TrainingRun, settings: TrainSettings) -> dict[str, Any]:
    """Log the shared part of a training into the active parent run; return the windows as datasets."""
    mlflow.log_params(
        parent_params(
            run=run,
            horizon=settings.horizon,
            min_history=settings.min_history or run.contract.lookback,
            fractions=",".join(str(f) for f in settings.fractions),
        )
    )
    mlflow.log_metrics(parent_metrics(run))
    mlflow.set_tags(
        {
            **_training_tags(training_set=run.training_set, training_set_hash=run.training_set_hash),
            "chosen_model": run.fit.chosen,
            "mlflow.note.content": training_description(run),
        }
    )
    datasets = log_datasets(run)
    log_inputs(datasets)
    log_comparison_plots(run.fit)
    log_lineage_file(run.feature_refs)
    return datasets


def _log_children(
    *, run: TrainingRun, experiment_id: str, run_tags: dict[str, str], datasets: dict[str, Any]
) -> tuple[str, str]:
    """One nested run per candidate; returns the chosen candidate's run id and model URI."""
    chosen: tuple[str, str] | None = None
    shared = {
        **run_tags,
        **_training_tags(training_set=run.training_set, training_set_hash=run.training_set_hash),
    }
    for name in run.fit.candidates:
        tags = {
            **shared,
            "churnops.candidate": name,
            "churnops.chosen": str(name == run.fit.chosen).lower(),
            "mlflow.note.content": candidate_description(run=run, name=name),
        }
        # The experiment is named again: a nested run otherwise lands in MLflow's default experiment.
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True, tags=tags) as child:
            info = log_candidate(run=run, name=name, datasets=datasets)
        if name == run.fit.chosen:
            chosen = (child.info.run_id, info.model_uri)
    if chosen is None:
        raise ValueError(f"the chosen candidate {run.fit.chosen!r} is not among the candidates")
    return chosen


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
    """Inside one parent MLflow run: load the training set, split, fit, log it and one child per candidate."""
    with (
        warnings.catch_warnings(),
        mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train-{lineage.feature_service}-seed{seed}", tags=run_tags
        ) as parent,
    ):
        # Contract features are never null (the join fills defaults), so MLflow's hint that
        # integer columns cannot hold missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        training_set = load_training_set()
        _check_training_set(training_set, contract)
        split = out_of_time_split(frame=training_set, fractions=settings.fractions)
        run = TrainingRun(
            training_set=training_set,
            split=split,
            fit=fit_candidates(split=split, contract=contract, seed=seed),
            contract=contract,
            lineage_tags=lineage.tags(),
            feature_refs=lineage.feature_refs,
            training_set_hash=content_hash(training_set),
            seed=seed,
        )
        datasets = _log_parent(run=run, settings=settings)
        run_id, model_uri = _log_children(
            run=run, experiment_id=experiment_id, run_tags=run_tags, datasets=datasets
        )
        return _Trained(parent_run_id=parent.info.run_id, run_id=run_id, model_uri=model_uri, run=run)


def _train_result(
    *, trained: _Trained, experiment_id: str, version: str, lineage: Lineage, tags: dict[str, str]
) -> TrainResult:
    split, fit = trained.run.split, trained.run.fit
    return TrainResult(
        run_id=trained.run_id,
        parent_run_id=trained.parent_run_id,
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
        training_set_hash=trained.run.training_set_hash,
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
    tags = version_tags(run=trained.run, code_version=version_of_code)
    version = _register_challenger(
        client=client,
        model_uri=trained.model_uri,
        tags=tags,
        description=version_description(run=trained.run, registered_as=CHALLENGER),
    )
    return _train_result(
        trained=trained, experiment_id=experiment_id, version=version, lineage=lineage, tags=tags
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
