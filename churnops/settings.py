"""The workspace ("home"): every file a run writes lives under one folder.

Two homes never share state, so tests run in temporary homes and a user can keep
several experiments side by side. Stage code never reads this module: the CLI
resolves a `Workspace` and passes explicit paths down (wiring apart from logic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from churnops.config import FEATURE_STORE_YAML_ENV, Backends
from churnops.feature_repo import FEATURE_REPO
from churnops.storage import layout
from churnops.storage.layout import HOME_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]

# Nothing in this project may try to reach the internet: MLflow, Feast and
# Evidently all phone home unless told not to.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "FEAST_USAGE": "False",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@dataclass(frozen=True)
class Workspace:
    """All paths of one churnops home, and the backends it uses.

    Attributes:
        home: The root folder; everything below is derived from it.
        backends: Production backends replacing the home's embedded stores (see
            `churnops.config`); `open_workspace` reads them from the environment.
    """

    home: Path
    backends: Backends = field(default_factory=Backends)

    @property
    def data(self) -> Path:
        return self.home / layout.DATA_DIR

    @property
    def landing(self) -> Path:
        return self.home / layout.LANDING_DIR

    @property
    def lake(self) -> Path:
        return self.home / layout.LAKE_DIR

    @property
    def quarantine(self) -> Path:
        return self.home / layout.QUARANTINE_DIR

    @property
    def ingestion_log(self) -> Path:
        return self.home / layout.INGESTION_LOG

    @property
    def features(self) -> Path:
        return self.home / layout.FEATURES_DIR

    @property
    def feast(self) -> Path:
        return self.home / layout.FEAST_DIR

    @property
    def mlruns(self) -> Path:
        return self.home / layout.MLRUNS_DIR

    @property
    def tracking_uri(self) -> str:
        return self.backends.tracking_uri or f"sqlite:///{self.home / layout.TRACKING_DB}"

    @property
    def tracking_db(self) -> Path | None:
        """The SQLite file of the tracking store, or None when it is a server (PostgreSQL, ...)."""
        uri = self.tracking_uri
        if not uri.startswith("sqlite:///"):
            return None
        return Path(uri.removeprefix("sqlite:///"))

    @property
    def artifacts(self) -> Path:
        return self.backends.artifact_root or self.home / layout.ARTIFACTS_DIR

    @property
    def feature_store_yaml(self) -> Path:
        """The `feature_store.yaml` that `features.store.open_store` opens for this workspace."""
        return self.backends.feature_store_yaml or FEATURE_REPO / "feature_store.yaml"

    @property
    def reports(self) -> Path:
        return self.home / layout.REPORTS_DIR

    @property
    def audit_db(self) -> Path:
        return self.home / layout.AUDIT_DB

    @property
    def predictions(self) -> Path:
        return self.home / layout.PREDICTIONS_DIR


def default_home() -> Path:
    """The home when none is named: the source checkout's root, or the current folder.

    An installed wheel has no checkout; writing into site-packages would be wrong.
    """
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


def resolve_home(home: Path | None = None) -> Path:
    """Pick the home: the explicit argument, else `$CHURNOPS_HOME`, else `default_home()`.

    Args:
        home: A folder given on the command line, or None.

    Returns:
        The absolute home folder.
    """
    if home is None:
        env = os.environ.get(HOME_ENV)
        home = Path(env) if env else default_home()
    return home.expanduser().resolve()


def open_workspace(home: Path | None = None) -> Workspace:
    """Resolve the home and the backends, export them for Feast, and silence telemetry.

    Args:
        home: A folder given on the command line, or None for the default.

    Returns:
        The workspace rooted at the resolved home, with the backends the environment names.

    Raises:
        churnops.config.ConfigError: When a backend variable (`CHURNOPS_TRACKING_URI`,
            `CHURNOPS_ARTIFACT_ROOT`, `CHURNOPS_FEATURE_STORE_YAML`) is unusable.
    """
    ws = Workspace(resolve_home(home), backends=Backends.from_env())
    os.environ[HOME_ENV] = str(ws.home)
    if ws.backends.feature_store_yaml is not None:
        # Absolute from here on, so `open_store` finds the same file whatever the cwd becomes.
        os.environ[FEATURE_STORE_YAML_ENV] = str(ws.backends.feature_store_yaml)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    return ws
