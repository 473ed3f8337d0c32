"""Open the Feast store of a churnops home, and apply the definitions (what `feast apply` does).

The store's backends come from a `feature_store.yaml`: the repository's embedded default, or
the file `$CHURNOPS_FEATURE_STORE_YAML` names (e.g. `feature_repo/examples/`'s PostgreSQL
registry + Redis online store). The definitions are the same whatever the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from churnops.feature_repo import FEATURE_REPO
from churnops.features.definitions import repo_definitions
from churnops.storage.layout import FEAST_DIR, FEATURE_STORE_YAML_ENV, HOME_ENV

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_FEATURE_STORE_YAML = FEATURE_REPO / "feature_store.yaml"

# What os.path.expandvars (Feast's expansion) replaces: $NAME and ${NAME}.
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def feature_store_yaml(fs_yaml: Path | None = None) -> Path:
    """The `feature_store.yaml` to open: `fs_yaml`, else `$CHURNOPS_FEATURE_STORE_YAML`, else the default.

    Args:
        fs_yaml: An explicit file, or None.

    Returns:
        The absolute path of an existing file.

    Raises:
        FileNotFoundError: When the chosen file does not exist.
    """
    chosen = fs_yaml or os.environ.get(FEATURE_STORE_YAML_ENV, "").strip() or DEFAULT_FEATURE_STORE_YAML
    path = Path(chosen).expanduser().resolve()
    if not path.is_file():
        origin = "fs_yaml" if fs_yaml else FEATURE_STORE_YAML_ENV
        raise FileNotFoundError(
            f"{origin} names {path}, which is not a file: point it at a feature_store.yaml"
        )
    return path


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def unset_variables(path: Path) -> list[str]:
    """The environment variables a `feature_store.yaml` uses (outside comments) that are not set.

    Feast expands variables with `os.path.expandvars`, which leaves an unset one as literal
    text: the result is a connection error about a host called `${FEAST_PG_HOST}`.

    Args:
        path: The file.

    Returns:
        The unset names, sorted.
    """
    parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    names = {a or b for text in _strings(parsed) for a, b in _VARIABLE.findall(text)}
    return sorted(name for name in names if name not in os.environ)


def open_store(*, home: Path, fs_yaml: Path | None = None) -> FeatureStore:
    """The Feast store of a home: `feature_repo/`'s definitions with their paths under `home`.

    Args:
        home: The churnops home; exported as CHURNOPS_HOME, which `feature_store.yaml` and the
            repository's source path read.
        fs_yaml: The `feature_store.yaml` selecting the backends (default:
            `$CHURNOPS_FEATURE_STORE_YAML`, else `feature_repo/feature_store.yaml`).

    Returns:
        The store.

    Raises:
        FileNotFoundError: When the configuration file does not exist.
        ValueError: When it uses environment variables that are not set.
    """
    home = Path(home).expanduser().resolve()
    os.environ[HOME_ENV] = str(home)
    (home / FEAST_DIR).mkdir(parents=True, exist_ok=True)
    path = feature_store_yaml(fs_yaml)
    missing = unset_variables(path)
    if missing:
        raise ValueError(
            f"{path} uses environment variables that are not set: {', '.join(missing)}; export them "
            "(the file's comments say what each one is)"
        )
    from feast import FeatureStore

    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=path)


def apply(store: FeatureStore) -> None:
    """Register the entity, source, view and service and create the online table (`feast apply`).

    Args:
        store: A store from `open_store` (CHURNOPS_HOME names the home whose table the source reads).
    """
    from feast.repo_contents import RepoContents

    d = repo_definitions(offline_store=store.config.offline_store.type)
    store.apply([d.entity, d.source, d.view, d.service])
    # `FeatureStore.apply` creates the online tables but, unlike `feast apply`, does not record them
    # in the registry's infra; `feast plan` would then announce tables that already exist.
    contents = RepoContents(
        projects=[],
        data_sources=[d.source],
        feature_views=[d.view],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[d.entity],
        feature_services=[d.service],
        permissions=[],
    )
    _, _, infra = store.plan(contents)
    store.registry.update_infra(infra, store.project, commit=True)


def is_applied(store: FeatureStore) -> bool:
    """Whether the registry already holds the current definitions (so `apply` can be skipped).

    Args:
        store: The store.

    Returns:
        True when the feature service and view exist and equal the definitions built now.
    """
    from feast.errors import FeastObjectNotFoundException

    d = repo_definitions(offline_store=store.config.offline_store.type)
    try:
        view = store.get_feature_view(d.view.name)
        store.get_feature_service(d.service.name)
    except FeastObjectNotFoundException:
        return False
    return view.features == d.view.features and view.ttl == d.view.ttl and view.batch_source == d.source
