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
from datetime import UTC, datetime, time
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


def _version_time(contract: FeatureContract) -> datetime:
    """Midnight UTC of the changelog date of the contract's current version."""
    dates = [e.date for e in contract.versioning.changelog if e.version == contract.version]
    if not dates:
        raise ValueError(f"{contract.name} v{contract.version}: versioning.changelog has no entry for it")
    return datetime.combine(max(dates), time(), tzinfo=UTC)


def _pinned_file_source(*, version_time: datetime) -> type[FileSource]:
    """A FileSource class whose registry timestamps are fixed at `version_time`.

    Feast stamps a source with the wall clock when it is built, and the registry stamps it again
    when it first stores it; the view embeds the source with its stamps. Once the registry's view
    differs from the definitions in anything (a materialization interval is enough), `feast plan`
    compares the embedded sources field by field and reports every view as changed. Timestamps
    taken from the contract's version are the same in every process, so only real changes show.
    The registry stores the source as a plain FileSource: reading it back needs no churnops.

    Args:
        version_time: The time every instance reports as created and last updated.

    Returns:
        The subclass.
    """
    from feast import FileSource

    class ContractFileSource(FileSource):
        def __setattr__(self, name: str, value: object) -> None:
            if name in ("created_timestamp", "last_updated_timestamp"):
                value = version_time
            super().__setattr__(name, value)

    # Feast records a view's source class by module and name, and a registry re-written by
    # `materialize` records a plain FileSource: the same name keeps the two records equal.
    ContractFileSource.__module__ = FileSource.__module__
    ContractFileSource.__name__ = ContractFileSource.__qualname__ = FileSource.__name__
    return ContractFileSource


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
    from feast.data_format import ParquetFormat

    source_class = _pinned_file_source(version_time=_version_time(contract))
    return source_class(path=table_glob(features_dir, contract), file_format=ParquetFormat(), **common)


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
