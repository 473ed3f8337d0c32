"""The Feast objects (entity, source, view, service), built from the feature contract.

The files in `feature_repo/` re-export these objects; `features.store.apply` applies the same
objects programmatically, so the CLI and `feast apply` register identical definitions.

The source follows the offline store of the `feature_store.yaml` in use: a `FileSource` over the
table's day files for DuckDB (the embedded default), a `SparkSource` over the table's folder
(its `date=` folders are Spark partitions) for Feast's Spark offline store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from churnops.contracts.feature_contract import (
    DEFAULT_FEATURE_CONTRACT,
    FeatureContract,
    load_feature_contract,
)
from churnops.features.naming import service_name, source_name, view_name
from churnops.features.table import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_TS, table_dir, table_glob
from churnops.storage.layout import FEAST_DIR, FEATURE_STORE_YAML_ENV, FEATURES_DIR, HOME_ENV

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView, FileSource
    from feast.data_source import DataSource

SPARK_OFFLINE_STORE = "spark"
# The Spark partition column of the table's `date=YYYY-MM-DD` folders: Feast's Spark store
# prunes the days an entity frame cannot reach.
DATE_PARTITION_COLUMN = "date"


@dataclass(frozen=True)
class Definitions:
    """The Feast objects of one feature contract.

    Attributes:
        entity: The entity (join key from the contract).
        source: The offline table as a file source (DuckDB) or Spark source (Spark).
        view: The feature view: every contract feature plus `snapshot_ts`, ttl from the contract.
        service: The feature service models and serving use.
    """

    entity: Entity
    source: FileSource | DataSource
    view: FeatureView
    service: FeatureService
    features_dir: Path


def _flat(text: str) -> str:
    return " ".join(text.split())


def _source(
    *, contract: FeatureContract, features_dir: Path, offline_store: str, owner: str, tags: dict[str, str]
) -> FileSource | DataSource:
    """The offline table as the source the offline store reads."""
    common = {
        "name": source_name(contract),
        "timestamp_field": EVENT_TIMESTAMP,
        "created_timestamp_column": CREATED_TIMESTAMP,
        "description": f"Offline table of {contract.name} v{contract.version}: one row per customer per "
        "snapshot time.",
        "owner": owner,
        "tags": tags,
    }
    if offline_store == SPARK_OFFLINE_STORE:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(
            path=str(table_dir(features_dir, contract)),
            file_format="parquet",
            date_partition_column=DATE_PARTITION_COLUMN,
            **common,
        )
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(path=table_glob(features_dir, contract), file_format=ParquetFormat(), **common)


def build_definitions(
    *, contract: FeatureContract, features_dir: Path, offline_store: str = "duckdb"
) -> Definitions:
    """Build the Feast objects of a contract whose offline table lives under `features_dir`.

    Args:
        contract: The feature contract.
        features_dir: The features folder the table is built in.
        offline_store: The `offline_store.type` of the `feature_store.yaml` in use; `spark`
            gets a `SparkSource`, anything else a `FileSource`.

    Returns:
        The entity, source, view and service.
    """
    from feast import Entity, FeatureService, FeatureView, Field
    from feast import types as feast_types
    from feast.types import UnixTimestamp
    from feast.value_type import ValueType

    owner = contract.overview.owners[0].email
    tags = dict(contract.overview.tags)
    entity = Entity(
        name=contract.entity.name,
        join_keys=[contract.entity.join_key],
        value_type=ValueType[contract.entity.types.feast_value],
        description=_flat(contract.entity.description),
        owner=owner,
        tags=tags,
    )
    source = _source(
        contract=contract, features_dir=features_dir, offline_store=offline_store, owner=owner, tags=tags
    )
    view = FeatureView(
        name=view_name(contract),
        entities=[entity],
        # The ttl bounds a snapshot's age at serving/join time (about one grain); the 30-day
        # aggregation window lives inside each snapshot's values.
        ttl=contract.time.ttl,
        schema=[
            Field(
                name=SNAPSHOT_TS, dtype=UnixTimestamp, description="The snapshot time S; staleness is T - S."
            ),
            *[
                Field(
                    name=f.name, dtype=getattr(feast_types, f.types.feast), description=_flat(f.description)
                )
                for f in contract.features
            ],
        ],
        source=source,
        online=True,
        description=_flat(contract.overview.description),
        owner=owner,
        tags={**tags, "contract": contract.name, "contract_version": str(contract.version)},
    )
    service = FeatureService(
        name=service_name(contract),
        features=[view],
        description=f"{contract.name} v{contract.version}: {_flat(contract.overview.description)}",
        owner=owner,
        tags={**tags, "contract": contract.name, "contract_version": str(contract.version)},
    )
    return Definitions(entity=entity, source=source, view=view, service=service, features_dir=features_dir)


@cache
def _definitions_for(home: str, offline_store: str) -> Definitions:
    # The SQLite registry and online store in feature_store.yaml live here; SQLite will not
    # create a missing folder, and `feast apply` on a fresh home must work.
    (Path(home) / FEAST_DIR).mkdir(parents=True, exist_ok=True)
    contract = load_feature_contract(DEFAULT_FEATURE_CONTRACT)
    return build_definitions(
        contract=contract, features_dir=Path(home) / FEATURES_DIR, offline_store=offline_store
    )


def configured_offline_store() -> str:
    """The `offline_store.type` of `$CHURNOPS_FEATURE_STORE_YAML`, or `duckdb` (the default file's).

    `feast -f FILE apply` run in `feature_repo/` does not tell the definitions which file it
    read: export `CHURNOPS_FEATURE_STORE_YAML=FILE` too, so the source matches its offline store.

    Returns:
        The offline store type.
    """
    path = os.environ.get(FEATURE_STORE_YAML_ENV, "").strip()
    if not path or not Path(path).is_file():
        return "duckdb"
    import yaml

    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    offline = config.get("offline_store") or {}
    return str(offline.get("type", "duckdb")) if isinstance(offline, dict) else str(offline)


def repo_definitions(offline_store: str | None = None) -> Definitions:
    """The definitions `feature_repo/` exports: the default contract, the table under `$CHURNOPS_HOME`.

    Args:
        offline_store: The offline store type the source is for (default:
            `configured_offline_store()`).

    Returns:
        The Feast objects (built once per process and offline store).

    Raises:
        RuntimeError: When CHURNOPS_HOME is not set.
    """
    home = os.environ.get(HOME_ENV)
    if not home:
        raise RuntimeError(
            "CHURNOPS_HOME is not set: export it (the churnops home, e.g. the repository root) or run "
            "`churnops features apply --home DIR`, so the feature repo reads that home's table"
        )
    return _definitions_for(str(Path(home).resolve()), offline_store or configured_offline_store())
