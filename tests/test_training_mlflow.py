"""Tracked runs and registered versions: what a training leaves in MLflow, read back by real clients.

The home is trained twice on the same synthetic training set and seed, with `champion` set on the
first version in between (as the promotion gate would), so the module checks reproducibility and
that training never moves `champion`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient
from test_training_helpers import CONTRACT, disengaged_profile, engaged_profile, synthetic_training_set

from churnops.training.evaluate import METRIC_NAMES
from churnops.training.tracking import content_hash
from churnops.training.train import Lineage, TrainResult, run_training

LINEAGE = Lineage(
    feature_service="customer_profile_v1",
    feature_service_version=1,
    feast_project="churnops",
    feature_refs=[f"customer_profile:{name}" for name in CONTRACT.feature_names],
    data_start=pd.Timestamp("2025-12-06", tz="UTC"),
    data_end=pd.Timestamp("2026-04-10", tz="UTC"),
)


@dataclass(frozen=True)
class Trained:
    home: Path
    tracking_uri: str
    frame: pd.DataFrame
    first: TrainResult
    second: TrainResult


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("training-home")
    tracking_uri = f"sqlite:///{home}/mlruns/mlflow.db"
    frame = synthetic_training_set(customers=300, weeks=8, seed=5)

    def once() -> TrainResult:
        return run_training(
            load_training_set=lambda: frame.copy(),
            lineage=LINEAGE,
            tracking_uri=tracking_uri,
            artifact_location=str(home / "mlruns" / "artifacts"),
            seed=42,
        )

    first = once()
    MlflowClient(tracking_uri).set_registered_model_alias("churn-model", "champion", first.model_version)
    second = once()
    return Trained(home=home, tracking_uri=tracking_uri, frame=frame, first=first, second=second)


def test_each_training_registers_a_new_challenger_and_leaves_champion_alone(trained: Trained) -> None:
    client = MlflowClient(trained.tracking_uri)
    assert (trained.first.model_version, trained.second.model_version) == ("1", "2")
    assert str(client.get_model_version_by_alias("churn-model", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("churn-model", "champion").version) == "1"


def test_same_data_and_seed_give_the_same_metrics_and_hash(trained: Trained) -> None:
    assert trained.second.metrics == trained.first.metrics
    assert trained.second.training_set_hash == trained.first.training_set_hash == content_hash(trained.frame)
    client = MlflowClient(trained.tracking_uri)
    for run_id in ("run_id", "parent_run_id"):
        first, second = (client.get_run(getattr(r, run_id)).data for r in (trained.first, trained.second))
        assert first.metrics == second.metrics
        assert first.params == second.params


def test_version_carries_alias_tags_and_signature(trained: Trained) -> None:
    from mlflow.models import get_model_info

    client = MlflowClient(trained.tracking_uri)
    version = client.get_model_version("churn-model", trained.second.model_version)
    assert version.aliases == ["challenger"]
    assert version.run_id == trained.second.run_id
    chosen = trained.second.metrics[trained.second.chosen]["test"]
    # A handful of tags, figures rounded to 4 decimals (not 16-digit floats).
    assert version.tags == {
        "model_type": trained.second.chosen,
        "feast.feature_service": "customer_profile_v1",
        "feature_service_version": "1",
        "training_set_hash": trained.second.training_set_hash,
        "code_version": version.tags["code_version"],
        "test_pr_auc": f"{round(chosen['pr_auc'], 4):.4f}",
        "test_roc_auc": f"{round(chosen['roc_auc'], 4):.4f}",
    }
    assert version.tags["code_version"].startswith(("git:", "package:"))
    assert version.description.startswith(
        f"`{trained.second.chosen}` trained on Feast feature service `customer_profile_v1`"
    )
    assert f"PR AUC {chosen['pr_auc']:.4f}" in version.description
    assert "`churnops promote`" in client.get_registered_model("churn-model").description

    import mlflow

    mlflow.set_tracking_uri(trained.tracking_uri)
    info = get_model_info("models:/churn-model@challenger")
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == CONTRACT.feature_names
    types = {c["name"]: c["type"] for c in inputs}
    assert types["sessions_30d"] == "long" and types["watch_minutes_30d"] == "double"
    assert types["plan_type"] == "string"
    assert info.saved_input_example_info is not None
    assert info.flavors["python_function"]["predict_fn"] == "predict_proba"


def _children(client: MlflowClient, result: TrainResult) -> dict[str, object]:
    runs = client.search_runs(
        [result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    return {run.info.run_name: run for run in runs}


def test_a_training_is_one_parent_run_with_a_child_run_per_candidate(trained: Trained) -> None:
    client = MlflowClient(trained.tracking_uri)
    experiment = client.get_experiment(trained.second.experiment_id)
    assert experiment.name == "churn"
    assert experiment.artifact_location == (trained.home / "mlruns" / "artifacts").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_id for r in parents) == sorted(
        [trained.first.parent_run_id, trained.second.parent_run_id]
    )
    children = _children(client, trained.second)
    assert set(children) == {"logistic_regression", "hist_gradient_boosting"}
    assert len(runs) == 2 * 3
    chosen = children[trained.second.chosen]
    assert chosen.info.run_id == trained.second.run_id  # the registered version's source run
    expected = {f"{window}_{name}" for window in ("validation", "test") for name in METRIC_NAMES}
    for name, child in children.items():
        assert child.info.status == "FINISHED"
        assert set(child.data.metrics) == expected  # the same names: the UI compares them
        for window in ("validation", "test"):
            for metric in METRIC_NAMES:
                logged = child.data.metrics[f"{window}_{metric}"]
                assert logged == trained.second.metrics[name][window][metric]
        assert child.data.params["candidate"] == name
        assert child.data.tags["churnops.chosen"] == str(name == trained.second.chosen).lower()
        assert child.data.tags["mlflow.note.content"].startswith(f"Candidate `{name}`")
        assert child.data.tags["feast.feature_service"] == "customer_profile_v1"
    assert children["hist_gradient_boosting"].data.params["learning_rate"] == "0.05"
    assert children["logistic_regression"].data.params["class_weight"] == "balanced"


def test_parent_run_records_params_lineage_datasets_and_a_description(trained: Trained) -> None:
    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(trained.second.parent_run_id)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["feast.feature_service"] == "customer_profile_v1"
    assert tags["feast.feature_refs"].split(",") == LINEAGE.feature_refs
    assert tags["feature_service_version"] == "1"
    assert tags["training_set_hash"] == content_hash(trained.frame)
    assert tags["training_set_start"] == trained.frame["event_timestamp"].min().isoformat()
    assert tags["training_set_end"] == trained.frame["event_timestamp"].max().isoformat()
    assert tags["code_version"].startswith(("git:", "package:"))
    description = tags["mlflow.note.content"]
    assert description.startswith("Churn training on Feast feature service `customer_profile_v1`")
    assert f"{len(trained.frame):,} labelled observations" in description
    assert params["seed"] == "42"
    assert params["chosen_model"] == trained.second.chosen
    assert params["split.test_start"] == trained.second.split_dates.test_start.isoformat()
    assert metrics["constant_test_roc_auc"] == 0.5
    assert metrics["rows_test"] == trained.second.rows["test"]
    assert metrics["test_pr_auc"] == trained.second.metrics[trained.second.chosen]["test"]["pr_auc"]

    def listing(run_id: str, path: str = "") -> set[str]:
        return {a.path for a in client.list_artifacts(run_id, path)}

    assert {"datasets", "plots", "feast_features.json"} <= listing(run.info.run_id)
    assert listing(run.info.run_id, "plots") == {
        "plots/roc.png",
        "plots/precision_recall.png",
        "plots/calibration.png",
    }
    assert listing(run.info.run_id, "datasets") == {
        "datasets/train.parquet",
        "datasets/validation.parquet",
        "datasets/test.parquet",
    }
    chosen = trained.second.run_id
    assert "plots/permutation_importance.png" in listing(chosen, "plots")
    refs = json.loads(Path(client.download_artifacts(chosen, "feast_features.json")).read_text())
    assert refs == LINEAGE.feature_refs
    png = Path(client.download_artifacts(run.info.run_id, "plots/roc.png")).read_bytes()
    assert png.startswith(b"\x89PNG")
    # Datasets name their feature service and window, and their source is the logged file.
    for logged in (run, client.get_run(chosen)):
        inputs = {d.dataset.name: d for d in logged.inputs.dataset_inputs}
        assert set(inputs) == {f"customer_profile_v1/{w}" for w in ("train", "validation", "test")}
        train = inputs["customer_profile_v1/train"]
        assert train.dataset.source_type == "local"
        # MLflow keeps one record per dataset name and content: both trainings read the same rows,
        # so the source is the first training's file (identical bytes).
        source = f"{client.get_run(trained.first.parent_run_id).info.artifact_uri}/datasets/train.parquet"
        assert json.loads(train.dataset.source)["uri"] == source
        assert [t.value for t in train.tags if t.key == "mlflow.data.context"] == ["train"]


def test_logged_datasets_are_the_split_windows_with_hashed_customers(
    trained: Trained, tmp_path: Path
) -> None:
    client = MlflowClient(trained.tracking_uri)
    local = Path(client.download_artifacts(trained.second.parent_run_id, "datasets", str(tmp_path)))
    test = pd.read_parquet(local / "test.parquet")
    train = pd.read_parquet(local / "train.parquet")
    dates = trained.second.split_dates
    assert (
        test["event_timestamp"].min() == dates.test_start and test["event_timestamp"].max() == dates.test_end
    )
    assert train["event_timestamp"].max() == dates.train_end
    assert len(test) == trained.second.rows["test"] and len(train) == trained.second.rows["train"]
    for frame in (train, test):
        assert set(CONTRACT.feature_names) <= set(frame.columns) and "label" in frame.columns
        assert not frame["customer_id"].str.startswith("CUST-").any()
    original = trained.frame[trained.frame["event_timestamp"] >= dates.test_start].reset_index(drop=True)
    expected = [
        hashlib.sha256(f"customer_profile:v1:{c}".encode()).hexdigest() for c in original["customer_id"]
    ]
    assert list(test["customer_id"]) == expected
    pd.testing.assert_frame_equal(
        test.drop(columns="customer_id"), original.drop(columns="customer_id"), check_dtype=False
    )


def test_challenger_loads_and_predicts_in_a_fresh_process(trained: Trained, tmp_path: Path) -> None:
    client = MlflowClient(trained.tracking_uri)
    local = Path(
        client.download_artifacts(trained.second.parent_run_id, "datasets/test.parquet", str(tmp_path))
    )
    row = pd.read_parquet(local).head(1)
    script = f"""
import json, mlflow, mlflow.sklearn, mlflow.pyfunc, pandas as pd
mlflow.set_tracking_uri({trained.tracking_uri!r})
row = pd.read_parquet({str(local)!r}).head(1)
sk = mlflow.sklearn.load_model("models:/churn-model@challenger")
py = mlflow.pyfunc.load_model("models:/churn-model@challenger")
features = row[{CONTRACT.feature_names!r}]
print(json.dumps({{"sklearn": float(sk.predict_proba(features)[0, 1]),
                  "pyfunc": [float(v) for v in py.predict(features)[0]]}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    import mlflow.sklearn

    mlflow.set_tracking_uri(trained.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/churn-model/{trained.second.model_version}")
    expected = float(model.predict_proba(row[CONTRACT.feature_names])[0, 1])
    assert result["sklearn"] == pytest.approx(expected, abs=1e-12)
    assert result["pyfunc"] == pytest.approx([1 - expected, expected], abs=1e-12)


def test_registered_model_scores_disengagement_and_failed_payments_higher(trained: Trained) -> None:
    import mlflow.sklearn

    mlflow.set_tracking_uri(trained.tracking_uri)
    model = mlflow.sklearn.load_model("models:/churn-model@challenger")
    rows = pd.DataFrame([disengaged_profile(), engaged_profile()])[CONTRACT.feature_names]
    risky, safe = model.predict_proba(rows)[:, 1]
    assert risky > safe


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mlflow_server_finds_the_run_and_the_model_over_rest(trained: Trained) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        trained.tracking_uri,
        "--default-artifact-root",
        (trained.home / "mlruns" / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = trained.home / "mlflow-server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow server exited early:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"mlflow server did not answer in 120 s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.5)

        api = f"{base}/api/2.0/mlflow"
        run = httpx.get(f"{api}/runs/get", params={"run_id": trained.second.run_id}, timeout=10).json()["run"]
        assert run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["feast.feature_service"] == "customer_profile_v1"
        model = httpx.get(f"{api}/registered-models/get", params={"name": "churn-model"}, timeout=10).json()
        aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
        assert aliases == {"challenger": "2", "champion": "1"}
        version = httpx.get(
            f"{api}/model-versions/get", params={"name": "churn-model", "version": "2"}, timeout=10
        ).json()["model_version"]
        assert version["run_id"] == trained.second.run_id
        assert {t["key"] for t in version["tags"]} >= {"test_pr_auc", "feast.feature_service"}
    finally:
        # The server runs in its own session: end its whole group (uvicorn worker included).
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def test_experiment_with_artifacts_elsewhere_is_refused(trained: Trained, tmp_path: Path) -> None:
    from churnops.training.tracking import ensure_experiment

    client = MlflowClient(trained.tracking_uri)
    same = ensure_experiment(client=client, artifact_location=str(trained.home / "mlruns" / "artifacts"))
    assert same == trained.second.experiment_id
    with pytest.raises(ValueError, match="belongs to another home"):
        ensure_experiment(client=client, artifact_location=str(tmp_path / "elsewhere"))
