"""The one DuckDB connection factory every stage opens its connections with.

Named `duck` so it never shadows the `duckdb` package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from churnops.errors import ChurnopsError

# The share of the machine's memory a data-heavy step plans for when no limit is set: DuckDB's own
# default (80%) leaves nothing for the Arrow results a step holds beside it, nor for other work.
MACHINE_SHARE = 0.25
# The setting naming that limit instead (e.g. `4GB`); the command line reads it.
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class MemorySettingError(ChurnopsError):
    """A memory limit that cannot be read (bad input: exit 2)."""


def parse_size(value: str, *, setting: str) -> int:
    """A size such as `4GB`, `512MiB` or `1.5 GB` in bytes.

    Args:
        value: The size: a number and an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
        setting: The setting's name, for the error message.

    Returns:
        The size in bytes.

    Raises:
        MemorySettingError: When the value is not such a size or is not positive.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise MemorySettingError(
            f"{setting} {value!r} is not a memory size: write a positive number and a unit, "
            "e.g. 4GB or 512MiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory_limit() -> int:
    """The memory a data-heavy step plans for when no limit is set: a share of the machine's."""
    return int(machine_memory() * MACHINE_SHARE)


def duckdb_connection(
    *, memory_limit: str | None = None, temp_directory: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC, without the progress bar a CLI would print.

    Args:
        memory_limit: DuckDB's `memory_limit` (e.g. `"4GB"`); None keeps DuckDB's default.
        temp_directory: Where DuckDB spills what does not fit in memory; None keeps DuckDB's
            default.

    Returns:
        The connection; close it when done.
    """
    config: dict[str, str] = {}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    if temp_directory is not None:
        config["temp_directory"] = str(temp_directory)
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")
    # Naive timestamps are UTC by contract, whatever the machine's zone.
    con.execute("SET TimeZone = 'UTC'")
    return con
