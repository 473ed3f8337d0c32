"""Errors raised when a contract file itself is broken."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from churnops.errors import ChurnopsError

Model = TypeVar("Model", bound=BaseModel)


class ContractError(ChurnopsError, ValueError):
    """A contract file is missing, unreadable or does not match its schema."""


def describe_validation_error(path: Path, exc: ValidationError) -> ContractError:
    """Turn pydantic's report into one message naming the file, each key path and what was expected.

    Args:
        path: The contract file that failed to load.
        exc: The validation error pydantic raised.

    Returns:
        A `ContractError` ready to raise.
    """
    lines = [f"contract {path} is invalid:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        got = err.get("input")
        got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"  - {key}: {err['msg']}{got_text}")
    return ContractError("\n".join(lines))


def parse_contract_file(path: Path, model: type[Model]) -> Model:
    """Read a contract file as YAML and validate it against its typed model.

    Args:
        path: The contract file (it must exist).
        model: The pydantic model of that kind of contract.

    Returns:
        The validated contract.

    Raises:
        ContractError: When the file is not YAML, not a mapping, or breaks the schema; the message
            names the file, the key path and what was expected.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ContractError(f"contract {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"contract {path} must be a YAML mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise describe_validation_error(path, exc) from exc
