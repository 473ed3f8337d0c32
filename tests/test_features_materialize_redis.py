"""`materialize` into Redis (a non-SQLite online store) loads through Feast, in chunks.

Runs against the real local Redis on 127.0.0.1:6379 with a project name of its own (Feast
suffixes every Redis key with the project), deleting its keys afterwards. Skips, saying why,
when `feast[redis]` is missing or no server answers within a second.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from test_features_lake import CONTRACT, START, random_records, write_lake

from churnops.features.store import FEATURE_REPO

HOST, PORT, DB = "127.0.0.1", 6379, 0


@pytest.fixture()
def redis_project() -> Iterator[str]:
    try:
        import feast.infra.online_stores.redis  # noqa: F401
        import redis
    except ImportError as exc:
        pytest.skip(f"feast[redis] is not installed ({exc})")
    client = redis.Redis(host=HOST, port=PORT, db=DB, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server answered on {HOST}:{PORT} within 1 s ({exc})")
    project = f"churnops_test_{uuid.uuid4().hex[:12]}"
    try:
        yield project
    finally:
        keys = list(client.scan_iter(match=f"*{project}", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_redis_reads_back_what_sqlite_reads_back(
    redis_project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from feast import FeatureStore

    from churnops.features import online
    from churnops.features.materialize import materialize
    from churnops.features.online import read_online
    from churnops.features.store import apply, open_store
    from churnops.features.table import read_table

    home = tmp_path / "home"
    frames = random_records(customers=25, days=15, seed=31)
    write_lake(home / "data" / "lake", frames)
    sqlite_store = open_store(home=home)  # also exports CHURNOPS_HOME for the copied repo
    apply(sqlite_store)
    repo = tmp_path / "redis_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("examples", "__pycache__"))
    (repo / "feature_store.yaml").write_text(
        f"project: {redis_project}\n"
        "provider: local\n"
        "registry:\n"
        "  registry_type: sql\n"
        f"  path: sqlite:///{tmp_path / 'redis_registry.db'}\n"
        "offline_store:\n"
        "  type: duckdb\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{HOST}:{PORT},db={DB}"\n'
        "entity_key_serialization_version: 3\n",
        encoding="utf-8",
    )
    redis_store = FeatureStore(repo_path=str(repo))
    apply(redis_store)
    at = START + timedelta(days=15, hours=5, minutes=41, seconds=7)
    paths = {"lake_dir": home / "data" / "lake", "features_dir": home / "data" / "features"}
    sqlite_report = materialize(store=sqlite_store, contract=CONTRACT, at=at, **paths)
    # Several chunks through Feast's writer, not one.
    monkeypatch.setattr(online, "FEAST_CHUNK_ROWS", 7)
    redis_report = materialize(store=redis_store, contract=CONTRACT, at=at, **paths)
    assert redis_report.customers == sqlite_report.customers > 7

    ids = read_table(features_dir=paths["features_dir"], start=at, end=at)["customer_id"].tolist()
    from_redis = read_online(store=redis_store, customer_ids=[*ids, "CUST-NOPE"])
    from_sqlite = read_online(store=sqlite_store, customer_ids=[*ids, "CUST-NOPE"])
    pd.testing.assert_frame_equal(from_redis, from_sqlite, check_exact=True)
    assert (from_redis["snapshot_ts"].iloc[:-1] == at).all()
    assert from_redis.iloc[-1].drop("customer_id").isna().all()

    client = redis.Redis(host=HOST, port=PORT, db=DB, socket_timeout=1)
    try:
        assert len(list(client.scan_iter(match=f"*{redis_project}", count=1000))) == len(ids)
    finally:
        client.close()
