"""The layout of a churnops home: every file a run writes lives under one folder.

The paths are relative to the home. `churnops.settings.Workspace` joins them to a resolved home
for the command line; the features stage joins them to `$CHURNOPS_HOME` when Feast loads
`feature_repo/` on its own. `feature_repo/feature_store.yaml` spells the Feast folder out again
(`${CHURNOPS_HOME}/data/feast/...`), since Feast reads YAML and not Python; a test keeps the two
in step.
"""

from __future__ import annotations

from pathlib import Path

HOME_ENV = "CHURNOPS_HOME"
# A `feature_store.yaml` selecting other backends than the embedded default one.
FEATURE_STORE_YAML_ENV = "CHURNOPS_FEATURE_STORE_YAML"
# The memory a feature build or refresh may use, e.g. `4GB` (`churnops.storage.duck.parse_size`).
MEMORY_LIMIT_ENV = "CHURNOPS_MEMORY_LIMIT"

DATA_DIR = Path("data")
LANDING_DIR = DATA_DIR / "landing"
LAKE_DIR = DATA_DIR / "lake"
QUARANTINE_DIR = DATA_DIR / "quarantine"
INGESTION_LOG = DATA_DIR / "ingestion_log.db"
FEATURES_DIR = DATA_DIR / "features"
FEAST_DIR = DATA_DIR / "feast"
AUDIT_DB = DATA_DIR / "audit.db"
PREDICTIONS_DIR = DATA_DIR / "predictions"
API_KEYS_FILE = DATA_DIR / "serving" / "api_keys.json"
# Files delivered through the intake API, content-addressed: `<source>/<sha256>.<ext>`.
UPLOADS_DIR = DATA_DIR / "uploads"
# Alerts: the file sink (one JSON object per line) and the deduplication state.
ALERTS_DIR = DATA_DIR / "alerts"
ALERTS_FILE = ALERTS_DIR / "alerts.jsonl"
ALERTS_STATE_DB = ALERTS_DIR / "state.db"
# One writer per home (`churnops.storage.lock`): the flock target and its holder record.
LOCK_FILE = DATA_DIR / ".churnops.lock"
LOCK_HOLDER_FILE = DATA_DIR / ".churnops.lock.json"

MLRUNS_DIR = Path("mlruns")
TRACKING_DB = MLRUNS_DIR / "mlflow.db"
ARTIFACTS_DIR = MLRUNS_DIR / "artifacts"

REPORTS_DIR = Path("reports")
# The Evidently workspace `churnops monitor` adds its snapshots to (`evidently ui --workspace`).
EVIDENTLY_DIR = Path("evidently")
