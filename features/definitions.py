"""The Feast objects (entity, source, view, service), built from the feature contract.

The files in `feature_repo/` re-export these objects; `features.store.apply` applies the same
objects programmatically, so the CLI and `feast apply` register identical definitions.
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
from churnops.features.table import CREATED_TIMESTAMP, EVENT_TIMESTAMP, SNAPSHOT_TS, table_glob
from churnops.storage.layout import FEAST_DIR, FEATURES_DIR, HOME_ENV

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView, FileSource


@dataclass(frozen=True)
class Definitions:
    """The Feast objects of one feature contract.

    Attributes:
        entity: The entity (join key from the contract).
        source: The offline table as a file source.
        view: The feature view: every contract feature plus `snapshot_ts`, ttl from the contract.
        service: The feature service models and serving use.
    """

    entity: Entity
    source: FileSource
    view: FeatureView
    service: FeatureService


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


def build_definitions(*, contract: FeatureContract, features_dir: Path) -> Definitions:
    """Build the Feast objects of a contract whose offline table lives under `features_dir`.

    Args:
        contract: The feature contract.
        features_dir: The features folder the table is built in.

    Returns:
        The entity, source, view and service.
    """
    from feast import Entity, FeatureService, FeatureView, Field
    from feast import types as feast_types
    from feast.data_format import ParquetFormat
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
    source = _pinned_file_source(version_time=_version_time(contract))(
        name=source_name(contract),
        path=table_glob(features_dir, contract),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        description=f"Offline table of {contract.name} v{contract.version}: one row per customer per "
        "snapshot time.",
        owner=owner,
        tags=tags,
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
    return Definitions(entity=entity, source=source, view=view, service=service)


@cache
def _definitions_for(home: str) -> Definitions:
    # The SQLite registry and online store in feature_store.yaml live here; SQLite will not
    # create a missing folder, and `feast apply` on a fresh home must work.
    (Path(home) / FEAST_DIR).mkdir(parents=True, exist_ok=True)
    contract = load_feature_contract(DEFAULT_FEATURE_CONTRACT)
    return build_definitions(contract=contract, features_dir=Path(home) / FEATURES_DIR)


def repo_definitions() -> Definitions:
    """The definitions `feature_repo/` exports: the default contract, the table under `$CHURNOPS_HOME`.

    Returns:
        The Feast objects (built once per process).

    Raises:
        RuntimeError: When CHURNOPS_HOME is not set.
    """
    home = os.environ.get(HOME_ENV)
    if not home:
        raise RuntimeError(
            "CHURNOPS_HOME is not set: export it (the churnops home, e.g. the repository root) or run "
            "`churnops features apply --home DIR`, so the feature repo reads that home's table"
        )
    return _definitions_for(str(Path(home).resolve()))
