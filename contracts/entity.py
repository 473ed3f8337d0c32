"""The entity's id format, as the source contracts state it (read here, written nowhere else).

A feature contract names its entity's join key (`customer_id`) but not its format: that belongs
to the source the entity comes from, the one of the feature contract's sources whose primary key
is the join key alone (`customers`, whose `customer_id` has `format: "^CUST-[0-9]{6}$"`).
"""

from __future__ import annotations

from pathlib import Path

from churnops.contracts.errors import ContractError
from churnops.contracts.feature_contract import FeatureContract
from churnops.contracts.source_contract import SOURCES_DIR, load_source_contract


def entity_id_format(contract: FeatureContract, *, sources_dir: Path | None = None) -> str | None:
    """The regular expression every id of the contract's entity must match.

    Args:
        contract: The feature contract.
        sources_dir: Read the source contracts from here instead of `contracts/sources/`.

    Returns:
        The `format` of the join key column in the entity's own source, or None when that
        column has no format.

    Raises:
        ContractError: When none of the contract's sources is keyed by the join key alone.
    """
    key = contract.entity.join_key
    folder = sources_dir or SOURCES_DIR
    for ref in contract.sources:
        source = load_source_contract(ref.name, path=folder / f"{ref.name}.yaml")
        if source.primary_key == [key]:
            return source.column(key).format
    raise ContractError(
        f"feature contract {contract.name} v{contract.version}: none of its sources "
        f"({', '.join(s.name for s in contract.sources)}) has primary key [{key}], so the format of "
        f"entity id {key!r} is unknown"
    )
