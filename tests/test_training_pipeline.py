"""End to end: generate → ingest → features build → Feast apply → `churnops train`, on a small home."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from test_training_helpers import CONTRACT, disengaged_profile, engaged_profile
from typer.testing import CliRunner

from churnops.cli import app
from churnops.settings import Workspace, open_workspace

START = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 90


@dataclass(frozen=True)
class Home:
    ws: Workspace
    output: str
    run_id: str  # the registered version's source run: the chosen candidate's
    parent_run_id: str  # the training's run: the training set, the split, the choice


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    from churnops.features.build import build_features
    from churnops.ingestion.ingest import ingest
    from churnops.synthetic.generate import generate

    ws = open_workspace(tmp_path_factory.mktemp("pipeline-home"))
    generated = generate(out_dir=ws.landing, customers=300, days=DAYS, seed=7, start=START)
    ingest(landing_dir=ws.landing, lake_dir=ws.lake, quarantine_dir=ws.quarantine, log_db=ws.ingestion_log)
    build_features(lake_dir=ws.lake, features_dir=ws.features, contract=CONTRACT, until=generated.end)
    result = CliRunner().invoke(app, ["train", "--home", str(ws.home), "--seed", "42"], terminal_width=200)
    assert result.exit_code == 0, result.output
    client = MlflowClient(ws.tracking_uri)
    version = client.get_model_version_by_alias("churn-model", "challenger")
    parent = client.get_run(version.run_id).data.tags["mlflow.parentRunId"]
    return Home(ws=ws, output=result.output, run_id=version.run_id, parent_run_id=parent)


def test_cli_prints_split_metrics_and_the_registered_version(home: Home) -> None:
    run = MlflowClient(home.ws.tracking_uri).get_run(home.parent_run_id)
    params = run.data.params
    assert "Registered churn-model version 1 as @challenger" in home.output
    assert params["split.test_start"][:10] in home.output
    assert params["split.train_start"][:10] in home.output
    assert f"chosen by validation PR AUC: {params['chosen_model']}" in home.output
    for name in ("roc_auc", "pr_auc", "brier", "log_loss", "lift_top_decile"):
        assert name in home.output


def test_training_rows_are_point_in_time_feast_rows_with_lake_labels(home: Home, tmp_path: Path) -> None:
    from churnops.storage.lake import read_source

    client = MlflowClient(home.ws.tracking_uri)
    local = Path(client.download_artifacts(home.parent_run_id, "datasets", str(tmp_path)))
    frame = pd.concat([pd.read_parquet(local / f"{w}.parquet") for w in ("train", "validation", "test")])
    # Observations start a full lookback after the history does, so every row found a snapshot.
    assert not frame["profile_defaulted"].any()
    assert (frame["snapshot_ts"] <= frame["event_timestamp"]).all()
    assert frame["event_timestamp"].min() >= pd.Timestamp(START) + CONTRACT.lookback
    # Recompute each label from the lake's churn dates, by hashed customer id.
    churn = read_source(home.ws.lake, "churn_labels").groupby("customer_id")["churn_date"].min()
    hashed = {hashlib.sha256(f"customer_profile:v1:{c}".encode()).hexdigest(): d for c, d in churn.items()}
    churn_at = frame["customer_id"].map(hashed)
    assert not (churn_at <= frame["event_timestamp"]).any()
    window_end = frame["event_timestamp"] + pd.Timedelta(days=30)
    expected = (churn_at > frame["event_timestamp"]) & (churn_at <= window_end)
    assert (frame["label"] == expected.astype(int)).all()
    assert frame["label"].sum() > 0


def test_registered_model_ranks_risky_behaviour_higher(home: Home) -> None:
    import mlflow.sklearn

    mlflow.set_tracking_uri(home.ws.tracking_uri)
    model = mlflow.sklearn.load_model("models:/churn-model@challenger")
    rows = pd.DataFrame([disengaged_profile(), engaged_profile()])[CONTRACT.feature_names]
    risky, safe = model.predict_proba(rows)[:, 1]
    assert risky > safe


def test_chosen_model_beats_a_constant_score_on_the_test_window(home: Home) -> None:
    client = MlflowClient(home.ws.tracking_uri)
    metrics = client.get_run(home.run_id).data.metrics
    constant = client.get_run(home.parent_run_id).data.metrics
    assert metrics["test_roc_auc"] > constant["constant_test_roc_auc"] == 0.5
    assert metrics["test_pr_auc"] > constant["constant_test_pr_auc"]


def test_train_on_an_empty_home_fails_with_a_clean_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--home", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 1
    assert "has no customers: ingest the sources first" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_feast_mlflow_logging_elsewhere_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from feast.mlflow_integration.config import MlflowConfig

    from churnops.training.train import train

    config = MlflowConfig(enabled=True, tracking_uri="sqlite:////elsewhere/mlflow.db")
    store = SimpleNamespace(config=SimpleNamespace(mlflow=config), project="churnops")
    with pytest.raises(ValueError, match=r"sends Feast's MLflow logging to sqlite:////elsewhere/mlflow.db"):
        train(
            store=store,
            lake_dir=tmp_path / "lake",
            tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
            artifact_location=str(tmp_path / "mlruns" / "artifacts"),
        )


def test_feast_resolves_the_registered_model_to_its_feature_service(home: Home) -> None:
    # Feast's own resolver (what `store.mlflow.resolve_features` runs) reads the lineage training
    # writes by hand and checks `feast_features.json` against the applied feature service. It
    # parses `models:/<name>/<version or alias>`, not MLflow's `@alias` form.
    from feast.mlflow_integration.model_resolver import FeastMlflowModelResolver

    from churnops.features.store import open_store

    store = open_store(home=home.ws.home)
    resolver = FeastMlflowModelResolver(store, None, MlflowClient(home.ws.tracking_uri))
    assert resolver.resolve("models:/churn-model/challenger") == "customer_profile_v1"
