"""The champion (and challenger) model, loaded from the MLflow registry and swapped when aliases move.

A request reads `ModelWatcher.current` once and uses that `ModelSet` to the end, so swapping
the attribute (atomic in Python) never changes the model under a request in flight, and a
new version is fully loaded before anyone can see it.

The gate is the only road to serving: a move of `champion` is followed only when the audit table
(`monitoring.audit`) holds the decision behind it (a promotion, a forced promotion with its
reason, or a rollback). Anyone with write access to the registry can move an alias — in the MLflow
UI, with any client — without the gate's checks or an audit record; such a move is reported
(`ModelSet.unaudited`: `/ready`, `/metrics`, a warning in the log) and the previous champion
keeps answering.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from churnops.errors import REFUSED, ChurnopsError
from churnops.monitoring.audit import authorized_champions
from churnops.serving.scoring import CompiledPipeline, UnsupportedModel, compile_pipeline

log = logging.getLogger(__name__)

_THREAD_STATE = threading.local()
NO_CHAMPION_HINT = "run `churnops train` then `churnops promote` to register and promote a model"


class ModelLoadError(ChurnopsError, RuntimeError):
    """A registered model version cannot be served (unreadable, or needs columns we lack)."""

    exit_code = REFUSED


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version, ready to score.

    Attributes:
        name: The registered model's name.
        version: The model version (MLflow versions are strings of digits).
        model: The fitted scikit-learn estimator (a Pipeline taking a DataFrame).
        input_columns: The columns the model takes, in its signature's order.
        compiled: The model's fast scoring path, or None when it is scored by `predict_proba`.
        fast_path_note: Why there is no fast path (None when there is one).
    """

    name: str
    version: str
    model: Any
    input_columns: tuple[str, ...]
    compiled: CompiledPipeline | None = field(default=None, compare=False, repr=False)
    fast_path_note: str | None = field(default=None, compare=False)
    threads: ThreadpoolController = field(default_factory=ThreadpoolController, compare=False, repr=False)

    def predict(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Churn probabilities of the rows, computed on the calling thread alone.

        The compiled path (`serving.scoring`), checked against `predict_proba` when the model
        was loaded, is used when there is one; it starts no thread pool. Otherwise the rows go
        through `predict_proba` with OpenMP (histogram gradient boosting opens a parallel region
        per tree) and BLAS pools limited to one thread: on a few rows, waking and joining worker
        threads costs far more than the work, the more so on a busy machine with few cores.
        OpenMP's limit is per thread, so it is set once in each thread that scores with this
        model and left in place.

        Args:
            columns: Column name → values (one per row) for at least `input_columns`; a
                DataFrame works.

        Returns:
            The positive-class probability per row.
        """
        n = len(columns[self.input_columns[0]])
        if self.compiled is not None:
            return self.compiled.predict(columns, n)
        if getattr(_THREAD_STATE, "limited_by", None) is not self.threads:
            self.threads.limit(limits=1)
            _THREAD_STATE.limited_by = self.threads
        frame = pd.DataFrame({name: columns[name] for name in self.input_columns})
        return self.model.predict_proba(frame)[:, 1]


@dataclass(frozen=True)
class UnauditedChampion:
    """A version the champion alias points at without an audited decision behind it.

    Attributes:
        version: The version the alias points at (not served).
        reason: Why it is not served and what to do, in one paragraph.
    """

    version: str
    reason: str


@dataclass(frozen=True)
class ModelSet:
    """What the aliases resolved to at one refresh.

    Attributes:
        champion: The model answering requests, or None when there is no champion yet.
        challenger: The model scored in shadow mode, or None.
        unaudited: The champion alias's version when the audit table does not allow it (the
            previous champion, if any, is still `champion`); None when the alias is served.
    """

    champion: LoadedModel | None
    challenger: LoadedModel | None
    unaudited: UnauditedChampion | None = None


def unaudited_reason(
    *, model: str, alias: str, version: str, allowed: frozenset[str], serving: str | None, audit_db: Path
) -> str:
    """Why a champion alias's version is not served, and how to serve it through the gate.

    Args:
        model: The registered model.
        alias: The champion alias.
        version: The version the alias points at.
        allowed: The versions the audit table allows (`monitoring.audit.authorized_champions`).
        serving: The version answering instead, or None when none does.
        audit_db: The audit database that was read.

    Returns:
        One paragraph.
    """
    audited = ", ".join(sorted(allowed, key=int)) if allowed else None
    kept = f"version {serving} keeps answering" if serving else "no model answers until it is resolved"
    back = f"move '{alias}' back to version {audited}" if audited else f"remove alias '{alias}'"
    return (
        f"{model}@{alias} points at version {version}, but the audit table ({audit_db}) records no "
        f"promotion or rollback to it (audited champion: {audited or 'none'}): the alias was moved "
        f"outside `churnops promote` / `churnops rollback`, so version {version} is not served and "
        f"{kept}. To serve it, {back} and promote it through the gate (`churnops promote`, or "
        "`--force --reason TEXT`)."
    )


def load_version(
    *, tracking_uri: str, name: str, version: str, available: list[str], probe: pd.DataFrame
) -> LoadedModel:
    """Load one registered version and check that the online features cover its inputs.

    Args:
        tracking_uri: The MLflow tracking (and registry) URI.
        name: The registered model's name.
        version: The version to load.
        available: The columns online serving can provide.
        probe: Feature rows on which the compiled scoring path must match `predict_proba`.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: When the version cannot be loaded or needs columns serving lacks.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import Model

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="churnops-model-") as tmp:
        try:
            # Resolved through an explicit client: a bare `models:/` URI resolves against the
            # process-wide default registry (a `mlflow.db` in the working directory), not ours.
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            location = client.get_model_version_download_uri(name, version)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri
            )
            signature = Model.load(Path(local) / "MLmodel").signature
            model = mlflow.sklearn.load_model(local)
        except Exception as exc:
            raise ModelLoadError(f"cannot load {uri}: {exc}") from exc
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        columns = [str(c) for c in signature.inputs.input_names()]
    elif hasattr(model, "feature_names_in_"):
        columns = [str(c) for c in model.feature_names_in_]
    else:
        columns = list(available)
    missing = [c for c in columns if c not in available]
    if missing:
        raise ModelLoadError(
            f"{uri} needs input columns {missing} that the online features do not provide "
            f"(available: {available})"
        )
    if not hasattr(model, "predict_proba"):
        raise ModelLoadError(f"{uri} is a {type(model).__name__}, which has no predict_proba")
    compiled, note = None, None
    try:
        compiled = compile_pipeline(model, probe=probe[columns])
    except UnsupportedModel as exc:
        note = str(exc)
        log.warning("%s is scored through predict_proba (slower): %s", uri, exc)
    return LoadedModel(
        name=name,
        version=str(version),
        model=model,
        input_columns=tuple(columns),
        compiled=compiled,
        fast_path_note=note,
    )


def _sqlite_store_missing(tracking_uri: str) -> bool:
    # Asking MLflow about a SQLite store that does not exist yet would create it (and race any
    # `churnops train` creating it at the same time): treat it as "no model yet" instead.
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return False
    path = tracking_uri[len("sqlite:///") :]
    return bool(path) and path != ":memory:" and not Path(path).exists()


class ModelWatcher:
    """Resolves the aliases, loads what they point to, and polls for moves in a background thread.

    Args:
        tracking_uri: The MLflow tracking (and registry) URI.
        model_name: The registered model.
        champion_alias: The alias answering requests.
        challenger_alias: The alias scored in shadow mode.
        with_challenger: Load the challenger too (shadow mode).
        available_columns: The columns online serving can provide.
        audit_db: The audit table that must hold the decision behind each champion.
        probe: Feature rows that check each loaded model's compiled scoring path.
        interval_s: Seconds between polls.
        on_change: Called with the new `ModelSet` after every swap.
        on_error: Called with a message when a refresh fails (the previous models stay).
        on_unaudited: Called when the champion alias starts or stops pointing at a version the
            audit table does not allow (with that version's report, or None once it is resolved).
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        model_name: str,
        champion_alias: str,
        challenger_alias: str,
        with_challenger: bool,
        available_columns: list[str],
        interval_s: float,
        audit_db: Path,
        probe: pd.DataFrame,
        on_change: Callable[[ModelSet], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_unaudited: Callable[[UnauditedChampion | None], None] | None = None,
    ) -> None:
        self._uri = tracking_uri
        self._name = model_name
        self._aliases = (champion_alias, challenger_alias)
        self._with_challenger = with_challenger
        self._available = list(available_columns)
        self._probe = probe
        self._interval = interval_s
        self._on_change = on_change
        self._on_error = on_error
        self._audit_db = audit_db
        self._on_unaudited = on_unaudited
        self._current = ModelSet(champion=None, challenger=None)
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ModelSet:
        """The models to use now; read it once per request."""
        return self._current

    @property
    def last_error(self) -> str | None:
        """The last refresh's error, or None when it succeeded."""
        return self._last_error

    def _resolve(self, alias: str) -> str | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return str(
                MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
                .get_model_version_by_alias(self._name, alias)
                .version
            )
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _load(self, version: str | None, cache: dict[str, LoadedModel]) -> LoadedModel | None:
        if version is None:
            return None
        if version not in cache:
            cache[version] = load_version(
                tracking_uri=self._uri,
                name=self._name,
                version=version,
                available=self._available,
                probe=self._probe,
            )
        return cache[version]

    def refresh(self) -> bool:
        """Resolve the aliases once and swap in what they point to.

        Returns:
            True when the champion or challenger changed.

        Raises:
            ModelLoadError: When a version cannot be served (the previous models stay).
            MlflowException: When the registry cannot be read.
        """
        with self._lock:
            if _sqlite_store_missing(self._uri):
                champion_v = challenger_v = None
            else:
                champion_v = self._resolve(self._aliases[0])
                challenger_v = self._resolve(self._aliases[1]) if self._with_challenger else None
            old = self._current
            champion_v, unaudited = self._audited(champion_v, serving=old.champion)
            cache = {m.version: m for m in (old.champion, old.challenger) if m is not None}
            new = ModelSet(
                champion=self._load(champion_v, cache),
                challenger=self._load(challenger_v, cache),
                unaudited=unaudited,
            )
            swapped = (new.champion, new.challenger) != (old.champion, old.challenger)
            if new != old:
                self._current = new
            self._last_error = None
        if unaudited != old.unaudited:
            self._report_unaudited(unaudited)
        if swapped and self._on_change is not None:
            self._on_change(new)
        return swapped

    def _audited(
        self, version: str | None, *, serving: LoadedModel | None
    ) -> tuple[str | None, UnauditedChampion | None]:
        """The champion version to serve: the alias's when audited, else the one serving now."""
        if version is None:
            return None, None
        allowed = authorized_champions(db_path=self._audit_db, model=self._name)
        if version in allowed:
            return version, None
        kept = None if serving is None else serving.version
        reason = unaudited_reason(
            model=self._name,
            alias=self._aliases[0],
            version=version,
            allowed=allowed,
            serving=kept,
            audit_db=self._audit_db,
        )
        return kept, UnauditedChampion(version=version, reason=reason)

    def _report_unaudited(self, unaudited: UnauditedChampion | None) -> None:
        if unaudited is not None:
            log.warning("%s", unaudited.reason)
        else:
            log.info("%s@%s is audited again and served", self._name, self._aliases[0])
        if self._on_unaudited is not None:
            self._on_unaudited(unaudited)

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            self._last_error = str(exc)
            log.warning("model refresh failed, keeping the current models: %s", exc)
            if self._on_error is not None:
                self._on_error(str(exc))

    def start(self) -> None:
        """Load the models now, then keep polling in a daemon thread until `stop`."""
        self._safe_refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="churnops-model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._safe_refresh()

    def stop(self) -> None:
        """Stop polling and wait for the thread (bounded by one refresh)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
