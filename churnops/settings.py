"""The workspace ("home"): every file a run writes lives under one folder.

Two homes never share state, so tests run in temporary homes and a user can keep
several experiments side by side. Stage code never reads this module: the CLI
resolves a `Workspace` and passes explicit paths down (wiring apart from logic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "CHURNOPS_HOME"
REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_REPO = REPO_ROOT / "feature_repo"

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
    """All paths of one churnops home.

    Attributes:
        home: The root folder; everything below is derived from it.
    """

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def landing(self) -> Path:
        return self.data / "landing"

    @property
    def lake(self) -> Path:
        return self.data / "lake"

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def ingestion_log(self) -> Path:
        return self.data / "ingestion_log.db"

    @property
    def features(self) -> Path:
        return self.data / "features"

    @property
    def feast(self) -> Path:
        return self.data / "feast"

    @property
    def mlruns(self) -> Path:
        return self.home / "mlruns"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.mlruns / "artifacts"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def audit_db(self) -> Path:
        return self.data / "audit.db"

    @property
    def predictions(self) -> Path:
        return self.data / "predictions"


def resolve_home(home: Path | None = None) -> Path:
    """Pick the home: the explicit argument, else `$CHURNOPS_HOME`, else the repository root.

    Args:
        home: A folder given on the command line, or None.

    Returns:
        The absolute home folder.
    """
    if home is None:
        env = os.environ.get(HOME_ENV)
        home = Path(env) if env else REPO_ROOT
    return home.expanduser().resolve()


def open_workspace(home: Path | None = None) -> Workspace:
    """Resolve the home, export it for Feast's `feature_store.yaml`, and silence telemetry.

    Args:
        home: A folder given on the command line, or None for the default.

    Returns:
        The workspace rooted at the resolved home.
    """
    ws = Workspace(resolve_home(home))
    os.environ[HOME_ENV] = str(ws.home)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    return ws
