"""End to end on the production backends, through the `churnops` commands and nothing else.

generate → ingest → features build → features apply → materialize → parity → train, with
`CHURNOPS_TRACKING_URI` on a real PostgreSQL database, `CHURNOPS_FEATURE_STORE_YAML` naming the
PostgreSQL-registry + Redis example (its registry in a second database), and
`CHURNOPS_ARTIFACT_ROOT` outside the home. Redis database 13 holds the online rows. Skips when
PostgreSQL or Redis does not answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_backends_helpers import (
    Postgres,
    feast_env,
    postgres,
    project_keys,
    redis_database,
    scratch_database,
)

from churnops.config import ARTIFACT_ROOT_ENV, FEATURE_STORE_YAML_ENV, TRACKING_URI_ENV
from churnops.settings import FEATURE_REPO, Workspace, open_workspace

HYBRID = FEATURE_REPO / "examples" / "feature_store.postgres-redis.yaml"
REDIS_DB = 13
START = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 75
END = START + timedelta(days=DAYS)
CUSTOMERS = 250


@dataclass(frozen=True)
class Pipeline:
    server: Postgres
    mlflow_db: str
    redis: Any
    ws: Workspace
    artifacts: Path
    outputs: dict[str, str]


def _run(args: list[str]) -> str:
    from typer.testing import CliRunner

    from churnops.cli import app

    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, f"churnops {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    server = postgres()
    root = tmp_path_factory.mktemp("backends-pipeline")
    home = root / "home"
    with (
        redis_database(REDIS_DB) as redis,
        scratch_database(server, "e2e_mlflow") as mlflow_db,
        scratch_database(server, "e2e_feast") as registry_db,
        pytest.MonkeyPatch.context() as mp,
    ):
        pytest.importorskip("feast.infra.online_stores.redis", reason="install 'feast[redis]'")
        for name, value in feast_env(server, registry_db=registry_db, redis_db=REDIS_DB).items():
            mp.setenv(name, value)
        mp.setenv(TRACKING_URI_ENV, server.url(mlflow_db))
        mp.setenv(ARTIFACT_ROOT_ENV, str(root / "artifacts"))
        mp.setenv(FEATURE_STORE_YAML_ENV, str(HYBRID))
        mp.setenv("CHURNOPS_HOME", str(home))
        at = f"{END:%Y-%m-%dT%H:%M:%SZ}"
        h = ["--home", str(home)]
        outputs = {
            "generate": _run(
                [
                    "generate",
                    *h,
                    *("--customers", str(CUSTOMERS), "--days", str(DAYS)),
                    *("--seed", "7", "--start", f"{START:%Y-%m-%d}"),
                ]
            ),
            "ingest": _run(["ingest", *h, "--backfill"]),
            "build": _run(["features", "build", *h, "--until", at]),
            "apply": _run(["features", "apply", *h]),
            "materialize": _run(["materialize", *h, "--at", at]),
            "parity": _run(["parity", *h]),
            "train": _run(["train", *h, "--seed", "42"]),
        }
        ws = open_workspace(home)
        try:
            yield Pipeline(
                server=server,
                mlflow_db=mlflow_db,
                redis=redis,
                ws=ws,
                artifacts=root / "artifacts",
                outputs=outputs,
            )
        finally:
            import mlflow

            # `churnops train` set MLflow's process-wide URIs (and MLFLOW_TRACKING_URI) to a
            # database that is about to be dropped.
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def test_no_embedded_store_was_created(pipeline: Pipeline) -> None:
    assert not (pipeline.ws.home / "mlruns" / "mlflow.db").exists()
    assert not (pipeline.ws.feast / "registry.db").exists()
    assert not (pipeline.ws.feast / "online.db").exists()


def test_the_model_is_registered_in_postgresql(pipeline: Pipeline) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=pipeline.ws.tracking_uri, registry_uri=pipeline.ws.tracking_uri)
    version = client.get_model_version_by_alias("churn-model", "challenger")
    with pipeline.server.connect(pipeline.mlflow_db) as con:
        aliases = con.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
        runs = con.execute("SELECT run_uuid, status FROM runs").fetchall()
    assert aliases == [("churn-model", "challenger", 1)]
    # One training: its parent run and a child run per candidate, the chosen one registered.
    assert len(runs) == 3 and {status for _, status in runs} == {"FINISHED"}
    assert version.run_id in {run for run, _ in runs}
    assert "Registered churn-model version 1 as @challenger" in pipeline.outputs["train"]
    # Rich wraps long lines; the UI hint names the PostgreSQL store.
    assert f"--backend-store-uri {pipeline.ws.tracking_uri}" in " ".join(pipeline.outputs["train"].split())
    # The model's files are under the configured artifact root, not the home.
    assert [p.parent.name for p in pipeline.artifacts.glob("**/MLmodel")] == ["artifacts"] * 2
    assert not (pipeline.ws.home / "mlruns" / "artifacts").exists()


def test_the_features_are_in_redis(pipeline: Pipeline) -> None:
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.online import read_online
    from churnops.features.store import open_store
    from churnops.features.table import read_table

    offline = read_table(features_dir=pipeline.ws.features, start=END, end=END)
    assert 0 < len(offline) <= CUSTOMERS
    assert (
        f"materialized {len(offline):,} customers at {END:%Y-%m-%d %H:%M:%S} UTC"
        in pipeline.outputs["materialize"]
    )
    assert len(project_keys(pipeline.redis)) == len(offline)
    online = read_online(
        store=open_store(home=pipeline.ws.home), customer_ids=offline["customer_id"].tolist()
    )
    assert (online["snapshot_ts"] == END).all()
    for name in load_feature_contract().feature_names:
        assert online[name].tolist() == offline[name].tolist(), name
