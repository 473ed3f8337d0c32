"""Names of the Feast objects, derived from the feature contract (never written twice)."""

from __future__ import annotations

from churnops.contracts.durations import format_duration
from churnops.contracts.feature_contract import FeatureContract


def view_name(contract: FeatureContract) -> str:
    """The feature view: the set's name and its window, e.g. `customer_profile_30d`."""
    return f"{contract.name}_{format_duration(contract.time.lookback)}"


def service_name(contract: FeatureContract) -> str:
    """The feature service: the set's name and major version, e.g. `customer_profile_v1`."""
    return f"{contract.name}_v{contract.version}"


def source_name(contract: FeatureContract) -> str:
    """The offline table's Feast data source, e.g. `customer_profile_v1_source`."""
    return f"{service_name(contract)}_source"
