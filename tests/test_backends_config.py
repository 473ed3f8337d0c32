"""Backends chosen by environment: the checks, the workspace's URIs and paths, the Feast YAML choice.

No server is needed: these only read configuration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from churnops.config import (
    ARTIFACT_ROOT_ENV,
    FEATURE_STORE_YAML_ENV,
    TRACKING_URI_ENV,
    Backends,
    ConfigError,
)
from churnops.features import store as feature_store
from churnops.settings import FEATURE_REPO, Workspace, open_workspace

HYBRID = FEATURE_REPO / "examples" / "feature_store.postgres-redis.yaml"
PG_URI = "postgresql+psycopg://postgres@127.0.0.1:5432/mlflow"


@pytest.fixture(autouse=True)
def _no_backend_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # open_workspace exports CHURNOPS_HOME (and the YAML path): restore them after each test.
    for name in (TRACKING_URI_ENV, ARTIFACT_ROOT_ENV, FEATURE_STORE_YAML_ENV, "CHURNOPS_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_the_feature_store_variable_names_agree() -> None:
    assert feature_store.FEATURE_STORE_YAML_ENV == FEATURE_STORE_YAML_ENV


def test_unset_variables_give_the_embedded_stores(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path)
    assert ws.backends == Backends()
    assert ws.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert ws.tracking_db == tmp_path / "mlruns" / "mlflow.db"
    assert ws.artifacts == tmp_path / "mlruns" / "artifacts"
    assert ws.feature_store_yaml == FEATURE_REPO / "feature_store.yaml"
    assert feature_store.feature_store_yaml() == FEATURE_REPO / "feature_store.yaml"


def test_empty_variables_count_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (TRACKING_URI_ENV, ARTIFACT_ROOT_ENV, FEATURE_STORE_YAML_ENV):
        monkeypatch.setenv(name, "  ")
    assert open_workspace(tmp_path).backends == Backends()


def test_variables_select_the_production_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TRACKING_URI_ENV, PG_URI)
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "shared/artifacts")
    monkeypatch.setenv(FEATURE_STORE_YAML_ENV, str(Path("..") / tmp_path.name / "prod.yaml"))
    (tmp_path / "prod.yaml").write_text("project: churnops\n", encoding="utf-8")
    ws = open_workspace(tmp_path / "home")
    assert ws.tracking_uri == PG_URI
    assert ws.tracking_db is None
    assert ws.artifacts == tmp_path / "shared" / "artifacts"
    assert ws.feature_store_yaml == tmp_path / "prod.yaml"
    # Exported absolute, so the store opens the same file from any working directory.
    monkeypatch.chdir(FEATURE_REPO)
    assert feature_store.feature_store_yaml() == tmp_path / "prod.yaml"
    # The paths of the home itself do not move.
    assert ws.mlruns == tmp_path / "home" / "mlruns"
    assert ws.feast == tmp_path / "home" / "data" / "feast"


def test_a_workspace_built_directly_ignores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRACKING_URI_ENV, PG_URI)
    assert Workspace(tmp_path).tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_a_sqlite_tracking_uri_elsewhere_names_its_file(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, backends=Backends(tracking_uri="sqlite:////srv/mlflow/mlflow.db"))
    assert ws.tracking_db == Path("/srv/mlflow/mlflow.db")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("./mlruns", r"CHURNOPS_TRACKING_URI='./mlruns' is not a database URI: give an MLflow backend store"),
        (
            "file:///srv/mlruns",
            r"is not a database URI: .*postgresql\+psycopg://postgres@127.0.0.1:5432/mlflow",
        ),
        (
            "postgresql://u@db:5432/mlflow",
            r"names no driver, so SQLAlchemy would load psycopg2, .* postgresql\+psycopg",
        ),
    ],
)
def test_unusable_tracking_uris_are_refused(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Backends.from_env({TRACKING_URI_ENV: value})


def test_a_tracking_server_or_other_database_is_accepted() -> None:
    for uri in ("http://mlflow.internal:5000", "mysql+pymysql://u@db/mlflow", "sqlite:////tmp/m.db"):
        assert Backends.from_env({TRACKING_URI_ENV: uri}).tracking_uri == uri


def test_an_artifact_uri_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"CHURNOPS_ARTIFACT_ROOT='s3://bucket/a' is a URI: give a folder"):
        Backends.from_env({ARTIFACT_ROOT_ENV: "s3://bucket/a"})


def test_a_missing_feature_store_yaml_is_refused_by_the_workspace_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv(FEATURE_STORE_YAML_ENV, str(missing))
    with pytest.raises(ConfigError, match=rf"CHURNOPS_FEATURE_STORE_YAML='{missing}': no such file"):
        open_workspace(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=rf"CHURNOPS_FEATURE_STORE_YAML names {missing}, which is not"
    ):
        feature_store.open_store(home=tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"fs_yaml names {missing}, which is not a file"):
        feature_store.open_store(home=tmp_path, fs_yaml=missing)


def test_the_hybrid_example_names_its_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path))
    for name in ("FEAST_PG_HOST", "FEAST_PG_USER", "FEAST_PG_PASSWORD", "FEAST_REGISTRY_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEAST_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("FEAST_REDIS_PASSWORD", "")
    monkeypatch.setenv("FEAST_REDIS_DB", "3")
    # Variables in comments do not count; an empty value counts as set.
    assert feature_store.unset_variables(HYBRID) == [
        "FEAST_PG_HOST",
        "FEAST_PG_PASSWORD",
        "FEAST_PG_USER",
        "FEAST_REGISTRY_DB",
    ]
    with pytest.raises(ValueError, match=r"uses environment variables that are not set: FEAST_PG_HOST, "):
        feature_store.open_store(home=tmp_path / "home", fs_yaml=HYBRID)


def test_the_embedded_default_needs_only_the_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path))
    assert feature_store.unset_variables(FEATURE_REPO / "feature_store.yaml") == []
