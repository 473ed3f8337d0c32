"""Production backends, chosen by environment variables (12-factor); unset means embedded.

- `CHURNOPS_TRACKING_URI`: the MLflow tracking + registry store, a database URI
  (default `sqlite:///<home>/mlruns/mlflow.db`).
- `CHURNOPS_ARTIFACT_ROOT`: the folder of the `churn` experiment's artifacts
  (default `<home>/mlruns/artifacts`).
- `CHURNOPS_FEATURE_STORE_YAML`: the `feature_store.yaml` Feast opens
  (default `feature_repo/feature_store.yaml`).
- `CHURNOPS_ENGINE`: what computes the feature snapshots, `duckdb` (default, in process) or
  `spark` (the same SQL on a Spark session; `features.spark_engine`).

The values are checked here, once, when the workspace opens, so a typo fails before any
stage starts with a message that says what to set instead.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from churnops.errors import ChurnopsError
from churnops.storage.layout import FEATURE_STORE_YAML_ENV

TRACKING_URI_ENV = "CHURNOPS_TRACKING_URI"
ARTIFACT_ROOT_ENV = "CHURNOPS_ARTIFACT_ROOT"
ENGINE_ENV = "CHURNOPS_ENGINE"
ENGINES = ("duckdb", "spark")

TRACKING_EXAMPLE = "postgresql+psycopg://postgres@127.0.0.1:5432/mlflow"


class ConfigError(ChurnopsError, ValueError):
    """A backend variable holds a value churnops cannot use."""


@dataclass(frozen=True)
class Backends:
    """The backends configured for a workspace; None means the home's embedded store.

    Attributes:
        tracking_uri: The MLflow tracking and registry URI.
        artifact_root: The folder of the MLflow experiment's artifacts (absolute).
        feature_store_yaml: The Feast `feature_store.yaml` (absolute, an existing file).
        engine: What computes the feature snapshots (`ENGINES`).
    """

    tracking_uri: str | None = None
    artifact_root: Path | None = None
    feature_store_yaml: Path | None = None
    engine: str = "duckdb"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Backends:
        """Read and check the backend variables; empty values count as unset.

        Args:
            environ: The environment (default: `os.environ`).

        Returns:
            The configured backends.

        Raises:
            ConfigError: When a variable is set to something unusable.
        """
        env = os.environ if environ is None else environ
        tracking = env.get(TRACKING_URI_ENV, "").strip()
        artifacts = env.get(ARTIFACT_ROOT_ENV, "").strip()
        yaml_file = env.get(FEATURE_STORE_YAML_ENV, "").strip()
        engine = env.get(ENGINE_ENV, "").strip()
        return cls(
            tracking_uri=check_tracking_uri(tracking) if tracking else None,
            artifact_root=check_artifact_root(artifacts) if artifacts else None,
            feature_store_yaml=check_feature_store_yaml(yaml_file) if yaml_file else None,
            engine=check_engine(engine, origin=ENGINE_ENV) if engine else "duckdb",
        )


def check_engine(value: str, *, origin: str) -> str:
    """Check the name of a feature engine.

    Args:
        value: The name, any case (`duckdb` or `spark`).
        origin: Where it came from, for the message (a variable or an option).

    Returns:
        The name in lower case.

    Raises:
        ConfigError: When it names no engine.
    """
    name = value.strip().lower()
    if name not in ENGINES:
        raise ConfigError(f"{origin}={value!r} is not a feature engine: use one of {', '.join(ENGINES)}")
    return name


def check_tracking_uri(value: str) -> str:
    """Check an MLflow backend store URI.

    Args:
        value: The URI, e.g. `postgresql+psycopg://user@host:5432/mlflow`.

    Returns:
        The URI unchanged.

    Raises:
        ConfigError: When it is a path or file URI (MLflow 3.17 refuses the file store), or a
            PostgreSQL URI without a driver while psycopg2 (SQLAlchemy's default) is missing.
    """
    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    if not scheme or scheme == "file":
        raise ConfigError(
            f"{TRACKING_URI_ENV}={value!r} is not a database URI: give an MLflow backend store such as "
            f"{TRACKING_EXAMPLE} or sqlite:////absolute/path/mlflow.db (MLflow refuses a file store)"
        )
    if scheme in {"postgresql", "postgres"} and importlib.util.find_spec("psycopg2") is None:
        raise ConfigError(
            f"{TRACKING_URI_ENV}={value!r} names no driver, so SQLAlchemy would load psycopg2, which is not "
            f"installed: write postgresql+psycopg://... (psycopg 3), e.g. {TRACKING_EXAMPLE}"
        )
    return value


def check_artifact_root(value: str) -> Path:
    """Check the artifact folder (a local or mounted path; relative paths are taken from the cwd).

    Args:
        value: The folder.

    Returns:
        The absolute folder.

    Raises:
        ConfigError: When it is a URI.
    """
    if "://" in value or value.startswith("file:"):
        raise ConfigError(
            f"{ARTIFACT_ROOT_ENV}={value!r} is a URI: give a folder (a shared mount for a team), "
            "e.g. /srv/churnops/artifacts"
        )
    return Path(value).expanduser().resolve()


def check_feature_store_yaml(value: str) -> Path:
    """Check the Feast configuration file (relative paths are taken from the cwd).

    Args:
        value: The path of a `feature_store.yaml`.

    Returns:
        The absolute path.

    Raises:
        ConfigError: When no such file exists.
    """
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"{FEATURE_STORE_YAML_ENV}={value!r}: no such file ({path}); point it at a feature_store.yaml, "
            "e.g. feature_repo/examples/feature_store.postgres-redis.yaml"
        )
    return path
