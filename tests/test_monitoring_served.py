"""`churnops monitor` on crafted prediction logs: drift of what was served, joins, realised performance.

One MLflow store for the file: a logistic model on three features is logged with the
`datasets/train.parquet` / `datasets/test.parquet` artifacts training writes, registered as
`churn-model` and aliased `champion`. Prediction logs are written straight into the schema serving
uses (`churnops.storage.prediction_log_schema`), so every row's time, status and score is chosen
by the test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from test_monitoring_drift import feature_frame, independent_psi
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.monitoring.alerts import list_conditions
from churnops.monitoring.monitor import (
    PROJECT_NAME,
    load_references,
    monitor_window,
    realised_performance,
    run_monitor,
    store_snapshots,
)
from churnops.monitoring.registry import open_client
from churnops.monitoring.served import join_figures, open_log
from churnops.settings import Workspace
from churnops.storage import prediction_log_schema as schema
from churnops.storage.layout import EVIDENTLY_DIR
from churnops.training.names import CHALLENGER, CHAMPION, REGISTERED_MODEL

runner = CliRunner()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FEATURES = ["days_since_last_event", "sessions_30d", "payment_failures_30d"]
FLAG = "profile_defaulted"


def labelled(rows: int, seed: int) -> pd.DataFrame:
    frame = feature_frame(rows, seed)
    rng = np.random.default_rng(seed + 100)
    logit = -1.0 + 0.25 * frame["days_since_last_event"] - 0.15 * (frame["sessions_30d"] - 12)
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["event_timestamp"] = NOW - timedelta(days=60)
    frame[FLAG] = False
    return frame


def fit_model(train: pd.DataFrame) -> Pipeline:
    from sklearn.compose import ColumnTransformer

    contract = load_feature_contract()
    return Pipeline(
        [
            ("select", ColumnTransformer([("num", "passthrough", FEATURES)])),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(train[contract.feature_names], train["label"])


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    """A home whose registry has `churn-model` v1 as champion, with its datasets and test ROC AUC."""
    import mlflow
    from mlflow import MlflowClient

    ws = Workspace(tmp_path_factory.mktemp("monitor_home"))
    ws.mlruns.mkdir(parents=True)
    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    experiment = client.create_experiment("churn", artifact_location=ws.artifacts.as_uri())
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.tracking_uri)
    train, test = labelled(3000, seed=21), labelled(1500, seed=22)
    datasets = ws.home / "datasets"
    datasets.mkdir()
    train.to_parquet(datasets / "train.parquet", index=False)
    test.to_parquet(datasets / "test.parquet", index=False)
    model = fit_model(train)
    contract = load_feature_contract()
    test_scores = model.predict_proba(test[contract.feature_names])[:, 1]
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        mlflow.log_artifacts(str(datasets), artifact_path="datasets")
    client.create_registered_model(REGISTERED_MODEL)
    version = client.create_model_version(REGISTERED_MODEL, info.model_uri, run.info.run_id).version
    client.set_model_version_tag(REGISTERED_MODEL, version, "test_roc_auc", "0.8")
    for alias in (CHALLENGER, CHAMPION):
        client.set_registered_model_alias(REGISTERED_MODEL, alias, version)
    return {"ws": ws, "model": model, "train": train, "test_scores": test_scores, "version": str(version)}


def write_log(path: Path, rows: list[dict]) -> None:
    """Append rows to a prediction log with serving's schema (missing columns take neutral values)."""
    contract = load_feature_contract()
    columns = [*contract.feature_names, FLAG]
    dtypes = {c: ("object" if c == "plan_type" else "int64") for c in columns}
    dtypes.update({c: "float64" for c in ("watch_minutes_30d", "quiz_avg_score_30d", "avg_order_value_30d")})
    db = sqlite_utils.Database(path)
    db[schema.TABLE].create(
        schema.table_schema(feature_columns=columns, feature_dtypes=dtypes), if_not_exists=True
    )
    base = {
        schema.ITEM: 0,
        schema.MODEL_NAME: REGISTERED_MODEL,
        schema.RISK_BAND: "low",
        schema.SNAPSHOT_TS: None,
        FLAG: 0,
    }
    db[schema.TABLE].insert_all(
        [
            {**base, **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}}
            for r in rows
        ]
    )
    db.close()


def served_rows(
    frame: pd.DataFrame, *, model: Pipeline, version: str, start: datetime, span: timedelta
) -> list:
    """One known, present prediction per row of `frame`, spread evenly over [start, start + span)."""
    contract = load_feature_contract()
    scores = model.predict_proba(frame[contract.feature_names])[:, 1]
    step = span / len(frame)
    records = frame[contract.feature_names].to_dict("records")
    return [
        {
            **{k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()},
            schema.REQUEST_ID: f"r-{start:%j}-{i}",
            schema.PREDICTED_AT: start + i * step,
            schema.CUSTOMER_ID: f"CUST-{i:06d}",
            schema.MODEL_VERSION: version,
            schema.PROBABILITY: float(scores[i]),
            schema.FEATURE_STATUS: schema.STATUS_PRESENT,
            schema.KNOWN: 1,
        }
        for i, record in enumerate(records)
    ]


@pytest.fixture(scope="module")
def shifted_log(champion, tmp_path_factory) -> Path:
    """Six clean days, then a last day whose customers stopped logging in (features and scores shift)."""
    folder = tmp_path_factory.mktemp("shifted") / "predictions"
    folder.mkdir()
    clean = feature_frame(2000, seed=31)
    shifted = feature_frame(1000, seed=32)
    shifted["days_since_last_event"] = np.minimum(90, shifted["days_since_last_event"] * 4 + 10)
    shifted["sessions_30d"] = shifted["sessions_30d"] // 4
    model, version = champion["model"], champion["version"]
    rows = served_rows(
        clean, model=model, version=version, start=NOW - timedelta(days=7), span=timedelta(days=6)
    )
    rows += served_rows(
        shifted, model=model, version=version, start=NOW - timedelta(days=1), span=timedelta(hours=23)
    )
    write_log(folder / schema.DB_NAME, rows)
    return folder


@pytest.fixture(scope="module")
def references(champion):
    ws = champion["ws"]
    client = open_client(tracking_uri=ws.tracking_uri, tracking_db=ws.tracking_db)
    return load_references(client=client, tracking_uri=ws.tracking_uri, contract=load_feature_contract())


def test_references_are_the_champions_training_set_and_test_scores(champion, references) -> None:
    assert references.version == champion["version"]
    assert len(references.train) == len(champion["train"])
    np.testing.assert_allclose(references.test_scores, champion["test_scores"])
    assert references.test_figures == {champion["version"]: 0.8}


def test_monitor_detects_a_shift_in_served_features_and_scores(shifted_log, references) -> None:
    contract = load_feature_contract()
    with open_log(shifted_log / schema.DB_NAME) as conn:
        last_day = monitor_window(
            conn, name="24h", start=NOW - timedelta(days=1), end=NOW, references=references, contract=contract
        )
        before = monitor_window(
            conn,
            name="24h",
            start=NOW - timedelta(days=2),
            end=NOW - timedelta(days=1),
            references=references,
            contract=contract,
        )
        frame = pd.read_sql_query(
            f"SELECT {schema.PROBABILITY} FROM {schema.TABLE} WHERE {schema.PREDICTED_AT} >= ?",
            conn,
            params=((NOW - timedelta(days=1)).isoformat(),),
        )
    drift = {f.feature: f for f in last_day.features}
    assert last_day.served == last_day.compared == last_day.champion_rows == 1000
    assert drift["days_since_last_event"].status == "block"
    assert drift["sessions_30d"].status == "block"
    assert last_day.score is not None and last_day.score.status == "block"
    expected = independent_psi(pd.Series(references.test_scores), frame[schema.PROBABILITY], numeric=True)
    assert last_day.score.psi == pytest.approx(expected, rel=1e-9)
    # The day before served the training distribution: nothing blocks there.
    assert before.served > 0 and before.status != "block"
    assert before.score is not None and before.score.status != "block"


def test_join_figures_are_exact(tmp_path) -> None:
    at = NOW - timedelta(hours=1)
    rows = []
    # (customer, known, status): A three times, B twice, C once, two unknown ids (one twice).
    plan = [
        ("CUST-000001", 1, "present"),
        ("CUST-000001", 1, "present"),
        ("CUST-000001", 1, "stale"),
        ("CUST-000002", 1, "present"),
        ("CUST-000002", 1, "default"),
        ("CUST-000003", 1, "stale"),
        ("CUST-999998", 0, "default"),
        ("CUST-999999", 0, "default"),
        ("CUST-999999", 0, "default"),
    ]
    for i, (customer, known, status) in enumerate(plan):
        rows.append(
            {
                schema.REQUEST_ID: f"j{i}",
                schema.PREDICTED_AT: at + timedelta(minutes=i),
                schema.CUSTOMER_ID: customer,
                schema.MODEL_VERSION: "1",
                schema.PROBABILITY: 0.5,
                schema.FEATURE_STATUS: status,
                schema.KNOWN: known,
            }
        )
    # Outside the window: never counted.
    rows.append({**rows[0], schema.REQUEST_ID: "old", schema.PREDICTED_AT: NOW - timedelta(days=2)})
    write_log(tmp_path / schema.DB_NAME, rows)
    with open_log(tmp_path / schema.DB_NAME) as conn:
        figures = join_figures(conn, start=NOW - timedelta(days=1), end=NOW)
    assert figures.to_dict() == {
        "rows": 9,
        "known": 6,
        "match_rate": 6 / 9,
        "present_share": 3 / 9,
        "stale_share": 2 / 9,
        "default_share": 4 / 9,
        "customers": 5,
        "duplicate_rows": 4,
        "duplicate_share": 4 / 9,
        "repeated_customers": 3,
        "max_per_customer": 3,
    }


def test_realised_roc_auc_uses_only_closed_windows_and_labels_known_in_time(champion, tmp_path) -> None:
    contract = load_feature_contract()
    rng = np.random.default_rng(5)
    monday = datetime(2026, 10, 12, tzinfo=UTC)  # 40 days before NOW; 300 rows fill Monday to Friday
    n = 300
    times = [monday + timedelta(minutes=20 * i) for i in range(n)]
    scores = rng.uniform(0.05, 0.95, n)
    churns = rng.random(n) < scores  # churned within the horizon, in truth
    labels = []
    for i in range(n):
        if churns[i]:
            labels.append((f"CUST-{i:06d}", times[i] + timedelta(days=10), NOW - timedelta(days=3)))
    # Customer 0 churned in its window, but the label arrived after the evaluation time: not known.
    labels = [row for row in labels if row[0] != "CUST-000000"]
    labels.append(("CUST-000000", times[0] + timedelta(days=5), NOW + timedelta(hours=1)))
    # Customer 1 had churned before it was scored: left out.
    labels = [row for row in labels if row[0] != "CUST-000001"]
    labels.append(("CUST-000001", times[1] - timedelta(days=1), NOW - timedelta(days=20)))
    rows = [
        {
            schema.REQUEST_ID: f"m{i}",
            schema.PREDICTED_AT: times[i],
            schema.CUSTOMER_ID: f"CUST-{i:06d}",
            schema.MODEL_VERSION: champion["version"],
            schema.PROBABILITY: float(scores[i]),
            schema.FEATURE_STATUS: "present",
            schema.KNOWN: 1,
        }
        for i in range(n)
    ]
    # Scored 10 days ago: its 30-day window is still open at NOW.
    rows.append({**rows[5], schema.REQUEST_ID: "open", schema.PREDICTED_AT: NOW - timedelta(days=10)})
    # An unknown id is never evaluated.
    rows.append({**rows[6], schema.REQUEST_ID: "unknown", schema.KNOWN: 0, schema.CUSTOMER_ID: "CUST-777777"})
    write_log(tmp_path / schema.DB_NAME, rows)
    churn_labels = pd.DataFrame(labels, columns=["customer_id", "churn_date", "ingested_at"])
    churn_labels["churn_reason"] = "price"

    # By hand: customer 1 out (churned before), customer 0's late label unknown → did not churn.
    known = {c: d for c, d, ingested in labels if ingested <= NOW}
    y, p = [], []
    for i in range(n):
        churned = known.get(f"CUST-{i:06d}")
        if churned is not None and churned <= times[i]:
            continue
        y.append(int(churned is not None and times[i] < churned <= times[i] + timedelta(days=30)))
        p.append(scores[i])
    assert len(y) == n - 1 and y[0] == 0

    with open_log(tmp_path / schema.DB_NAME) as conn:
        realised = realised_performance(
            conn,
            at=NOW,
            churn_labels=churn_labels,
            contract=contract,
            test_figures={champion["version"]: 0.8},
        )
    [week] = realised.weeks
    year, number, _ = times[0].isocalendar()
    assert week.week == f"{year}-W{number:02d}"
    assert week.rows == n - 1 and week.positives == sum(y)
    assert week.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert week.observed_rate == pytest.approx(np.mean(y))
    assert week.mean_predicted == pytest.approx(np.mean(p))
    assert week.brier == pytest.approx(np.mean((np.array(p) - np.array(y)) ** 2))
    assert (realised.matured, realised.excluded_churned_before) == (n, 1)
    assert (realised.pending, realised.late_labels_ignored) == (1, 1)
    expected = "warn" if 0.8 - week.roc_auc > 0.05 else "ok"
    assert week.status == expected and realised.status == expected


def test_run_stores_an_evidently_snapshot_per_window(shifted_log, references, tmp_path) -> None:
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    contract = load_feature_contract()
    result = run_monitor(
        predictions_db=shifted_log / schema.DB_NAME,
        churn_labels=pd.DataFrame(),
        references=references,
        contract=contract,
        at=NOW,
        windows=[timedelta(hours=24), timedelta(days=7)],
    )
    assert [w.name for w in result.windows] == ["24h", "7d"]
    assert result.status == "block"
    ids = store_snapshots(workspace_dir=tmp_path / "evidently", result=result)
    workspace = EvidentlyWorkspace(str(tmp_path / "evidently"))
    [project] = workspace.search_project(PROJECT_NAME)
    assert sorted(str(i) for i in workspace.list_runs(project.id)) == sorted(ids)
    assert len(ids) == 2
    # A second run lands in the same project, and the dashboard keeps one chart per window.
    store_snapshots(workspace_dir=tmp_path / "evidently", result=result)
    reopened = EvidentlyWorkspace(str(tmp_path / "evidently"))
    assert len(reopened.list_runs(project.id)) == 4
    dashboard = reopened.get_dashboard(project.id)
    assert sorted(p.title for p in dashboard.panels) == [
        "PSI of what was served, last 24h",
        "PSI of what was served, last 7d",
    ]
    [tab] = dashboard.tabs
    assert sorted(map(str, tab.panels)) == sorted(str(p.id) for p in dashboard.panels)


def test_cli_monitor_blocks_alerts_then_resolves(champion, shifted_log, monkeypatch) -> None:
    ws = champion["ws"]
    ws.predictions.parent.mkdir(parents=True, exist_ok=True)
    target = ws.predictions
    if not target.exists():
        target.symlink_to(shifted_log, target_is_directory=True)
    monkeypatch.delenv("CHURNOPS_ALERT_WEBHOOK_URL", raising=False)
    home = str(ws.home)
    blocked = runner.invoke(
        app, ["monitor", "--home", home, "--at", NOW.isoformat(), "--window", "24h", "--json"]
    )
    assert blocked.exit_code == 1, blocked.output
    summary = json.loads(blocked.stdout)
    assert summary["status"] == "block" and summary["champion"] == champion["version"]
    assert json.loads((ws.reports / "monitor.json").read_text()) == summary
    assert (ws.home / EVIDENTLY_DIR).is_dir()
    open_conditions = {c["condition"] for c in list_conditions(ws.home, open_only=True)}
    assert {"served_drift_block:customer_profile", "prediction_drift_block:churn-model"} <= open_conditions

    earlier = (NOW - timedelta(days=1)).isoformat()
    clean = runner.invoke(app, ["monitor", "--home", home, "--at", earlier, "--window", "24h"])
    assert clean.exit_code == 0, clean.output
    assert list_conditions(ws.home, open_only=True) == []


def test_cli_monitor_without_a_prediction_log_is_bad_input(tmp_path) -> None:
    result = runner.invoke(app, ["monitor", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "no prediction log" in result.output
