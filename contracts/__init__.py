"""Executable data contracts: the YAML files and the typed models that load and enforce them."""

from churnops.contracts.errors import ContractError

__all__ = ["ContractError"]
