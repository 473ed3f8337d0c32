"""Production backends by configuration: the example `feature_store.yaml` files, and Redis.

These need Feast extras the embedded default does not install (`feast[redis]`, `feast[postgres]`,
`feast[spark]`); without them, or without a Redis server on 127.0.0.1:6379, the tests skip and say
why. They never hang: the Redis probe has a one-second timeout. The hybrid PostgreSQL + Redis
configuration runs for real in `test_backends_feast.py` and `test_backends_pipeline.py`.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path

import pytest
from test_backends_helpers import project_keys, redis_database
from test_features_lake import CONTRACT, START, random_records, write_lake

from churnops.features.store import FEATURE_REPO, unset_variables

EXAMPLES = sorted((FEATURE_REPO / "examples").glob("*.yaml"))
MODULES = {
    "feature_store.local-redis.yaml": ["feast.infra.online_stores.redis"],
    "feature_store.postgres-redis.yaml": [
        "feast.infra.online_stores.redis",
        "psycopg",
    ],
    "feature_store.production.yaml": [
        "feast.infra.online_stores.redis",
        "feast.infra.offline_stores.contrib.postgres_offline_store.postgres",
    ],
    "feature_store.spark.yaml": [
        "feast.infra.offline_stores.contrib.spark_offline_store.spark",
    ],
}
# The Spark example runs as is (tests/test_features_spark.py): its registry and online store are the
# home's SQLite files, like the default's.
ONLINE = {"feature_store.spark.yaml": "sqlite"}
ENV = {
    "FEAST_PG_USER": "feast",
    "FEAST_PG_PASSWORD": "secret",
    "FEAST_PG_HOST": "db.internal",
    "FEAST_REDIS_HOST": "redis.internal",
    "FEAST_REDIS_PASSWORD": "secret",
    "FEAST_REGISTRY_DB": "feast_registry",
    "FEAST_REDIS_DB": "4",
    "CHURNOPS_REDIS_DB": "9",
}


def _require(modules: list[str]) -> None:
    from feast.errors import FeastExtrasDependencyImportError

    for module in modules:
        try:
            importlib.import_module(module)
        except (ImportError, FeastExtrasDependencyImportError) as exc:
            pytest.skip(f"{module} cannot be imported ({exc}); install the Feast extra it needs")


def test_every_example_is_listed() -> None:
    assert [p.name for p in EXAMPLES] == sorted(MODULES)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_configuration_is_valid(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _require(MODULES[path.name])
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path))
    from feast.repo_config import load_repo_config

    assert unset_variables(path) == []
    config = load_repo_config(FEATURE_REPO, path)
    assert config.project == "churnops"
    assert config.online_store.type == ONLINE.get(path.name, "redis")
    assert config.entity_key_serialization_version == 3


def test_materialize_into_the_local_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require(["redis", "feast.infra.online_stores.redis"])
    from churnops.features.materialize import materialize
    from churnops.features.online import read_online
    from churnops.features.store import apply, open_store
    from churnops.features.table import read_table

    with redis_database(int(ENV["CHURNOPS_REDIS_DB"])) as redis:
        home = tmp_path / "home"
        write_lake(home / "data" / "lake", random_records(customers=20, days=15, seed=8))
        monkeypatch.setenv("CHURNOPS_REDIS_DB", ENV["CHURNOPS_REDIS_DB"])
        store = open_store(home=home, fs_yaml=FEATURE_REPO / "examples" / "feature_store.local-redis.yaml")
        apply(store)
        report = materialize(
            store=store,
            lake_dir=home / "data" / "lake",
            features_dir=home / "data" / "features",
            contract=CONTRACT,
            at=START + timedelta(days=15, hours=3),
        )
        offline = read_table(features_dir=home / "data" / "features", start=report.at, end=report.at)
        online = read_online(store=store, customer_ids=offline["customer_id"].tolist())
        assert len(project_keys(redis)) == len(offline) == report.customers
    assert (online["snapshot_ts"] == report.at).all()
    for name in CONTRACT.feature_names:
        assert online[name].tolist() == offline[name].tolist(), name
