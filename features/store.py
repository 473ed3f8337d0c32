"""Open the Feast store of a churnops home, and apply the definitions (what `feast apply` does)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from features.definitions import HOME_ENV, repo_definitions
from features.naming import FEAST_SUBDIR

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def open_store(*, home: Path) -> FeatureStore:
    """The Feast store of a home: `feature_repo/` with its paths under `home`.

    Args:
        home: The churnops home; exported as CHURNOPS_HOME, which `feature_store.yaml` and the
            repository's source path read.

    Returns:
        The store.
    """
    home = Path(home).expanduser().resolve()
    os.environ[HOME_ENV] = str(home)
    home.joinpath(*FEAST_SUBDIR).mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(FEATURE_REPO))


def apply(store: FeatureStore) -> None:
    """Register the entity, source, view and service and create the online table (`feast apply`).

    Args:
        store: A store from `open_store` (CHURNOPS_HOME names the home whose table the source reads).
    """
    d = repo_definitions()
    store.apply([d.entity, d.source, d.view, d.service])


def is_applied(store: FeatureStore) -> bool:
    """Whether the registry already holds the current definitions (so `apply` can be skipped).

    Args:
        store: The store.

    Returns:
        True when the feature service and view exist and equal the definitions built now.
    """
    from feast.errors import FeastObjectNotFoundException

    d = repo_definitions()
    try:
        view = store.get_feature_view(d.view.name)
        store.get_feature_service(d.service.name)
    except FeastObjectNotFoundException:
        return False
    return view.features == d.view.features and view.ttl == d.view.ttl and view.batch_source == d.source
