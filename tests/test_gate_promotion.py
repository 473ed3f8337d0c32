"""Champion/challenger promotion, rollback and audit against a real (temporary) MLflow registry.

One MLflow store for the whole file: three small sklearn models are logged once, each run with the
`datasets/train.parquet` / `datasets/test.parquet` artifacts training writes; each test registers
versions of them under its own model name.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline
from test_monitoring_drift import feature_frame
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.monitoring import promotion
from churnops.monitoring.audit import list_decisions
from churnops.monitoring.drift import compute_drift
from churnops.monitoring.gate import GateError, contract_check, decide, drift_check, quality_check
from churnops.monitoring.quality import check_training_set
from churnops.monitoring.registry import apply_decision, compare_models, resolve_versions, rollback
from churnops.settings import Workspace
from churnops.training.names import CHALLENGER, CHAMPION

runner = CliRunner()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MODELS = {
    "weak": ["seat_count"],  # unrelated to churn
    "fair": ["days_since_last_event"],
    "strong": ["days_since_last_event", "sessions_30d", "payment_failures_30d"],
}


@dataclass(frozen=True)
class Rule:
    source: str
    rule: str
    passed: bool


@dataclass(frozen=True)
class LakeReport:
    results: list[Rule] = field(default_factory=lambda: [Rule("customers", "not_null", True)])

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def labelled(rows: int, seed: int) -> pd.DataFrame:
    frame = feature_frame(rows, seed)
    rng = np.random.default_rng(seed + 100)
    logit = (
        -1.0
        + 0.25 * frame["days_since_last_event"]
        - 0.15 * (frame["sessions_30d"] - 12)
        + 1.0 * frame["payment_failures_30d"]
    )
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["event_timestamp"] = NOW - timedelta(days=40)
    frame["profile_defaulted"] = False
    return frame


@dataclass
class Store:
    ws: Workspace
    client: object
    runs: dict[str, str]
    model_uris: dict[str, str]
    fitted: dict[str, Pipeline]
    train: pd.DataFrame
    test: pd.DataFrame


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    import mlflow
    from mlflow import MlflowClient

    ws = Workspace(tmp_path_factory.mktemp("gate_home"))
    ws.mlruns.mkdir(parents=True)
    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    experiment = client.create_experiment("churn", artifact_location=ws.artifacts.as_uri())
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.tracking_uri)
    train, test = labelled(3000, seed=11), labelled(1500, seed=12)
    contract = load_feature_contract()
    datasets = ws.home / "datasets"
    datasets.mkdir()
    train.to_parquet(datasets / "train.parquet", index=False)
    test.to_parquet(datasets / "test.parquet", index=False)
    runs, uris, fitted = {}, {}, {}
    for name, columns in MODELS.items():
        model = Pipeline(
            [
                ("select", ColumnTransformer([("num", "passthrough", columns)])),
                ("clf", LogisticRegression(max_iter=500)),
            ]
        ).fit(train[contract.feature_names], train["label"])
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
            mlflow.log_artifacts(str(datasets), artifact_path="datasets")
        runs[name], uris[name], fitted[name] = run.info.run_id, info.model_uri, model
    return Store(ws, client, runs, uris, fitted, train, test)


def register(store: Store, model: str, which: str) -> str:
    from mlflow.exceptions import MlflowException

    client = store.client
    with contextlib.suppress(MlflowException):  # already registered by an earlier step
        client.create_registered_model(model)
    version = client.create_model_version(model, store.model_uris[which], store.runs[which])
    client.set_registered_model_alias(model, CHALLENGER, version.version)
    return str(version.version)


def expected_pr_auc(store: Store, which: str) -> float:
    features = load_feature_contract().feature_names
    scores = store.fitted[which].predict_proba(store.test[features])[:, 1]
    return float(average_precision_score(store.test["label"], scores))


def gate(store: Store, model: str, *, current: pd.DataFrame | None = None, force=False, reason=None):
    contract = load_feature_contract()
    versions = resolve_versions(client=store.client, model=model)
    drift = compute_drift(
        reference=store.train, current=store.test if current is None else current, contract=contract
    )
    checks = [
        contract_check(report=LakeReport()),
        quality_check(reports=[check_training_set(frame=store.train, contract=contract)]),
        drift_check(result=drift.result),
        compare_models(
            tracking_uri=store.ws.tracking_uri, versions=versions, window=store.test, contract=contract
        ),
    ]
    return decide(versions=versions, checks=checks, dry_run=False, force=force, reason=reason)


def champion(store: Store, model: str) -> str | None:
    return resolve_versions(client=store.client, model=model).champion


def test_lifecycle_first_worse_better_rollback_forced(store: Store) -> None:
    model = "churn-lifecycle"
    audit = store.ws.audit_db

    v1 = register(store, model, "fair")
    first = gate(store, model)
    assert first.decision == "promoted" and first.passed
    assert math.isnan(first.checks[3].figure)  # no champion yet: nothing to compare with
    apply_decision(client=store.client, decision=first, audit_db=audit, user="ana", now=NOW)
    assert champion(store, model) == v1

    v2 = register(store, model, "weak")
    worse = gate(store, model)
    assert worse.decision == "refused"
    assert [c.name for c in worse.failures] == ["model"]
    delta = expected_pr_auc(store, "weak") - expected_pr_auc(store, "fair")
    assert worse.checks[3].figure == pytest.approx(delta, abs=1e-12) and delta < -0.01
    apply_decision(client=store.client, decision=worse, audit_db=audit, user="ana", now=NOW)
    assert champion(store, model) == v1

    with pytest.raises(GateError, match="--force needs --reason"):
        gate(store, model, force=True, reason="  ")

    v3 = register(store, model, "strong")
    better = gate(store, model)
    assert better.decision == "promoted"
    assert better.checks[3].figure == pytest.approx(
        expected_pr_auc(store, "strong") - expected_pr_auc(store, "fair"), abs=1e-12
    )
    apply_decision(client=store.client, decision=better, audit_db=audit, user="ana", now=NOW)
    assert champion(store, model) == v3

    done = rollback(client=store.client, audit_db=audit, user="bo", now=NOW, reason="pager", model=model)
    assert (done.from_version, done.to_version) == (v3, v1)
    assert champion(store, model) == v1
    with pytest.raises(GateError, match="no previous champion"):
        rollback(client=store.client, audit_db=audit, user="bo", now=NOW, model=model)

    store.client.set_registered_model_alias(model, CHALLENGER, v2)
    forced = gate(store, model, force=True, reason="hotfix approved by CAB-42")
    assert forced.decision == "forced" and not forced.passed
    apply_decision(client=store.client, decision=forced, audit_db=audit, user="ana", now=NOW)
    assert champion(store, model) == v2

    rows = [r for r in reversed(list_decisions(db_path=audit)) if r["model"] == model]
    assert [(r["action"], r["decision"], r["champion_before"], r["champion_after"]) for r in rows] == [
        ("promote", "promoted", None, v1),
        ("promote", "refused", v1, v1),
        ("promote", "promoted", v1, v3),
        ("rollback", "rolled_back", v3, v1),
        ("promote", "forced", v1, v2),
    ]
    assert [r["user"] for r in rows] == ["ana", "ana", "ana", "bo", "ana"]
    assert rows[3]["reason"] == "pager" and rows[4]["reason"] == "hotfix approved by CAB-42"
    refused_checks = {c["check_name"]: c for c in rows[1]["checks"]}
    assert set(refused_checks) == {"contracts", "quality", "drift", "model"}
    assert refused_checks["model"]["passed"] == 0
    assert refused_checks["model"]["figure"] == pytest.approx(delta, abs=1e-12)
    assert refused_checks["model"]["threshold"] == pytest.approx(-0.01)
    assert rows[3]["checks"] == []

    gate_files = {a.path for a in store.client.list_artifacts(store.runs["weak"], "gate")}
    assert "gate/gate_result.json" in gate_files


def test_large_shift_refuses_and_nothing_moves(store: Store) -> None:
    model = "churn-drift"
    register(store, model, "fair")
    shifted = store.test.copy()
    shifted["watch_minutes_30d"] = shifted["watch_minutes_30d"] * 2.0
    decision = gate(store, model, current=shifted)
    assert decision.decision == "refused"
    assert [c.name for c in decision.failures] == ["drift"]
    assert "watch_minutes_30d" in decision.failures[0].detail
    apply_decision(client=store.client, decision=decision, audit_db=store.ws.audit_db, user="ana", now=NOW)
    assert champion(store, model) is None


def test_cli_promote_dry_run_force_and_audit(store: Store, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(promotion, "lake_contract_report", lambda *, lake_dir: LakeReport())
    monkeypatch.setenv("CHURNOPS_USER", "ci-bot")
    home = str(store.ws.home)
    version = register(store, "churn-model", "fair")
    now = datetime.now(UTC)
    current = store.test.drop(columns=["label", "event_timestamp", "profile_defaulted"]).assign(
        customer_id=[f"CUST-{i:06d}" for i in range(len(store.test))], snapshot_ts=now - timedelta(minutes=30)
    )
    clean = tmp_path / "current.parquet"
    current.to_parquet(clean)
    shifted = tmp_path / "shifted.parquet"
    current.assign(plan_type="enterprise").to_parquet(shifted)
    before = len(list_decisions(db_path=store.ws.audit_db))

    refused = runner.invoke(app, ["promote", "--home", home, "--current", str(shifted)])
    assert refused.exit_code == 1, refused.output
    assert "refused" in refused.output and "plan_type" in refused.output
    assert champion(store, "churn-model") is None

    args = ["promote", "--home", home, "--current", str(shifted), "--dry-run", "--json"]
    as_json = runner.invoke(app, args)
    assert as_json.exit_code == 1, as_json.output
    document = json.loads(as_json.stdout)
    assert (document["decision"], document["passed"], document["dry_run"]) == ("refused", False, True)
    failed = [c for c in document["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["drift"]
    assert document["reasons"] == [f"drift: {failed[0]['detail']}"]
    assert "plan_type" in document["drift"]["blocking"]

    no_reason = runner.invoke(app, ["promote", "--home", home, "--current", str(shifted), "--force"])
    assert no_reason.exit_code == 2 and "--force needs --reason" in no_reason.output

    dry = runner.invoke(app, ["promote", "--home", home, "--current", str(clean), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "promoted" in dry.output
    assert champion(store, "churn-model") is None
    assert len(list_decisions(db_path=store.ws.audit_db)) == before + 1

    promoted = runner.invoke(app, ["promote", "--home", home, "--current", str(clean)])
    assert promoted.exit_code == 0, promoted.output
    assert champion(store, "churn-model") == version
    latest = list_decisions(db_path=store.ws.audit_db, limit=1)[0]
    assert (latest["decision"], latest["user"], latest["champion_after"]) == ("promoted", "ci-bot", version)

    run_id = store.client.get_model_version_by_alias("churn-model", CHAMPION).run_id
    files = {a.path for a in store.client.list_artifacts(run_id, "gate")}
    assert {"gate/drift.html", "gate/drift.json", "gate/gate_result.json"} <= files
    logged = json.loads(
        Path(store.client.download_artifacts(run_id, "gate/gate_result.json", str(tmp_path))).read_text()
    )
    assert logged["decision"] == "promoted" and logged["champion_after"] == version
    described = store.client.get_model_version("churn-model", version).description
    assert described.startswith("**Gate** ") and ": promoted (champion none → " in described

    listed = runner.invoke(app, ["audit", "--home", home, "--checks"])
    assert listed.exit_code == 0
    assert f"#{latest['id'] - 1} drift: fail" in listed.output  # the refusal, with its failed check

    no_previous = runner.invoke(app, ["rollback", "--home", home])
    assert no_previous.exit_code == 1 and "no previous champion" in no_previous.output
