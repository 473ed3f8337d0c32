"""The prediction service over real HTTP: uvicorn on a loopback port, a real Feast online store
(SQLite) and real models in a temporary MLflow registry."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import numpy as np
import pandas as pd
import pytest
import schemathesis
import sqlite_utils
import uvicorn
from threadpoolctl import threadpool_limits

from churnops.contracts.feature_contract import load_feature_contract
from churnops.features.store import apply
from churnops.serving.app import create_app
from churnops.serving.settings import ServingSettings
from churnops.settings import Workspace
from churnops.storage.keys import create_key, revoke_keys
from churnops.training.models import build_gradient_boosting, build_logistic_regression
from churnops.training.tracking import trusted_types

CONTRACT = load_feature_contract()
FLAG = CONTRACT.entity.join.default_flag
MODEL = "churn-model"
FRESH = [f"CUST-{i:06d}" for i in range(1, 41)]
STALE = "CUST-000050"  # 5 h old: past the 2 h freshness bound, within the 1 d TTL
EXPIRED = "CUST-000060"  # 3 d old: past the TTL, so the contract's defaults apply
UNKNOWN = "CUST-999999"  # never written to the online store
WAIT_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Setup:
    home: Path
    tracking_uri: str
    rows: pd.DataFrame  # what was written to the online store, by customer_id
    now: datetime


def _open_store(home: Path) -> Any:
    from churnops.features.store import open_store

    return open_store(home=home)


def _feature_rows(now: datetime) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ids = [*FRESH, STALE, EXPIRED]
    n = len(ids)
    frame = pd.DataFrame({"customer_id": ids})
    for f in CONTRACT.features:
        if f.dtype == "int64":
            frame[f.name] = rng.integers(0, int(min(f.max or 50, 50)) + 1, n).astype("int64")
        elif f.dtype == "float64":
            frame[f.name] = np.round(rng.random(n) * min(f.max or 100, 100), 3)
        else:
            frame[f.name] = rng.choice(["basic", "pro", "enterprise"], n)
    ages = [timedelta(minutes=30)] * len(FRESH) + [timedelta(hours=5), timedelta(days=3)]
    frame["snapshot_ts"] = pd.Series([now - a for a in ages]).astype("datetime64[us, UTC]")
    return frame


def _train(seed: int, build: Callable[..., Any]) -> tuple[Any, pd.DataFrame]:
    """A candidate built and calibrated as `churnops train` does, on random feature rows."""
    from churnops.training.models import fit_calibrated

    rng = np.random.default_rng(seed)
    n = 600
    x = pd.DataFrame(
        {
            f.name: (
                rng.choice(["basic", "pro", "enterprise"], n)
                if f.dtype == "string"
                else rng.integers(0, 50, n).astype(f.dtype)
            )
            for f in CONTRACT.features
        }
    )
    y = (x["sessions_30d"] + rng.normal(0, 10, n) < 25).to_numpy().astype(int)
    half = n // 2
    # One OpenMP thread: on a busy 2-core machine, threads spinning for a core take 50x longer.
    with threadpool_limits(1):
        model = fit_calibrated(
            pipeline=build(contract=CONTRACT, seed=seed),
            train_x=x.iloc[:half],
            train_y=y[:half],
            validation_x=x.iloc[half:],
            validation_y=y[half:],
        )
    return model, x


@contextmanager
def _global_tracking(uri: str, decoy: str) -> Iterator[None]:
    """Point MLflow's process-wide URIs at `uri` for logging, then at an empty decoy store, so the
    service can only find its models through the URI it was given."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(decoy)
        mlflow.set_registry_uri(decoy)


def _decoy(home: Path) -> str:
    return f"sqlite:///{home / 'decoy' / 'mlflow.db'}"


def _client(setup: Setup) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=setup.tracking_uri, registry_uri=setup.tracking_uri)


def _promote(home: Path, tracking_uri: str, version: str) -> None:
    """Promote a version through the gate's own transaction (audit row, history, alias)."""
    from mlflow import MlflowClient

    from churnops.monitoring.gate import GateCheck, Versions, decide
    from churnops.monitoring.registry import apply_decision, champion_version

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = Versions(
        model=MODEL,
        challenger=version,
        challenger_run_id=str(client.get_model_version(MODEL, version).run_id),
        champion=champion_version(client=client, model=MODEL),
    )
    passed = GateCheck("model", True, 0.0, 0.01, "the test's gate passes")
    decision = decide(versions=versions, checks=[passed], dry_run=False, force=False, reason=None)
    apply_decision(
        client=client,
        decision=decision,
        audit_db=Workspace(home).audit_db,
        user="test",
        now=datetime.now(UTC),
    )


def _rollback(setup: Setup) -> None:
    from churnops.monitoring.registry import rollback

    rollback(
        client=_client(setup), audit_db=Workspace(setup.home).audit_db, user="test", now=datetime.now(UTC)
    )


def _register(tracking_uri: str, artifacts: Path) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    experiment = mlflow.create_experiment("serving-tests", artifact_location=artifacts.as_uri())
    # Version 1 (the champion) is gradient boosting, version 2 (the challenger) the baseline.
    for seed, build in ((1, build_gradient_boosting), (2, build_logistic_regression)):
        model, x = _train(seed, build)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(x, model.predict_proba(x)[:, 1]),
                registered_model_name=MODEL,
                pip_requirements=["scikit-learn"],
                skops_trusted_types=trusted_types(model),
            )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("serving-home")
    store = _open_store(home)
    apply(store)
    # Feast keeps UnixTimestamp features to the second; real snapshots sit on whole boundaries.
    now = datetime.now(UTC).replace(microsecond=0)
    rows = _feature_rows(now)
    # Written through Feast itself; the snapshot time is also the row's event and created time.
    store.write_to_online_store(
        "customer_profile_30d",
        rows.assign(event_timestamp=rows["snapshot_ts"], created_timestamp=rows["snapshot_ts"]),
    )
    tracking_uri = Workspace(home).tracking_uri
    Workspace(home).mlruns.mkdir()
    with _global_tracking(tracking_uri, _decoy(home)):
        _register(tracking_uri, Workspace(home).artifacts)
    _promote(home, tracking_uri, "1")
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        MODEL, "challenger", "2"
    )
    return Setup(home=home, tracking_uri=tracking_uri, rows=rows.set_index("customer_id"), now=now)


class Served:
    """One app served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        _wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        assert self.server.started, "uvicorn failed to start"
        self.client = httpx.Client(base_url=self.url, timeout=WAIT_S)
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=WAIT_S)


def _settings(setup: Setup, name: str, **overrides: Any) -> ServingSettings:
    return ServingSettings(
        predictions_dir=setup.home / "predictions" / name,
        audit_db=Workspace(setup.home).audit_db,
        poll_interval_s=0.2,
        log_flush_interval_s=0.05,
        **overrides,
    )


@pytest.fixture(scope="module")
def service(setup: Setup) -> Iterator[httpx.Client]:
    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=setup.tracking_uri,
        settings=_settings(setup, "main", shadow=True),
    )
    with Served(app) as client:
        yield client


def _offline(setup: Setup, version: str, ids: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Score the written values (defaults where the service must default) with the same version."""
    import mlflow.sklearn

    records = []
    for cid in ids:
        if cid in setup.rows.index and cid != EXPIRED:
            records.append({n: setup.rows.loc[cid, n] for n in CONTRACT.feature_names})
        else:
            records.append(dict(CONTRACT.defaults))
    frame = pd.DataFrame(records)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=setup.tracking_uri, registry_uri=setup.tracking_uri)
    model = mlflow.sklearn.load_model(client.get_model_version_download_uri(MODEL, version))
    return model.predict_proba(frame[CONTRACT.feature_names])[:, 1], frame


def _band(p: float) -> str:
    return "high" if p >= 0.6 else "medium" if p >= 0.3 else "low"


def _expected_status(cid: str) -> tuple[str, str | None]:
    if cid == UNKNOWN:
        return "default", None
    return {STALE: "stale", EXPIRED: "default"}.get(cid, "present"), "snapshot"


def test_single_predictions_equal_offline_scoring_of_the_same_features(
    setup: Setup, service: httpx.Client
) -> None:
    ids = [FRESH[0], FRESH[1], STALE, EXPIRED, UNKNOWN]
    expected, _ = _offline(setup, "1", ids)
    for cid, p in zip(ids, expected, strict=True):
        r = service.post("/predict", json={"customer_id": cid})
        assert r.status_code == 200, r.text
        body = r.json()
        status, has_snapshot = _expected_status(cid)
        assert body["customer_id"] == cid
        assert body["model_version"] == "1"
        assert body["feature_status"] == status
        assert body["churn_probability"] == pytest.approx(p, abs=1e-12)
        assert body["risk_band"] == _band(p)
        if has_snapshot:
            want = setup.rows.loc[cid, "snapshot_ts"].to_pydatetime()
            assert datetime.fromisoformat(body["snapshot_ts"]) == want
        else:
            assert body["snapshot_ts"] is None
        assert r.headers["X-Request-ID"] == body["request_id"]


def test_concurrent_single_predictions_scored_together_stay_per_customer(
    setup: Setup, service: httpx.Client
) -> None:
    ids = [*FRESH[:24], UNKNOWN, STALE, EXPIRED, FRESH[0]]
    expected, _ = _offline(setup, "1", ids)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(service.base_url), timeout=WAIT_S) as client:
            return await asyncio.gather(*(client.post("/predict", json={"customer_id": c}) for c in ids))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(ids)
    bodies = [r.json() for r in responses]
    assert [b["customer_id"] for b in bodies] == ids
    np.testing.assert_allclose([b["churn_probability"] for b in bodies], expected, rtol=0, atol=1e-12)
    assert [b["feature_status"] for b in bodies] == [_expected_status(c)[0] for c in ids]
    assert len({b["request_id"] for b in bodies}) == len(ids)


def test_batch_keeps_order_and_equals_offline_scoring(setup: Setup, service: httpx.Client) -> None:
    ids = [*FRESH, UNKNOWN, STALE, FRESH[3], EXPIRED]
    expected, _ = _offline(setup, "1", ids)
    r = service.post("/predict/batch", json={"customer_ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1"
    assert [p["customer_id"] for p in body["predictions"]] == ids
    got = np.array([p["churn_probability"] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert [p["feature_status"] for p in body["predictions"]] == [_expected_status(c)[0] for c in ids]


def test_prediction_log_holds_features_and_shadow_scores(setup: Setup, service: httpx.Client) -> None:
    ids = [FRESH[5], EXPIRED, UNKNOWN]
    r = service.post("/predict/batch", json={"customer_ids": ids}, headers={"X-Request-ID": "log-check-1"})
    assert r.status_code == 200, r.text
    db_path = setup.home / "predictions" / "main" / "predictions.db"

    def logged() -> list[dict[str, Any]]:
        if not db_path.exists():
            return []
        db = sqlite_utils.Database(db_path)
        try:
            return list(
                db.query("select * from predictions where request_id = ? order by item", ["log-check-1"])
            )
        finally:
            db.close()

    _wait_for(lambda: len(logged()) == 3, "the prediction log to hold the request's 3 rows")
    rows = logged()
    champion, frame = _offline(setup, "1", ids)
    shadow, _ = _offline(setup, "2", ids)
    for i, row in enumerate(rows):
        assert row["customer_id"] == ids[i]
        assert row["model_name"] == MODEL
        assert row["model_version"] == "1"
        assert row["churn_probability"] == pytest.approx(champion[i], abs=1e-12)
        assert row["shadow_model_version"] == "2"
        assert row["shadow_probability"] == pytest.approx(shadow[i], abs=1e-12)
        assert row[FLAG] == (0 if ids[i] == FRESH[5] else 1)
        # Only the id the online store has never seen is flagged unknown for monitoring.
        assert row["known"] == (0 if ids[i] == UNKNOWN else 1)
        for name in CONTRACT.numeric_features:
            assert row[name] == pytest.approx(frame.loc[i, name], abs=1e-12)
        for name in CONTRACT.categorical_features:
            assert row[name] == frame.loc[i, name]
    assert rows[0]["feature_status"] == "present"
    assert rows[2]["snapshot_ts"] is None


def test_health_ready_docs_and_metrics(service: httpx.Client) -> None:
    assert service.get("/health").json() == {"status": "ok"}
    ready = service.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {
            "model": {"ok": True, "version": "1", "scoring": "compiled", "engine": "treelite"},
            "online_store": {"ok": True},
        },
    }
    assert service.get("/docs").status_code == 200
    assert "/predict/batch" in service.get("/openapi.json").json()["paths"]
    service.post("/predict", json={"customer_id": UNKNOWN})
    text = service.get("/metrics").text
    assert 'churnops_model_version{alias="champion"} 1.0' in text
    assert 'churnops_model_version{alias="challenger"} 2.0' in text
    assert 'churnops_model_compiled{alias="champion"} 1.0' in text
    assert 'churnops_model_compiled{alias="challenger"} 1.0' in text
    assert 'churnops_requests_total{endpoint="/predict",status="200"}' in text
    assert 'churnops_predictions_total{feature_status="default"}' in text
    assert "churnops_request_latency_seconds_bucket" in text
    assert "churnops_feature_snapshot_age_seconds_bucket" in text


BAD_REQUESTS = [
    ("/predict", b'{"customer_id": ', 400, "malformed_json"),
    ("/predict", b"not json at all", 400, "malformed_json"),
    ("/predict", b'{"customer_id": 42}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": ""}', 422, "invalid_request"),
    ("/predict", b'{"customer": "CUST-000001"}', 422, "invalid_request"),
    ("/predict", b'["CUST-000001"]', 422, "invalid_request"),
    ("/predict", b"", 422, "invalid_request"),
    ("/predict/batch", b'{"customer_ids": []}', 422, "empty_batch"),
    ("/predict/batch", b'{"customer_ids": "CUST-000001"}', 422, "invalid_request"),
    ("/predict/batch", b'{"customer_ids": ["CUST-000001", 7]}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": "x\\"; DROP TABLE t; --"}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": "CUST-00001"}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": "CUST-0000001"}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": "cust-000001"}', 422, "invalid_request"),
    ("/predict", b'{"customer_id": "CUST-000001\\n"}', 422, "invalid_request"),
    ("/predict/batch", b'{"customer_ids": ["CUST-000001", "DROP TABLE"]}', 422, "invalid_request"),
]


@pytest.mark.parametrize(("path", "body", "status", "error"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_4xx(
    service: httpx.Client, path: str, body: bytes, status: int, error: str
) -> None:
    r = service.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["error"] == error
    assert payload["detail"]
    assert "Traceback" not in r.text


def test_validation_errors_name_the_field_and_quote_input_briefly(service: httpx.Client) -> None:
    r = service.post("/predict/batch", json={"customer_ids": "C" * 5000})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("customer_ids: Input should be a valid list (got 'CCC")
    assert detail.endswith("...)")
    assert len(detail) < 150
    r = service.post("/predict", json={"customer_id": 42})
    assert r.json()["detail"] == "customer_id: Input should be a valid string (got 42)"


def test_oversized_batch_is_refused_with_the_limit(service: httpx.Client) -> None:
    r = service.post("/predict/batch", json={"customer_ids": [f"CUST-{i:06d}" for i in range(1001)]})
    assert r.status_code == 413
    assert r.json() == {
        "error": "batch_too_large",
        "detail": "customer_ids holds 1001 ids, more than the limit of 1000: split the batch",
    }


def test_wrong_method_and_unknown_path_are_4xx(service: httpx.Client) -> None:
    assert service.get("/predict").status_code == 405
    assert service.get("/nope").json()["error"] == "http_error"


def test_a_gated_champion_is_served_without_restart_or_failed_requests_and_rolled_back(
    setup: Setup, service: httpx.Client
) -> None:
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(service.base_url), timeout=WAIT_S) as c:
            while not stop.is_set():
                r = c.post("/predict", json={"customer_id": FRESH[2]})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.add(r.json()["model_version"])

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        _wait_for(lambda: "1" in versions, "requests in flight before the alias moves")
        _promote(setup.home, setup.tracking_uri, "2")
        _wait_for(
            lambda: service.post("/predict", json={"customer_id": FRESH[2]}).json()["model_version"] == "2",
            "the service to serve version 2",
        )
        expected, _ = _offline(setup, "2", [FRESH[2]])
        body = service.post("/predict", json={"customer_id": FRESH[2]}).json()
        assert body["churn_probability"] == pytest.approx(expected[0], abs=1e-12)
    finally:
        stop.set()
        worker.join(timeout=WAIT_S)
        _rollback(setup)
        _wait_for(
            lambda: service.post("/predict", json={"customer_id": FRESH[2]}).json()["model_version"] == "1",
            "the service to return to version 1",
        )
    assert failures == []
    assert versions == {"1", "2"}


def test_a_champion_needing_columns_serving_lacks_is_refused_and_the_old_one_kept(
    setup: Setup, service: httpx.Client
) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model, x = _train(3, build_logistic_regression)
    x_with_extra = x.assign(mystery_column=1)
    with (
        _global_tracking(setup.tracking_uri, _decoy(setup.home)),
        mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("serving-tests").experiment_id),
    ):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_with_extra, model.predict_proba(x)[:, 1]),
            registered_model_name=MODEL,
            pip_requirements=["scikit-learn"],
            skops_trusted_types=trusted_types(model),
        )
    bad_version = str(info.registered_model_version)

    def refresh_errors() -> float:
        for line in service.get("/metrics").text.splitlines():
            if line.startswith("churnops_model_refresh_errors_total "):
                return float(line.split()[1])
        raise AssertionError("churnops_model_refresh_errors_total is not exported")

    before = refresh_errors()
    _promote(setup.home, setup.tracking_uri, bad_version)
    try:
        _wait_for(lambda: refresh_errors() > before, "the watcher to refuse the new champion")
        r = service.post("/predict", json={"customer_id": FRESH[0]})
        assert r.status_code == 200
        assert r.json()["model_version"] == "1"
        ready = service.get("/ready")
        assert ready.status_code == 200
        assert "needs input columns ['mystery_column']" in ready.json()["checks"]["model"]["refresh_error"]
    finally:
        _rollback(setup)


def _unaudited_gauges(service: httpx.Client) -> list[str]:
    return [
        line
        for line in service.get("/metrics").text.splitlines()
        if line.startswith("churnops_champion_unaudited")
    ]


def test_a_champion_moved_outside_the_gate_is_not_served_and_ready_says_why(
    setup: Setup, service: httpx.Client
) -> None:
    client = _client(setup)
    # An earlier test of the module may have left another unaudited move for the watcher to clear.
    _wait_for(
        lambda: (
            (model := service.get("/ready").json()["checks"]["model"]).get("version") == "1"
            and "unaudited" not in model
        ),
        "version 1 with no unaudited move",
    )
    client.set_registered_model_alias(MODEL, "champion", "2")
    try:
        _wait_for(
            lambda: _unaudited_version(service) == "2",
            "the service to notice the unaudited move",
        )
        ready = service.get("/ready")
        assert ready.status_code == 200  # version 1 still answers
        model = ready.json()["checks"]["model"]
        assert (model["version"], model["unaudited"]["version"]) == ("1", "2")
        audit_db = Workspace(setup.home).audit_db
        assert model["unaudited"]["reason"].startswith(
            f"churn-model@champion points at version 2, but the audit table ({audit_db}) records no "
            "promotion or rollback to it (audited champion: 1)"
        )
        assert "version 1 keeps answering" in model["unaudited"]["reason"]
        expected, _ = _offline(setup, "1", [FRESH[4]])
        body = service.post("/predict", json={"customer_id": FRESH[4]}).json()
        assert body["model_version"] == "1"
        assert body["churn_probability"] == pytest.approx(expected[0], abs=1e-12)
        assert 'churnops_champion_unaudited{version="2"} 1.0' in _unaudited_gauges(service)
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
    # Back on the audited champion: the report clears.
    _wait_for(
        lambda: "unaudited" not in service.get("/ready").json()["checks"]["model"], "the report to clear"
    )
    gauges = _unaudited_gauges(service)
    assert 'churnops_champion_unaudited{version="2"} 0.0' in gauges
    assert not [g for g in gauges if g.endswith(" 1.0")]


def _unaudited_version(service: httpx.Client) -> str | None:
    return service.get("/ready").json()["checks"]["model"].get("unaudited", {}).get("version")


def test_an_unaudited_champion_at_start_up_is_not_ready_and_says_why(setup: Setup) -> None:
    audit_db = setup.home / "other-audit" / "audit.db"
    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=setup.tracking_uri,
        settings=_settings(setup, "unaudited", shadow=False).model_copy(update={"audit_db": audit_db}),
    )
    with Served(app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        detail = ready.json()["checks"]["model"]["detail"]
        assert detail.startswith(
            f"churn-model@champion points at version 1, but the audit table ({audit_db}) records no "
            "promotion or rollback to it (audited champion: none)"
        )
        assert "no model answers until it is resolved" in detail
        r = client.post("/predict", json={"customer_id": FRESH[0]})
        assert (r.status_code, r.json()) == (503, {"error": "no_champion", "detail": detail})
    assert not audit_db.exists()  # a reader never creates the audit table


def test_no_champion_answers_503_saying_what_to_run(setup: Setup) -> None:
    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=f"sqlite:///{setup.home / 'empty-mlruns' / 'mlflow.db'}",
        settings=_settings(setup, "no-champion"),
    )
    with Served(app) as client:
        r = client.post("/predict", json={"customer_id": FRESH[0]})
        assert r.status_code == 503
        assert r.json()["error"] == "no_champion"
        assert "`churnops train` then `churnops promote`" in r.json()["detail"]
        assert client.post("/predict/batch", json={"customer_ids": [FRESH[0]]}).status_code == 503
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"]["ok"] is False
        assert client.get("/health").status_code == 200
    assert not (setup.home / "empty-mlruns").exists()


def test_api_keys_when_required(setup: Setup) -> None:
    keys_file = setup.home / "keys.json"
    key = create_key(
        keys_file=keys_file, consumer="cs-analytics-dashboard", approved_consumers=["cs-analytics-dashboard"]
    )
    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=setup.tracking_uri,
        settings=_settings(
            setup, "keys", require_keys=True, keys_file=keys_file, shadow=False, keys_reload_interval_s=0
        ),
    )
    with Served(app) as client:
        body = {"customer_id": FRESH[0]}
        missing = client.post("/predict", json=body)
        assert missing.status_code == 401
        assert "X-API-Key" in missing.json()["detail"]
        assert client.post("/predict", json=body, headers={"X-API-Key": key + "x"}).status_code == 401
        assert client.post("/predict/batch", json={"customer_ids": [FRESH[0]]}).status_code == 401
        ok = client.post("/predict", json=body, headers={"X-API-Key": key})
        assert ok.status_code == 200, ok.text
        assert ok.json()["model_version"] == "1"
        assert client.get("/health").status_code == 200
        # The keys file is re-checked on every request here (interval 0): no waiting, no restart.
        revoke_keys(keys_file=keys_file, name="cs-analytics-dashboard")
        revoked = client.post("/predict", json=body, headers={"X-API-Key": key})
        assert revoked.status_code == 401
        new = create_key(
            keys_file=keys_file,
            consumer="cs-analytics-dashboard",
            approved_consumers=["cs-analytics-dashboard"],
        )
        assert client.post("/predict", json=body, headers={"X-API-Key": new}).status_code == 200


def test_churnops_serve_command_serves_the_home(setup: Setup) -> None:
    options = ("--no-shadow", "--poll-interval", "1")
    with _churnops_serve(setup, "command", *options) as (_, client):
        expected, _ = _offline(setup, "1", [FRESH[7]])
        body = client.post("/predict", json={"customer_id": FRESH[7]}).json()
        assert body["model_version"] == "1"
        assert body["churn_probability"] == pytest.approx(expected[0], abs=1e-12)
        _wait_for(
            lambda: (Workspace(setup.home).predictions / "predictions.db").exists(),
            "the prediction log under the home",
        )


def _logged_ids(db_path: Path) -> list[str]:
    if not db_path.exists():
        return []
    db = sqlite_utils.Database(db_path)
    try:
        return [r["customer_id"] for r in db.query("select customer_id from predictions")]
    finally:
        db.close()


def test_malformed_ids_get_422_naming_the_contracts_pattern_and_are_never_logged(
    setup: Setup, service: httpx.Client
) -> None:
    single = service.post("/predict", json={"customer_id": 'x"; DROP TABLE t; --'})
    assert single.status_code == 422
    assert "^CUST-[0-9]{6}$" in single.json()["detail"]
    batch = service.post("/predict/batch", json={"customer_ids": [FRESH[0], "CUST-1"]})
    assert batch.status_code == 422
    assert batch.json()["detail"].startswith("customer_ids.1: String should match pattern '^CUST-[0-9]{6}$'")
    # A request after them is logged; once it is, the log provably holds no malformed id.
    ok = service.post("/predict", json={"customer_id": FRESH[9]}, headers={"X-Request-ID": "after-garbage"})
    assert ok.status_code == 200
    db_path = setup.home / "predictions" / "main" / "predictions.db"
    _wait_for(lambda: FRESH[9] in _logged_ids(db_path), "the valid request to be logged")
    assert all(re.fullmatch(r"CUST-[0-9]{6}", cid) for cid in _logged_ids(db_path))


def test_docs_load_only_from_the_service_itself(service: httpx.Client) -> None:
    page = service.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    assert not re.search(r"(https?:)?//", page.text.replace("http://www.w3.org", "")), page.text
    for url in urls:
        if url.startswith("/docs/assets/"):
            asset = service.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls)
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io


def test_openapi_declares_api_keys_only_when_required_and_metrics_as_text(setup: Setup) -> None:
    for required in (False, True):
        app = create_app(
            store_factory=lambda: _open_store(setup.home),
            tracking_uri=setup.tracking_uri,
            settings=_settings(setup, "openapi", require_keys=required, keys_file=setup.home / "k.json"),
        )
        schema = app.openapi()
        predict = schema["paths"]["/predict"]["post"]
        assert ("security" in predict) is required
        assert ("401" in predict["responses"]) is required
        assert ("securitySchemes" in schema.get("components", {})) is required
        assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
        id_schema = schema["components"]["schemas"]["PredictRequest"]["properties"]["customer_id"]
        assert id_schema["pattern"] == "^CUST-[0-9]{6}$"
        batch = schema["components"]["schemas"]["BatchRequest"]["properties"]["customer_ids"]
        assert (batch["minItems"], batch["maxItems"]) == (1, 1000)


def test_a_body_that_stalls_gets_408_and_the_connection_closed(setup: Setup) -> None:
    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=setup.tracking_uri,
        settings=_settings(setup, "slow-body", shadow=False, body_timeout_s=0.5),
    )
    with Served(app) as client, socket.create_connection(("127.0.0.1", int(client.base_url.port))) as sock:
        # The deadline only bounds a hang: the assertion is the 408, not how fast it came.
        sock.settimeout(WAIT_S)
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"customer_id": '
        )
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection: recv returns b""
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), received
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"] == "request_timeout"
        # The service is unharmed.
        assert client.post("/predict", json={"customer_id": FRESH[0]}).status_code == 200


CHURNOPS = str(Path(sys.executable).with_name("churnops"))


@contextmanager
def _churnops_serve(
    setup: Setup, name: str, *options: str
) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """`churnops serve` on the setup's home in a subprocess, ready; terminated on exit if alive."""
    port = _free_port()
    log = setup.home / f"serve-{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [CHURNOPS, "serve", "--home", str(setup.home), "--port", str(port), *options],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:

            def ready() -> bool:
                assert process.poll() is None, f"churnops serve exited: {log.read_text()}"
                try:
                    return client.get("/ready").status_code == 200
                except httpx.TransportError:
                    return False

            _wait_for(ready, f"`churnops serve` ({name}) to be ready", timeout=90)
            yield process, client
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=WAIT_S)


def _cli(setup: Setup, *args: str) -> str:
    done = subprocess.run(
        [CHURNOPS, *args, "--home", str(setup.home)], capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rows_of(setup: Setup, prefix: str) -> list[tuple[str, int]]:
    db = sqlite_utils.Database(Workspace(setup.home).predictions / "predictions.db")
    try:
        query = "select request_id, item from predictions where request_id like ? order by request_id, item"
        return [(r["request_id"], r["item"]) for r in db.query(query, [prefix + "%"])]
    finally:
        db.close()


async def _answer_many(
    base_url: str, *, singles: int, batches: int, batch_size: int
) -> list[tuple[str, int]]:
    """Concurrent single and batch predictions; the (request id, item) of every answered row."""
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT_S) as client:
        single = [
            client.post(
                "/predict", json={"customer_id": FRESH[i % 40]}, headers={"X-Request-ID": f"kill-s{i}"}
            )
            for i in range(singles)
        ]
        batch = [
            client.post(
                "/predict/batch",
                json={"customer_ids": [FRESH[(b + k) % 40] for k in range(batch_size)]},
                headers={"X-Request-ID": f"kill-b{b}"},
            )
            for b in range(batches)
        ]
        responses = await asyncio.gather(*single, *batch)
    answered: list[tuple[str, int]] = []
    for r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        items = len(body["predictions"]) if "predictions" in body else 1
        answered.extend((r.headers["X-Request-ID"], k if items > 1 else 0) for k in range(items))
    return answered


def test_sigkill_loses_no_answered_prediction_and_key_changes_apply_without_restart(setup: Setup) -> None:
    with _churnops_serve(setup, "sigkill", "--no-shadow") as (process, client):
        answered = asyncio.run(_answer_many(str(client.base_url), singles=300, batches=5, batch_size=20))
        # SIGKILL right after the last answer: no shutdown hook runs, the writer's queue is lost.
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=WAIT_S)
    assert len(answered) == 400
    before_restart = _rows_of(setup, "kill-")
    assert len(before_restart) <= len(answered)
    key = next(
        w for w in _cli(setup, "keys", "create", "cs-analytics-dashboard").split() if w.startswith("chk_")
    )
    with _churnops_serve(setup, "restarted", "--no-shadow", "--require-keys") as (_, client):
        # Start-up replayed the journal: every answered row is in the log, exactly once.
        assert _rows_of(setup, "kill-") == sorted(answered)
        body = {"customer_id": FRESH[0]}
        assert client.post("/predict", json=body, headers={"X-API-Key": key}).status_code == 200
        _cli(setup, "keys", "revoke", "cs-analytics-dashboard")
        # Refused after the service's reload interval (1 s by default); the deadline only bounds a hang.
        _wait_for(
            lambda: client.post("/predict", json=body, headers={"X-API-Key": key}).status_code == 401,
            "the revoked key to be refused without a restart",
        )
        new = next(
            w for w in _cli(setup, "keys", "create", "cs-analytics-dashboard").split() if w.startswith("chk_")
        )
        _wait_for(
            lambda: client.post("/predict", json=body, headers={"X-API-Key": new}).status_code == 200,
            "the new key to be accepted without a restart",
        )


@pytest.fixture
def api_schema(setup: Setup) -> Iterator[Any]:
    from schemathesis.config._checks import NegativeDataRejectionConfig
    from schemathesis.python.asgi import shutdown_lifespans

    app = create_app(
        store_factory=lambda: _open_store(setup.home),
        tracking_uri=setup.tracking_uri,
        settings=_settings(setup, "fuzz", shadow=True),
    )
    # In process: schemathesis's ASGI client starts the app's lifespan (store, models, log), and
    # its pytest plugin ends it after each test: one app per test, as uvicorn runs one lifespan.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # A batch over the declared `maxItems` is refused with 413 (payload too large, naming the
    # limit): a rejection, though not among schemathesis's default rejection statuses.
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
        expected_statuses=[*rejection.expected_statuses, "413"]
    )
    yield schema
    shutdown_lifespans()


OPERATIONS = {"POST /predict", "POST /predict/batch", "GET /health", "GET /ready", "GET /metrics"}


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_matches_its_openapi_document_under_fuzzing(api_schema: Any, mode: str) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == OPERATIONS
    for operation in operations:
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # the GET operations take no parameters and no body: nothing to make invalid
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @hypothesis.given(case=strategy)
        @hypothesis.settings(
            max_examples=50,
            derandomize=True,  # the same cases on every run and machine: a fixed seed
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case: Any) -> None:
            # No 5xx, and every status, header, content type and body as the document declares.
            case.call_and_validate()

        check()
