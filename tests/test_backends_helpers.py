"""The real servers behind the production-backend tests: PostgreSQL and Redis on 127.0.0.1.

A test that needs a server asks for it here; when the server does not answer within about a
second the test skips and says which server and why, so a laptop without them never hangs.
Each test gets its own PostgreSQL database (created, then dropped) and its own Redis database
number, whose `churnops` keys are deleted before and after.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

PG_HOST = "127.0.0.1"
PG_PORT = 5432
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
PROBE_SECONDS = 1.0
FEAST_PROJECT = "churnops"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL login that may create databases.

    Attributes:
        user: The role (trust authentication: no password).
    """

    user: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3) of a database on this server."""
        return f"postgresql+psycopg://{self.user}@{PG_HOST}:{PG_PORT}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg connection (autocommit) to a database on this server."""
        import psycopg

        # libpq treats connect timeouts under 2 s as 2 s; the port probe came first.
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=self.user, dbname=database, connect_timeout=2, autocommit=True
        )


def postgres() -> Postgres:
    """The local PostgreSQL server, or skip the test.

    Returns:
        A login (`$PGUSER`, else `postgres`, else `root`) that can create databases.
    """
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'feast[postgres]')")
    import psycopg

    if not _port_open(PG_HOST, PG_PORT):
        pytest.skip(f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT} within {PROBE_SECONDS} s")
    errors = []
    for user in dict.fromkeys(filter(None, [os.environ.get("PGUSER"), "postgres", "root"])):
        server = Postgres(user=user)
        try:
            with server.connect() as con:
                row = con.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                if row.fetchone() == (True,):
                    return server
                errors.append(f"{user}: may not create databases")
        except psycopg.Error as exc:
            errors.append(f"{user}: {str(exc).strip()}")
    pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT} has no usable login ({'; '.join(errors)})")


@contextmanager
def scratch_database(server: Postgres, purpose: str) -> Iterator[str]:
    """Create a uniquely named database, yield its name, drop it (closing anyone still connected).

    Args:
        server: The server.
        purpose: A short word that ends up in the name, for whoever lists the databases.

    Yields:
        The database name.
    """
    name = f"churnops_test_{purpose}_{uuid.uuid4().hex[:10]}"
    with server.connect() as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with server.connect() as con:
            # MLflow's and Feast's connection pools may still hold connections.
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def project_keys(client: Any) -> list[bytes]:
    """The Feast online-store keys of project `churnops` in the client's database.

    Args:
        client: A `redis.Redis` client.

    Returns:
        The keys (Feast ends each with the project name).
    """
    return list(client.scan_iter(match=f"*{FEAST_PROJECT}", count=1000))


@contextmanager
def redis_database(db: int) -> Iterator[Any]:
    """A client on one Redis database, without Feast `churnops` keys before and after; or skip.

    Args:
        db: The database number this test owns.

    Yields:
        A `redis.Redis` client on that database.
    """
    redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'feast[redis]')")
    if not _port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"no Redis server answers on {REDIS_HOST}:{REDIS_PORT} within {PROBE_SECONDS} s")
    client = redis.Redis(
        host=REDIS_HOST,
        port=REDIS_PORT,
        db=db,
        socket_timeout=PROBE_SECONDS,
        socket_connect_timeout=PROBE_SECONDS,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis on {REDIS_HOST}:{REDIS_PORT} does not answer PING: {exc}")
    try:
        for key in project_keys(client):
            client.delete(key)
        yield client
    finally:
        for key in project_keys(client):
            client.delete(key)
        client.close()


def feast_env(server: Postgres, *, registry_db: str, redis_db: int) -> dict[str, str]:
    """The variables `feature_repo/examples/feature_store.postgres-redis.yaml` reads, for these servers.

    Args:
        server: The PostgreSQL login.
        registry_db: The database holding the Feast registry.
        redis_db: The Redis database number of the online store.

    Returns:
        Variable name to value.
    """
    return {
        "FEAST_PG_HOST": PG_HOST,
        "FEAST_PG_USER": server.user,
        "FEAST_PG_PASSWORD": "",
        "FEAST_REGISTRY_DB": registry_db,
        "FEAST_REDIS_HOST": REDIS_HOST,
        "FEAST_REDIS_PASSWORD": "",
        "FEAST_REDIS_DB": str(redis_db),
    }
