"""The online store: a fast bulk load for SQLite, and reads through Feast.

Feast's own SQLite writer upserts one row per (customer, feature) with a separate statement
(about 45 s for 300k customers here). `write_online` converts values with Feast's own helpers
(`_columns_to_proto_values`, `serialize_entity_key`, `extract_text_and_num`) and writes the
same rows, byte for byte, with one `executemany` in one transaction, so `get_online_features`
and `feast serve` read them back unchanged. Other online stores (Redis) go through Feast.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from features.table import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_TS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


def _serialized_column(
    batch: pa.RecordBatch, name: str, value_type: object
) -> tuple[list[bytes], list[object]]:
    """A column's values as Feast's ValueProto bytes and `value_text`, converted once per distinct value.

    The distinct values go through Feast's own conversion (`_columns_to_proto_values`), so the
    bytes are exactly those Feast's writer would store.
    """
    import pyarrow.compute as pc
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.utils import _columns_to_proto_values

    column = batch.column(batch.schema.get_field_index(name))
    distinct = pc.unique(column)
    protos = _columns_to_proto_values(pa.record_batch([distinct], names=[name]), [(name, value_type)])[name]
    raw = [p.SerializeToString() for p in protos]
    text = [extract_text_and_num(p, False)[0] for p in protos]
    where = pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)
    return [raw[i] for i in where], [text[i] for i in where]


def _epoch_seconds(column: pa.ChunkedArray) -> list[int]:
    """What Feast's SQLite adapter stores for each timestamp, computed once per distinct value.

    Feast passes `to_naive_utc(ts)` to sqlite3, whose registered adapter stores
    `int(value.timestamp())`; the same expression is applied here to the few distinct times of a
    refresh instead of once per (customer, feature) row.
    """
    import pyarrow.compute as pc
    from feast.utils import to_naive_utc

    distinct = pc.unique(column)
    seconds = [int(to_naive_utc(t).timestamp()) for t in distinct.to_pylist()]
    return [seconds[i] for i in pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)]


def _sqlite_rows(store: FeatureStore, view: FeatureView, rows: pa.Table) -> list[tuple]:
    """The online table's rows for `rows`, sorted by (entity key, feature name) for fast B-tree appends."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.utils import _columns_to_proto_values

    if rows.num_rows == 0:
        return []
    entity = view.entity_columns[0]
    batch = rows.combine_chunks().to_batches()[0]
    version = store.config.entity_key_serialization_version
    key_protos = _columns_to_proto_values(batch, [(entity.name, entity.dtype.to_value_type())])[entity.name]
    entity_keys = [
        serialize_entity_key(
            EntityKeyProto(join_keys=[entity.name], entity_values=[v]),
            entity_key_serialization_version=version,
        )
        for v in key_protos
    ]
    event_ts = _epoch_seconds(rows.column(EVENT_TIMESTAMP))
    created_ts = _epoch_seconds(rows.column(CREATED_TIMESTAMP))
    columns = sorted((f.name, f.dtype.to_value_type()) for f in view.features)
    serialized = [_serialized_column(batch, name, value_type) for name, value_type in columns]
    out: list[tuple] = []
    for i in sorted(range(len(entity_keys)), key=entity_keys.__getitem__):
        key, event, created = entity_keys[i], event_ts[i], created_ts[i]
        out.extend(
            (key, name, values[i], texts[i], event, created)
            for (name, _), (values, texts) in zip(columns, serialized, strict=True)
        )
    return out


def write_online(*, store: FeatureStore, view: FeatureView, rows: pa.Table, replace: bool = False) -> int:
    """Load snapshot rows (one per customer) into the online store.

    Args:
        store: The Feast store (its definitions applied).
        view: The feature view the rows belong to.
        rows: Offline table rows: key, event/created timestamps, `snapshot_ts`, features.
        replace: Whether the rows are the whole new online state (a refresh of every customer):
            the table is emptied and refilled in the same transaction, which is much faster than
            upserting; readers see the old or the new state, never a mix.

    Returns:
        The number of customers written.

    Raises:
        RuntimeError: When the SQLite online table does not exist (run `churnops features apply`).
    """
    if store.config.online_store.type != "sqlite":
        store.write_to_online_store(view.name, rows.to_pandas())
        return rows.num_rows
    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    path = SqliteOnlineStore._get_db_path(store.config)
    table = compute_table_id(
        store.config.project, view, store.config.registry.enable_online_feature_view_versioning
    )
    records = _sqlite_rows(store, view, rows)
    quoted = '"' + table.replace('"', '""') + '"'
    insert = (
        f"INSERT INTO {quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    upsert = (
        f"{insert} ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    con = sqlite3.connect(path)
    try:
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (table,),
        ).fetchall()
        exists = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if not exists:
            raise RuntimeError(
                f"the online table {table} does not exist in {path}: run `churnops features apply` first"
            )
        # WAL lets `feast serve` keep reading the previous state while a load is written.
        con.execute("PRAGMA journal_mode = WAL")
        with con:
            if replace:
                # Feast's secondary index is rebuilt once after the load instead of row by row.
                for name, _ in indexes:
                    con.execute(f'DROP INDEX "{name}"')
                con.execute(f"DELETE FROM {quoted}")
                con.executemany(insert, records)
                for _, sql in indexes:
                    con.execute(sql)
            else:
                con.executemany(upsert, records)
    finally:
        con.close()
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
    from features.definitions import repo_definitions

    d = repo_definitions()
    service = store.get_feature_service(feature_service or d.service.name)
    key = d.entity.join_key
    frame = store.get_online_features(features=service, entity_rows=[{key: c} for c in customer_ids]).to_df()
    frame[SNAPSHOT_TS] = pd.to_datetime(frame[SNAPSHOT_TS], utc=True)
    names = [f.name for f in service.feature_view_projections[0].features if f.name != SNAPSHOT_TS]
    return frame[[key, SNAPSHOT_TS, *names]]
