"""Errors raised when a contract file itself is broken."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class ContractError(ValueError):
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
