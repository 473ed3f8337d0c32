"""Executable data contracts: the YAML files and the typed models that load and enforce them."""

from contracts.errors import ContractError

__all__ = ["ContractError"]
