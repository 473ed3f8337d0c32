"""MLflow plumbing: the experiment, the code version, the model's dependencies and trusted types.

MLflow facts this relies on (3.17): the SQLite store is created on first use (so one process
creates it before any parallel use), every experiment gets an explicit artifact location, sklearn
models are saved with skops, which refuses types not listed as trusted when loading.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

EXPERIMENT = "churn"
# The MLflow UI opens an experiment by its kind; without this tag MLflow 3 guesses GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

_REPO = Path(__file__).resolve().parents[1]
# Packages whose types a churn model may contain; anything else found by skops is refused.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.")
# HistGradientBoosting keeps `functools.partial(sklearn.utils.validation.check_array, ...)`; the
# wrapped function is listed (and checked) on its own.
_TRUSTED_NAMES = frozenset({"functools.partial"})
_MODEL_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "scipy", "pandas", "mlflow")


def ensure_experiment(*, client: MlflowClient, artifact_location: str, name: str = EXPERIMENT) -> str:
    """Get or create the experiment, insisting on its artifact location, and mark it model training.

    Args:
        client: A client on the tracking store.
        artifact_location: Where the experiment's artifacts live (a path or URI).
        name: The experiment's name.

    Returns:
        The experiment id.

    Raises:
        ValueError: When the experiment exists with artifacts elsewhere (a moved or shared store).
    """
    wanted = _as_uri(artifact_location)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=wanted, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
            )
        except MlflowException as exc:
            # Another process created it between our lookup and our create.
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if _as_uri(experiment.artifact_location) != wanted:
        raise ValueError(
            f"MLflow experiment {name!r} stores its artifacts in {experiment.artifact_location}, not "
            f"{wanted}: the tracking store belongs to another home; use that home or a fresh one"
        )
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id


def _as_uri(location: str) -> str:
    if "://" in location or location.startswith("file:"):
        return location.rstrip("/")
    return Path(location).resolve().as_uri()


def code_version() -> str:
    """The git commit of the code, or the installed package version when not in a git checkout.

    Returns:
        `git:<sha>` or `package:<version>`.
    """
    try:
        completed = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        completed = None
    if completed is not None and completed.returncode == 0 and completed.stdout.strip():
        return f"git:{completed.stdout.strip()}"
    return f"package:{importlib.metadata.version('churnops')}"


def model_requirements() -> list[str]:
    """Exact pins of what loading the model needs (listing them spares MLflow a slow inference).

    Returns:
        `name==version` lines.
    """
    return [f"{name}=={importlib.metadata.version(name)}" for name in _MODEL_REQUIREMENTS]


def trusted_types(model: object) -> list[str]:
    """The non-default types skops must trust to load this model: sklearn, NumPy, SciPy (and partial).

    Args:
        model: The fitted model.

    Returns:
        The sorted type names.

    Raises:
        ValueError: When the model contains a type from another package (custom code).
    """
    import skops.io

    found = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    foreign = [
        name for name in found if not name.startswith(_TRUSTED_PREFIXES) and name not in _TRUSTED_NAMES
    ]
    if foreign:
        raise ValueError(
            f"the model contains types outside scikit-learn/NumPy/SciPy: {foreign}; serving could "
            "not load it safely"
        )
    return found


def content_hash(frame: pd.DataFrame) -> str:
    """A SHA-256 of a frame's column names, dtypes and values, in row order.

    Args:
        frame: The frame.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}:{dtype};".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def hash_entities(values: pd.Series, *, namespace: str) -> pd.Series:
    """Pseudonymise entity keys with SHA-256 (namespaced, so the same key hashes apart per feature set).

    Args:
        values: The keys.
        namespace: A prefix mixed into every hash, e.g. `customer_profile:v1`.

    Returns:
        Hex digests, same index.
    """
    return values.astype(str).map(lambda key: hashlib.sha256(f"{namespace}:{key}".encode()).hexdigest())
