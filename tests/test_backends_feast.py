"""Feast on the production hybrid: SQL registry on a real PostgreSQL, Redis online store, DuckDB offline.

`CHURNOPS_FEATURE_STORE_YAML` selects `feature_repo/examples/feature_store.postgres-redis.yaml`;
`features.store.open_store` / `apply` and `features.materialize.materialize` run unchanged. A fresh
PostgreSQL database holds the registry (dropped after); Redis database 12 holds the online rows
(the `churnops` keys are deleted before and after). Skips when either server does not answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from test_backends_helpers import (
    FEAST_PROJECT,
    Postgres,
    feast_env,
    postgres,
    project_keys,
    redis_database,
    scratch_database,
)
from test_features_lake import CONTRACT, START, random_records, write_lake

from churnops.config import FEATURE_STORE_YAML_ENV, TRACKING_URI_ENV
from churnops.settings import FEATURE_REPO, Workspace, open_workspace

HYBRID = FEATURE_REPO / "examples" / "feature_store.postgres-redis.yaml"
REDIS_DB = 12
CUSTOMERS = 20
KEY_TTL_SECONDS = 172800


@dataclass(frozen=True)
class Deployed:
    server: Postgres
    registry_db: str
    redis: Any
    ws: Workspace
    report: Any
    offline: pd.DataFrame


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    server = postgres()
    home = tmp_path_factory.mktemp("feast-pg-redis")
    with (
        redis_database(REDIS_DB) as redis,
        scratch_database(server, "feast") as registry_db,
        pytest.MonkeyPatch.context() as mp,
    ):
        pytest.importorskip("feast.infra.online_stores.redis", reason="install 'feast[redis]'")
        from churnops.features.materialize import materialize
        from churnops.features.store import apply, open_store
        from churnops.features.table import read_table

        for name, value in feast_env(server, registry_db=registry_db, redis_db=REDIS_DB).items():
            mp.setenv(name, value)
        mp.setenv(FEATURE_STORE_YAML_ENV, str(HYBRID))
        mp.setenv("CHURNOPS_HOME", str(home))
        mp.delenv(TRACKING_URI_ENV, raising=False)
        ws = open_workspace(home)
        write_lake(ws.lake, random_records(customers=CUSTOMERS, days=15, seed=8))
        store = open_store(home=ws.home)
        apply(store)
        report = materialize(
            store=store,
            lake_dir=ws.lake,
            features_dir=ws.features,
            contract=CONTRACT,
            at=START + timedelta(days=15, hours=3),
        )
        offline = read_table(features_dir=ws.features, start=report.at, end=report.at)
        yield Deployed(
            server=server, registry_db=registry_db, redis=redis, ws=ws, report=report, offline=offline
        )


def _fresh_store(deployed: Deployed) -> Any:
    from churnops.features.store import open_store

    # A new FeatureStore: nothing cached in this process, everything read from the servers.
    return open_store(home=deployed.ws.home)


def test_the_store_uses_the_configured_backends(deployed: Deployed) -> None:
    store = _fresh_store(deployed)
    assert deployed.ws.feature_store_yaml == HYBRID
    assert store.config.registry.registry_type == "sql"
    assert store.config.registry.path == (
        f"postgresql+psycopg://{deployed.server.user}:@127.0.0.1:5432/{deployed.registry_db}"
    )
    assert store.config.offline_store.type == "duckdb"
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == (
        f"127.0.0.1:6379,db={REDIS_DB},password=,socket_connect_timeout=5"
    )
    # The embedded SQLite files were never created.
    assert not (deployed.ws.feast / "registry.db").exists()
    assert not (deployed.ws.feast / "online.db").exists()


def test_the_registry_rows_are_in_postgresql(deployed: Deployed) -> None:
    from churnops.features.definitions import repo_definitions

    d = repo_definitions()
    with deployed.server.connect(deployed.registry_db) as con:
        projects = con.execute("SELECT project_id FROM projects").fetchall()
        entities = con.execute("SELECT project_id, entity_name FROM entities ORDER BY 2").fetchall()
        sources = con.execute("SELECT project_id, data_source_name FROM data_sources").fetchall()
        views = con.execute("SELECT project_id, feature_view_name FROM feature_views").fetchall()
        services = con.execute("SELECT project_id, feature_service_name FROM feature_services").fetchall()
    assert projects == [(FEAST_PROJECT,)]
    # Feast keeps its implicit dummy entity beside ours.
    assert entities == sorted(
        [(FEAST_PROJECT, "__dummy"), (FEAST_PROJECT, d.entity.name)], key=lambda r: r[1]
    )
    assert sources == [(FEAST_PROJECT, d.source.name)]
    assert views == [(FEAST_PROJECT, d.view.name)]
    assert services == [(FEAST_PROJECT, d.service.name)]


def test_a_fresh_store_sees_the_definitions_and_the_materialization(deployed: Deployed) -> None:
    from churnops.features.materialize import last_materialized
    from churnops.features.store import is_applied

    store = _fresh_store(deployed)
    assert is_applied(store)
    assert last_materialized(store, CONTRACT) == deployed.report.at


def test_online_rows_come_back_from_redis_equal_to_offline(deployed: Deployed) -> None:
    from churnops.features.online import read_online

    offline = deployed.offline
    assert deployed.report.customers == len(offline) > 0
    online = read_online(store=_fresh_store(deployed), customer_ids=offline["customer_id"].tolist())
    assert online["customer_id"].tolist() == offline["customer_id"].tolist()
    assert (online["snapshot_ts"] == deployed.report.at).all()
    for name in CONTRACT.feature_names:
        assert online[name].tolist() == offline[name].tolist(), name


def test_an_unknown_customer_reads_as_missing(deployed: Deployed) -> None:
    from churnops.features.online import read_online

    online = read_online(store=_fresh_store(deployed), customer_ids=["CUST-999999"])
    assert online["snapshot_ts"].isna().all()
    assert online[list(CONTRACT.feature_names)].isna().all(axis=None)


def test_one_redis_hash_per_customer_expiring_after_two_days(deployed: Deployed) -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    expected = {
        serialize_entity_key(
            EntityKey(join_keys=[CONTRACT.entity.join_key], entity_values=[Value(string_val=c)]),
            entity_key_serialization_version=3,
        )
        + FEAST_PROJECT.encode()
        for c in deployed.offline["customer_id"]
    }
    keys = set(project_keys(deployed.redis))
    assert keys == expected
    ttls = {deployed.redis.ttl(key) for key in keys}
    assert all(KEY_TTL_SECONDS - 600 < ttl <= KEY_TTL_SECONDS for ttl in ttls), ttls


def test_materialize_again_rewrites_the_same_keys(deployed: Deployed) -> None:
    from churnops.features.materialize import materialize
    from churnops.features.online import read_online

    later = deployed.report.at + timedelta(hours=1)
    report = materialize(
        store=_fresh_store(deployed),
        lake_dir=deployed.ws.lake,
        features_dir=deployed.ws.features,
        contract=CONTRACT,
        at=later,
    )
    assert report.customers == len(deployed.offline)
    assert len(project_keys(deployed.redis)) == len(deployed.offline)
    online = read_online(store=_fresh_store(deployed), customer_ids=deployed.offline["customer_id"].tolist())
    assert (online["snapshot_ts"] == later).all()
