"""Monitoring of what was served: drift of served features and scores, realised performance, joins.

For each trailing window (the contract's `monitoring.windows`, by default 24 h and 7 d, ending at
the evaluation time E):

- **feature drift**: the features the service scored for known customers (`known` = 1) against the
  champion's training set (`datasets/train.parquet` of its MLflow run), PSI per monitored feature
  with Evidently, graded with the contract's `drift.warn` / `drift.block`, exactly as
  `churnops drift` grades (`monitoring.drift.psi_report`);
- **prediction drift**: the champion's served probabilities (rows answered by the current
  champion version) against its own probabilities on its test set (`datasets/test.parquet`),
  graded the same way;
- **join drift**: match rate, the shares of `present` / `stale` / `default` feature statuses and
  duplicate predictions per customer (`monitoring.served.JoinFigures`); a match rate below the
  contract's `entity.join.match_rate_min` warns.

Then **realised performance** (`monitoring.realised`): the predictions made in the contract's
`monitoring.lookback` before E - horizon (their outcome window has closed) are joined to the
churn labels known at E, per ISO week and model version, against each version's test figures.

Each window's Evidently report becomes a snapshot in the home's Evidently workspace (one project
per home), with the join and performance figures in its metadata, so `evidently ui` shows the
runs over time. The overall status is the worst of everything graded; `block` means exit 1.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnops.contracts.durations import format_duration
from churnops.contracts.feature_contract import FeatureContract
from churnops.monitoring.drift import FeatureDrift, monitored_features, prepare_frame, psi_report
from churnops.monitoring.gate import GateError
from churnops.monitoring.inputs import InputProblem
from churnops.monitoring.realised import Realised, known_labels, label_predictions, weekly_figures
from churnops.monitoring.registry import (
    TEST_ARTIFACT,
    TRAIN_ARTIFACT,
    champion_version,
    load_run_frame,
    load_version,
)
from churnops.monitoring.served import (
    JoinFigures,
    count_rows,
    join_figures,
    matured_rows,
    open_log,
    served_rows,
)
from churnops.storage import prediction_log_schema as log
from churnops.storage.atomic import write_atomic
from churnops.training.labels import HORIZON
from churnops.training.models import model_input
from churnops.training.names import REGISTERED_MODEL

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROJECT_NAME = "churnops: served predictions"
_TAB = "Served predictions"
DEFAULT_MAX_ROWS = 500_000
_SEVERITY = {"ok": 0, "ungraded": 0, "warn": 1, "block": 2}


@dataclass(frozen=True)
class References:
    """What served data is compared with: the champion's training features and test scores.

    Attributes:
        model: The registered model.
        version: The champion version.
        train: The champion's training set, reduced to the monitored features (typed).
        test_scores: The champion's probabilities on its test set.
        test_figures: Each known version's test figure of the graded metric (from MLflow).
        label: Where the references came from, for messages.
    """

    model: str
    version: str
    train: pd.DataFrame
    test_scores: np.ndarray
    test_figures: dict[str, float]
    label: str


@dataclass(frozen=True)
class WindowResult:
    """One trailing window's figures.

    Attributes:
        name: The window's length as the contract writes it (`24h`, `7d`).
        start: Its first instant.
        end: The instant after its last (the evaluation time).
        join: Match rate, statuses, duplicates.
        served: Known predictions in the window.
        compared: Of which compared (fewer when the window was thinned to the row cap).
        champion_rows: Compared rows the champion version answered (their scores are compared).
        features: Feature drift (empty when the window has no known prediction).
        score: Prediction drift (None when the champion answered nothing in the window).
        match_rate_min: The contract's minimum match rate.
        snapshot: Evidently's snapshot of the window (None when nothing was compared).
    """

    name: str
    start: datetime
    end: datetime
    join: JoinFigures
    served: int
    compared: int
    champion_rows: int
    features: tuple[FeatureDrift, ...]
    score: FeatureDrift | None
    match_rate_min: float
    snapshot: Any = None

    @property
    def join_status(self) -> str:
        """`warn` when the match rate is below the contract's minimum, else `ok`."""
        rate = self.join.match_rate
        return "warn" if not math.isnan(rate) and rate < self.match_rate_min else "ok"

    @property
    def feature_status(self) -> str:
        """The worst feature grade."""
        return _worst(f.status for f in self.features)

    @property
    def score_status(self) -> str:
        """The prediction-drift grade (`ok` when there was nothing to compare)."""
        return "ok" if self.score is None else self.score.status

    @property
    def status(self) -> str:
        """The worst of feature drift, prediction drift and join drift."""
        return _worst([self.feature_status, self.score_status, self.join_status])

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary of the window."""
        return {
            "window": self.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "status": self.status,
            "served": self.served,
            "compared": self.compared,
            "champion_rows": self.champion_rows,
            "join": {
                **self.join.to_dict(),
                "status": self.join_status,
                "match_rate_min": self.match_rate_min,
            },
            "feature_drift": {
                "status": self.feature_status,
                "blocking": [f.feature for f in self.features if f.status == "block"],
                "warning": [f.feature for f in self.features if f.status == "warn"],
                "features": [_drift_dict(f) for f in self.features],
            },
            "prediction_drift": None if self.score is None else _drift_dict(self.score),
        }


@dataclass(frozen=True)
class MonitorResult:
    """Everything one `churnops monitor` run found.

    Attributes:
        evaluated_at: The evaluation time E.
        references: What served data was compared with.
        windows: One result per window.
        realised: Realised performance.
        thresholds: The contract's PSI thresholds (`warn`, `block`).
    """

    evaluated_at: datetime
    references: References
    windows: tuple[WindowResult, ...]
    realised: Realised
    thresholds: dict[str, float]

    @property
    def status(self) -> str:
        """The worst grade (`ok`, `warn` or `block`) of every window and of realised performance."""
        worst = _worst([*(w.status for w in self.windows), self.realised.status])
        return "ok" if worst == "ungraded" else worst

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary."""
        refs = self.references
        return {
            "evaluated_at": self.evaluated_at.isoformat(),
            "status": self.status,
            "model": refs.model,
            "champion": refs.version,
            "reference": refs.label,
            "reference_rows": {"train": len(refs.train), "test_scores": len(refs.test_scores)},
            "thresholds": self.thresholds,
            "windows": [w.to_dict() for w in self.windows],
            "realised": self.realised.to_dict(),
        }


def load_references(
    *, client: MlflowClient, tracking_uri: str, contract: FeatureContract, model: str = REGISTERED_MODEL
) -> References:
    """The champion's training features and test scores, and every version's test figure.

    Args:
        client: An MLflow client.
        tracking_uri: The tracking/registry URI (to load the champion's model).
        contract: The feature contract.
        model: The registered model.

    Returns:
        The references.

    Raises:
        GateError: When there is no champion or its run lacks a dataset.
    """
    version = champion_version(client=client, model=model)
    if version is None:
        raise GateError(
            f"registered model {model!r} has no champion: promote a model first (churnops promote)"
        )
    run_id = client.get_model_version(model, version).run_id
    numeric, categorical = monitored_features(contract=contract)
    train = load_run_frame(client=client, run_id=run_id, artifact=TRAIN_ARTIFACT)
    label = f"{model} v{version} ({TRAIN_ARTIFACT})"
    train = prepare_frame(frame=train, numeric=numeric, categorical=categorical, label=label)
    test = load_run_frame(client=client, run_id=run_id, artifact=TEST_ARTIFACT)
    fitted = load_version(tracking_uri=tracking_uri, model=model, version=version)
    scores = fitted.predict_proba(model_input(frame=test, contract=contract))[:, 1]
    metric = contract.monitoring.performance.metric
    figures = {
        str(v.version): float(v.tags.get(f"test_{metric}", "nan"))
        for v in client.search_model_versions(f"name = '{model}'")
    }
    return References(
        model=model, version=version, train=train, test_scores=scores, test_figures=figures, label=label
    )


def monitor_window(
    conn: sqlite3.Connection,
    *,
    name: str,
    start: datetime,
    end: datetime,
    references: References,
    contract: FeatureContract,
    max_rows: int = DEFAULT_MAX_ROWS,
    metadata: dict[str, str] | None = None,
) -> WindowResult:
    """Feature drift, prediction drift and join figures of one window of the prediction log.

    Args:
        conn: The prediction log.
        name: The window's name (`24h`, `7d`).
        start: Its first instant (UTC).
        end: The instant after its last.
        references: The champion's training features and test scores.
        contract: The feature contract.
        max_rows: The most known predictions compared (a larger window is thinned).
        metadata: More metadata for the snapshot (e.g. the realised figures).

    Returns:
        The window's figures and Evidently snapshot.
    """
    numeric, categorical = monitored_features(contract=contract)
    columns = [c for c in contract.feature_names if c in numeric or c in categorical]
    join = join_figures(conn, start=start, end=end)
    frame, served = served_rows(
        conn, start=start, end=end, columns=[*columns, log.PROBABILITY, log.MODEL_VERSION], max_rows=max_rows
    )
    empty = WindowResult(
        name=name,
        start=start,
        end=end,
        join=join,
        served=served,
        compared=len(frame),
        champion_rows=0,
        features=(),
        score=None,
        match_rate_min=contract.entity.join.match_rate_min,
    )
    if frame.empty:
        return empty
    current = prepare_frame(frame=frame, numeric=numeric, categorical=categorical, label=f"served ({name})")
    champion = (frame[log.MODEL_VERSION].astype(str) == references.version).to_numpy()
    current[log.PROBABILITY] = np.where(champion, frame[log.PROBABILITY].astype(float), np.nan)
    # The score column is compared with the test scores, the features with the training set: the
    # reference is both, padded with NaN, which Evidently drops column by column.
    reference = pd.concat(
        [references.train, pd.DataFrame({log.PROBABILITY: references.test_scores})], ignore_index=True
    )
    report_columns = [*columns, log.PROBABILITY] if champion.any() else columns
    drifts, snapshot = psi_report(
        reference=reference,
        current=current,
        columns=report_columns,
        categorical=categorical,
        warn=contract.drift.warn,
        block=contract.drift.block,
        timestamp=end.replace(tzinfo=None),
        name=f"served {name} to {end:%Y-%m-%d %H:%M} UTC",
        tags=[f"window:{name}", f"champion:v{references.version}"],
        metadata={**(metadata or {}), "window": name, "join": json.dumps(join.to_dict())},
    )
    by_name = {d.feature: d for d in drifts}
    return replace(
        empty,
        champion_rows=int(champion.sum()),
        features=tuple(by_name[c] for c in columns),
        score=by_name.get(log.PROBABILITY),
        snapshot=snapshot,
    )


def realised_performance(
    conn: sqlite3.Connection,
    *,
    at: datetime,
    churn_labels: pd.DataFrame,
    contract: FeatureContract,
    test_figures: dict[str, float],
    horizon: timedelta = HORIZON,
) -> Realised:
    """Realised performance of the matured predictions (see `monitoring.realised`).

    Args:
        conn: The prediction log.
        at: The evaluation time E.
        churn_labels: The lake's `churn_labels` (all of it; rows ingested after E are ignored).
        contract: The feature contract (`monitoring.lookback`, `monitoring.performance`).
        test_figures: Each version's test figure of the graded metric.
        horizon: The outcome window.

    Returns:
        The realised figures, per ISO week and version.
    """
    performance = contract.monitoring.performance
    closed = at - horizon
    matured = matured_rows(conn, start=closed - contract.monitoring.lookback, end=closed)
    labels, late = known_labels(churn_labels=churn_labels, at=at)
    labelled, gone = label_predictions(predictions=matured, churn_labels=labels, horizon=horizon)
    return Realised(
        evaluated_at=at,
        metric=performance.metric,
        floor=performance.floor,
        max_drop=performance.max_drop,
        matured=len(matured),
        excluded_churned_before=gone,
        pending=count_rows(conn, start=closed, end=at),
        late_labels_ignored=late,
        weeks=weekly_figures(labelled=labelled, performance=performance, test_figures=test_figures),
    )


def window_bounds(*, at: datetime, windows: list[timedelta]) -> list[tuple[str, datetime, datetime]]:
    """Name and bounds [at - w, at) of each trailing window.

    Args:
        at: The evaluation time.
        windows: The window lengths.

    Returns:
        (name, start, end) per window, in the given order.
    """
    return [(window_name(w), at - w, at) for w in windows]


def window_name(window: timedelta) -> str:
    """A window's name: whole days from two days up (`7d`), else whole hours (`24h`), else exact."""
    if window >= timedelta(days=2) and window % timedelta(days=1) == timedelta(0):
        return f"{window // timedelta(days=1)}d"
    if window % timedelta(hours=1) == timedelta(0):
        return f"{window // timedelta(hours=1)}h"
    return format_duration(window)


def run_monitor(
    *,
    predictions_db: Path,
    churn_labels: pd.DataFrame,
    references: References,
    contract: FeatureContract,
    at: datetime,
    windows: list[timedelta],
    max_rows: int = DEFAULT_MAX_ROWS,
) -> MonitorResult:
    """Realised performance, then drift and join figures of every window.

    Args:
        predictions_db: The prediction log's SQLite file.
        churn_labels: The lake's `churn_labels`.
        references: The champion's training features and test scores.
        contract: The feature contract.
        at: The evaluation time E (UTC).
        windows: The trailing windows' lengths.
        max_rows: The most known predictions compared per window.

    Returns:
        The run's figures, with an Evidently snapshot per window that held known predictions.

    Raises:
        InputProblem: When there is no log, it is not one, or it holds no prediction.
    """
    with open_log(predictions_db) as conn:
        require_log_rows(conn, label=str(predictions_db))
        realised = realised_performance(
            conn, at=at, churn_labels=churn_labels, contract=contract, test_figures=references.test_figures
        )
        metadata = {"realised": json.dumps(realised.to_dict()), "champion": references.version}
        results = tuple(
            monitor_window(
                conn,
                name=name,
                start=start,
                end=end,
                references=references,
                contract=contract,
                max_rows=max_rows,
                metadata=metadata,
            )
            for name, start, end in window_bounds(at=at, windows=windows)
        )
    return MonitorResult(
        evaluated_at=at,
        references=references,
        windows=results,
        realised=realised,
        thresholds={"warn": contract.drift.warn, "block": contract.drift.block},
    )


def store_snapshots(*, workspace_dir: Path, result: MonitorResult) -> list[str]:
    """Add each window's snapshot to the home's Evidently workspace (project created once).

    The project's dashboard gets one line chart per window (PSI of the score and of each feature
    over the runs) the first time a window is stored.

    Args:
        workspace_dir: The Evidently workspace folder (`<home>/evidently`).
        result: The monitor run.

    Returns:
        The snapshot ids added.
    """
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(workspace_dir))
    found = workspace.search_project(PROJECT_NAME)
    project = found[0] if found else workspace.create_project(PROJECT_NAME, description=_description())
    stored = [w for w in result.windows if w.snapshot is not None]
    _ensure_panels(workspace=workspace, project=project, windows=stored)
    return [str(workspace.add_run(project.id, w.snapshot).id) for w in stored]


def _ensure_panels(*, workspace: Any, project: Any, windows: list[WindowResult]) -> None:
    """A line chart of PSI over time per window (the score first, then each feature), added once.

    The dashboard is edited and saved whole: Evidently 0.7's `add_panel` lists a panel twice in a
    tab that already exists.
    """
    from evidently.sdk.models import DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    dashboard = workspace.get_dashboard(project.id)
    titles = {panel.title for panel in dashboard.panels}
    tab = next((t for t in dashboard.tabs if t.title == _TAB), None)
    if tab is None:
        tab = DashboardTabModel(title=_TAB, panels=[])
        dashboard.tabs.append(tab)
    added = False
    for window in windows:
        title = f"PSI of what was served, last {window.name}"
        if title in titles:
            continue
        columns = [log.PROBABILITY, *(f.feature for f in window.features)]
        values = [
            PanelMetric(
                legend=c, metric="ValueDrift", metric_labels={"column": c}, tags=[f"window:{window.name}"]
            )
            for c in columns
        ]
        description = "served score vs the champion's test scores; features vs its training set"
        panel = line_plot_panel(title=title, values=values, description=description)
        dashboard.panels.append(panel)
        tab.panels.append(panel.id)
        added = True
    if added:
        workspace.save_dashboard(project.id, dashboard)


def write_monitor_json(*, result: MonitorResult, path: Path) -> Path:
    """Write the JSON summary atomically.

    Args:
        result: The monitor run.
        path: Where to write.

    Returns:
        The path written.
    """
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def require_log_rows(conn: sqlite3.Connection, *, label: str) -> None:
    """Refuse an empty prediction log: nothing was served, so nothing can be monitored.

    Raises:
        InputProblem: When the log holds no prediction.
    """
    if conn.execute(f"SELECT 1 FROM [{log.TABLE}] LIMIT 1").fetchone() is None:
        raise InputProblem(f"{label} holds no prediction yet: serve the champion first (churnops serve)")


def _description() -> str:
    return (
        "churnops monitor: PSI of served features (vs the champion's training set) and served scores "
        "(vs its test scores) per trailing window; join figures and realised performance in metadata."
    )


def _drift_dict(f: FeatureDrift) -> dict[str, Any]:
    return {
        "feature": f.feature,
        "kind": f.kind,
        "psi": f.psi,
        "status": f.status,
        "reference_values": f.reference_values,
        "current_values": f.current_values,
    }


def _worst(statuses: Any) -> str:
    return max(statuses, key=_SEVERITY.__getitem__, default="ok")
