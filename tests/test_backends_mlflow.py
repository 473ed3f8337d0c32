"""MLflow tracking and registry on a real PostgreSQL server, chosen by `CHURNOPS_TRACKING_URI`.

A fresh database per test module (created, then dropped); artifacts go where
`CHURNOPS_ARTIFACT_ROOT` says. Skips when PostgreSQL does not answer on 127.0.0.1:5432.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from test_backends_helpers import Postgres, postgres, scratch_database

from churnops.config import ARTIFACT_ROOT_ENV, FEATURE_STORE_YAML_ENV, TRACKING_URI_ENV
from churnops.settings import Workspace, open_workspace

MODEL = "churn-probe"


@dataclass(frozen=True)
class Logged:
    server: Postgres
    database: str
    ws: Workspace
    run_id: str
    version: str
    x: np.ndarray
    expected: np.ndarray


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = postgres()
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from churnops.training.tracking import ensure_experiment, model_requirements, trusted_types

    root = tmp_path_factory.mktemp("mlflow-pg")
    with pytest.MonkeyPatch.context() as mp, scratch_database(server, "mlflow") as database:
        mp.delenv(FEATURE_STORE_YAML_ENV, raising=False)
        mp.setenv("CHURNOPS_HOME", str(root / "home"))
        mp.setenv(TRACKING_URI_ENV, server.url(database))
        mp.setenv(ARTIFACT_ROOT_ENV, str(root / "artifacts"))
        ws = open_workspace(root / "home")

        rng = np.random.default_rng(3)
        x = rng.normal(size=(60, 2))
        y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
        model = LogisticRegression().fit(x, y)

        client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
        experiment_id = ensure_experiment(client=client, artifact_location=str(ws.artifacts))
        mlflow.set_tracking_uri(ws.tracking_uri)
        mlflow.set_registry_uri(ws.tracking_uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name="pg-probe") as run:
            mlflow.log_param("C", model.C)
            mlflow.log_metric("train_accuracy", float(model.score(x, y)))
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                pip_requirements=model_requirements(),
                skops_trusted_types=trusted_types(model),
            )
        client.create_registered_model(MODEL)
        version = client.create_model_version(MODEL, info.model_uri, run_id=run.info.run_id)
        client.set_registered_model_alias(MODEL, "champion", version.version)
        yield Logged(
            server=server,
            database=database,
            ws=ws,
            run_id=run.info.run_id,
            version=str(version.version),
            x=x,
            expected=model.predict_proba(x),
        )
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_the_workspace_tracks_in_postgresql(logged: Logged) -> None:
    assert (
        logged.ws.tracking_uri
        == f"postgresql+psycopg://{logged.server.user}@127.0.0.1:5432/{logged.database}"
    )
    assert logged.ws.tracking_db is None
    # Nothing fell back to the embedded store.
    assert not (logged.ws.home / "mlruns" / "mlflow.db").exists()


def test_a_fresh_client_reads_the_run_and_the_alias_back(logged: Logged) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=logged.ws.tracking_uri, registry_uri=logged.ws.tracking_uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert (str(version.version), version.run_id) == (logged.version, logged.run_id)
    run = client.get_run(logged.run_id)
    assert run.data.params == {"C": "1.0"}
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri == f"{(logged.ws.artifacts).as_uri()}/{logged.run_id}/artifacts"


def test_the_rows_are_in_postgresql(logged: Logged) -> None:
    with logged.server.connect(logged.database) as con:
        aliases = con.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
        runs = con.execute("SELECT run_uuid, status FROM runs").fetchall()
        versions = con.execute("SELECT name, version, run_id FROM model_versions").fetchall()
    assert aliases == [(MODEL, "champion", int(logged.version))]
    assert runs == [(logged.run_id, "FINISHED")]
    assert versions == [(MODEL, int(logged.version), logged.run_id)]


def test_the_model_loads_from_the_artifact_root_by_alias(logged: Logged) -> None:
    import mlflow

    model_dirs = list((logged.ws.artifacts).glob("**/MLmodel"))
    assert len(model_dirs) == 1
    mlflow.set_registry_uri(logged.ws.tracking_uri)
    mlflow.set_tracking_uri(logged.ws.tracking_uri)
    try:
        model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    np.testing.assert_array_equal(model.predict_proba(logged.x), logged.expected)
