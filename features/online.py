"""The online store: a fast bulk load for SQLite, and reads through Feast.

Feast's own SQLite writer upserts one row per (customer, feature) with a separate statement (its
time against ours: `bench/results/features.md`, "Online load only"). `write_online` converts
values with Feast's own helpers (`_columns_to_proto_values`, `serialize_entity_key`,
`extract_text_and_num`), once per distinct value, and lets SQLite expand them into the same
rows, byte for byte: Python binds one short row per customer (its entity key, its two times and
an integer id per feature value) into a temporary table, and a single `INSERT ... SELECT` joins
those ids to the distinct serialized values inside SQLite. `get_online_features` and `feast
serve` read the rows back unchanged.

Stores Feast's layout can vary for (Redis, a view with several entities, SQLite with vector
or numeric columns) are written through Feast's own `write_to_online_store`, in chunks.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnops.features.table import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_TS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

FEAST_CHUNK_ROWS = 10_000
_CACHE_KIB = 512 * 1024
_MMAP_BYTES = 4 * 1024**3
_STAGE = "churnops_online_load"


@dataclass(frozen=True)
class _Staged:
    """The load, factored: one row per customer plus the distinct serialized values.

    Attributes:
        features: The view's feature names, sorted (the order of the id columns).
        customers: Per customer, sorted by entity key: (entity key, event ts, created ts,
            one value id per feature).
        values: (id, serialized ValueProto, value_text) for every distinct value.
    """

    features: list[str]
    customers: list[tuple]
    values: list[tuple[int, bytes, str | None]]


def _value_ids(
    column: pa.ChunkedArray, name: str, value_type: object, first_id: int
) -> tuple[np.ndarray, list[tuple[int, bytes, str | None]]]:
    """Each row's value id, and the distinct values as Feast's ValueProto bytes and `value_text`.

    The distinct values go through Feast's own conversion (`_columns_to_proto_values`,
    `extract_text_and_num`), so the bytes are exactly those Feast's writer would store.
    """
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.utils import _columns_to_proto_values

    distinct = pc.unique(column)
    protos = _columns_to_proto_values(pa.record_batch([distinct], names=[name]), [(name, value_type)])[name]
    values = [
        (first_id + i, p.SerializeToString(), extract_text_and_num(p, False)[0]) for i, p in enumerate(protos)
    ]
    where = pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False).astype(np.int64)
    return where + first_id, values


def _epoch_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """What Feast's SQLite adapter stores for each timestamp, computed once per distinct value.

    Feast passes `to_naive_utc(ts)` to sqlite3, whose registered adapter stores
    `int(value.timestamp())`; the same expression is applied here to the few distinct times of a
    refresh instead of once per (customer, feature) row.
    """
    from feast.utils import to_naive_utc

    distinct = pc.unique(column)
    seconds = np.array([int(to_naive_utc(t).timestamp()) for t in distinct.to_pylist()], dtype=np.int64)
    return seconds[pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)]


def _entity_keys(store: FeatureStore, view: FeatureView, column: pa.ChunkedArray) -> list[bytes]:
    """Feast's serialized entity key of every row.

    For a string key (this project's `customer_id`) the serialization is built directly, after
    checking it against Feast's `serialize_entity_key` on the first row; any other key type goes
    through Feast's serializer row by row.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.utils import _columns_to_proto_values
    from feast.value_type import ValueType

    entity = view.entity_columns[0]
    value_type = entity.dtype.to_value_type()
    version = store.config.entity_key_serialization_version

    def feast_keys(values: pa.Array) -> list[bytes]:
        batch = pa.record_batch([values], names=[entity.name])
        return [
            serialize_entity_key(
                EntityKeyProto(join_keys=[entity.name], entity_values=[proto]),
                entity_key_serialization_version=version,
            )
            for proto in _columns_to_proto_values(batch, [(entity.name, value_type)])[entity.name]
        ]

    array = column.combine_chunks()
    if value_type == ValueType.STRING and version >= 3:
        name = entity.name.encode("utf8")
        head = struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name
        head += struct.pack("<I", ValueType.STRING.value)
        encoded = [k.encode("utf8") for k in array.to_pylist()]
        fast = [head + struct.pack("<I", len(k)) + k for k in encoded]
        if fast[:1] == feast_keys(array.slice(0, 1)):
            return fast
    return feast_keys(array)


def _stage(store: FeatureStore, view: FeatureView, rows: pa.Table) -> _Staged:
    """Factor the rows into per-customer ids and distinct serialized values."""
    features = sorted((f.name, f.dtype.to_value_type()) for f in view.features)
    keys = _entity_keys(store, view, rows.column(view.entity_columns[0].name))
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    columns: list[list[int]] = []
    values: list[tuple[int, bytes, str | None]] = []
    for name, value_type in features:
        ids, distinct = _value_ids(rows.column(name), name, value_type, len(values))
        values.extend(distinct)
        columns.append(ids[order].tolist())
    event = _epoch_seconds(rows.column(EVENT_TIMESTAMP))[order].tolist()
    created = _epoch_seconds(rows.column(CREATED_TIMESTAMP))[order].tolist()
    customers = list(zip([keys[i] for i in order.tolist()], event, created, *columns, strict=True))
    return _Staged(features=[name for name, _ in features], customers=customers, values=values)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _load_sqlite(path: str, table: str, staged: _Staged, *, replace: bool) -> None:
    """Expand the staged customers into the online table inside SQLite, in one transaction.

    The database stays in WAL mode, so `feast serve` reads the previous state until the commit
    and the new one after it, never a mix; `synchronous = NORMAL` is WAL's crash-safe setting (a
    power loss may lose the last commit, never corrupt the file or half-apply it).

    Rows arrive in primary-key order, so each B-tree (the table, Feast's primary key and its
    `entity_key` index) grows or is rewritten at neighbouring positions; keeping the indexes
    during the load beats dropping and rebuilding them, even into an empty table (the A/B is in
    `bench/results/features.md`, "Online load only"). A refresh rewrites the same customers, so
    their rows are updated in place (neither key index changes). With `replace`, customers
    absent from the load are then deleted.
    """
    quoted = _quote(table)
    keys, features, values = (f"temp.{_STAGE}_{part}" for part in ("keys", "features", "values"))
    ids = [f"v{i}" for i in range(len(staged.features))]
    pick = "CASE f.i " + " ".join(f"WHEN {i} THEN k.{c}" for i, c in enumerate(ids)) + " END"
    # Customers are staged in key order and features in name order, so the cross join emits
    # rows in primary-key order: every B-tree write lands next to the previous one.
    upsert = (
        f"INSERT INTO main.{quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        f"SELECT k.entity_key, f.feature_name, v.value, v.value_text, k.event_ts, k.created_ts "
        f"FROM {keys} AS k CROSS JOIN {features} AS f CROSS JOIN {values} AS v WHERE v.id = {pick} "
        "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    con = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        exists = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if not exists:
            raise RuntimeError(
                f"the online table {table} does not exist in {path}: run `churnops features apply` first"
            )
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute("PRAGMA temp_store = MEMORY")
        con.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        # Reading the existing pages through a memory map skips a copy per page.
        con.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        # Staging lives in this connection's temporary database: no other connection sees it.
        columns = ", ".join(f"{c} INTEGER" for c in ids)
        con.execute(f"CREATE TABLE {keys} (entity_key BLOB, event_ts INTEGER, created_ts INTEGER, {columns})")
        con.execute(f"CREATE TABLE {features} (i INTEGER PRIMARY KEY, feature_name TEXT)")
        con.execute(f"CREATE TABLE {values} (id INTEGER PRIMARY KEY, value BLOB, value_text TEXT)")
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO {keys} VALUES ({', '.join('?' * (3 + len(ids)))})", staged.customers)
        con.executemany(f"INSERT INTO {features} VALUES (?, ?)", list(enumerate(staged.features)))
        con.executemany(f"INSERT INTO {values} VALUES (?, ?, ?)", staged.values)
        con.execute("COMMIT")
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(upsert)
            # Every staged customer now has its rows, so more rows than that means customers
            # absent from the load; counting is cheap (page headers), the anti-join is not.
            expected = len(staged.customers) * len(staged.features)
            if replace and con.execute(f"SELECT count(*) FROM main.{quoted}").fetchone() != (expected,):
                con.execute(
                    f"DELETE FROM main.{quoted} WHERE entity_key NOT IN (SELECT entity_key FROM {keys})"
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


def _feast_layout(store: FeatureStore, view: FeatureView) -> bool:
    """Whether the online table is Feast's plain SQLite layout that `_load_sqlite` writes."""
    online = store.config.online_store
    return (
        online.type == "sqlite"
        and len(view.entity_columns) == 1
        and not getattr(online, "vector_enabled", False)
        and not getattr(online, "enable_openai_compatible_store", False)
    )


def write_online(*, store: FeatureStore, view: FeatureView, rows: pa.Table, replace: bool = False) -> int:
    """Load snapshot rows (one per customer) into the online store.

    Args:
        store: The Feast store (its definitions applied).
        view: The feature view the rows belong to.
        rows: Offline table rows: key, event/created timestamps, `snapshot_ts`, features.
        replace: Whether the rows are the whole new online state (a refresh of every customer):
            on SQLite, customers absent from `rows` are deleted in the same transaction, so
            readers see the old or the new state, never a mix. Other stores are upserted through
            Feast (customers absent from `rows` keep their previous values there).

    Returns:
        The number of customers written.

    Raises:
        ValueError: When a customer appears in more than one row.
        RuntimeError: When the SQLite online table does not exist (run `churnops features apply`).
    """
    if rows.num_rows == 0 and not replace:
        return 0
    entities = view.entity_columns
    if len(entities) == 1 and (key := entities[0].name) in rows.column_names:
        counts = pc.value_counts(rows.column(key)).flatten()
        repeated = pc.filter(counts[0], pc.greater(counts[1], 1))
        if len(repeated):
            raise ValueError(
                f"the rows for the online store hold {len(repeated)} {key} value(s) more than once "
                f"(first: {repeated[0].as_py()!r}); pass one row per {key} (its latest snapshot)"
            )
    if not _feast_layout(store, view):
        for offset in range(0, rows.num_rows, FEAST_CHUNK_ROWS):
            store.write_to_online_store(view.name, rows.slice(offset, FEAST_CHUNK_ROWS).to_pandas())
        return rows.num_rows
    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    path = SqliteOnlineStore._get_db_path(store.config)
    table = compute_table_id(
        store.config.project, view, store.config.registry.enable_online_feature_view_versioning
    )
    _load_sqlite(path, table, _stage(store, view, rows), replace=replace)
    return rows.num_rows


def read_online(
    *, store: FeatureStore, customer_ids: list[str], feature_service: str | None = None
) -> pd.DataFrame:
    """Every feature of the service and `snapshot_ts`, per customer, from the online store.

    Args:
        store: The Feast store.
        customer_ids: The customers, in the order wanted.
        feature_service: The service (default: the contract's, `customer_profile_v1`).

    Returns:
        One row per requested customer, in order: the key, `snapshot_ts` (UTC), the features;
        a customer missing online has nulls.
    """
    from churnops.features.definitions import repo_definitions

    d = repo_definitions()
    service = store.get_feature_service(feature_service or d.service.name)
    key = d.entity.join_key
    frame = store.get_online_features(features=service, entity_rows=[{key: c} for c in customer_ids]).to_df()
    frame[SNAPSHOT_TS] = pd.to_datetime(frame[SNAPSHOT_TS], utc=True)
    names = [f.name for f in service.feature_view_projections[0].features if f.name != SNAPSHOT_TS]
    return frame[[key, SNAPSHOT_TS, *names]]
