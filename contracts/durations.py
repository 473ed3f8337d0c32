"""Durations written the way contracts write them: `30d`, `24h`, `15m`, `90s`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")


def parse_duration(value: object) -> timedelta:
    """Parse `<int><d|h|m|s>` into a timedelta.

    Args:
        value: A string like `30d`, or a timedelta.

    Returns:
        The duration.

    Raises:
        ValueError: When the text is not a whole number followed by d, h, m or s.
    """
    if isinstance(value, timedelta):
        return value
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '30d', '24h', '15m' or '90s', got {value!r}")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(value: timedelta) -> str:
    """Write a timedelta back in the largest whole unit, the inverse of `parse_duration`."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
