"""The one DuckDB connection factory every stage opens its connections with.

Named `duck` so it never shadows the `duckdb` package.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


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
