"""How a build splits its (customer, snapshot) rows into chunks that fit in memory.

A chunk is a run of whole snapshot days: each day partition is computed and written by one
chunk, so a partition is always rewritten whole. The planner counts, per day, an upper bound of
the rows a build computes there and groups consecutive days until a chunk would pass its row
budget; a single day above the memory limit cannot be built and says so before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churnops.errors import REFUSED, ChurnopsError
from churnops.storage.layout import MEMORY_LIMIT_ENV

# Peak memory per computed row while a chunk is in flight: DuckDB's grid (targets, per-bucket
# joins, window sorts) and the Arrow copies the chunk passes through on its way to Parquet.
# Measured with `bench/build_memory_bench.py` (a 2M-row chunk of the purchase-history build peaked
# at 3.2 GiB RSS, about 1.4 KB per row over the process's base) and rounded up.
BYTES_PER_ROW = 1_500
# Larger chunks stop paying off (fewer, longer queries; the same total work), and the Arrow
# copies outside DuckDB's limit grow with them: about 1.5 GiB per chunk at most.
MAX_CHUNK_ROWS = 1_000_000


class BuildMemoryError(ChurnopsError):
    """A build that cannot fit in the memory it may use."""

    exit_code = REFUSED


@dataclass(frozen=True)
class Chunk:
    """A run of snapshot days computed together.

    Attributes:
        first_day: The first day (days since the epoch).
        end_day: The day after the last one.
        rows: The upper bound of rows the chunk computes.
    """

    first_day: int
    end_day: int
    rows: int


def budget_rows(limit_bytes: int) -> int:
    """The rows one chunk may hold under a memory limit (at least one)."""
    return max(1, min(MAX_CHUNK_ROWS, limit_bytes // BYTES_PER_ROW))


def mib(size: int) -> str:
    """A size in whole MiB, rounded up, e.g. `1,024MiB`."""
    return f"{-(-size // 2**20):,}MiB"


def _too_big(*, day: int, rows: int, limit_bytes: int) -> BuildMemoryError:
    needed = rows * BYTES_PER_ROW
    date = np.datetime64(day, "D")
    return BuildMemoryError(
        f"the snapshots of {date} alone are {rows:,} (customer, snapshot) rows, about {mib(needed)} "
        f"to compute and write at once, above the memory limit of {mib(limit_bytes)}: set "
        f"{MEMORY_LIMIT_ENV} (or `churnops features build --memory-limit`) to at least {mib(needed)}, "
        "on a machine with that much free memory"
    )


def plan_chunks(*, counts: np.ndarray, first_day: int, limit_bytes: int) -> list[Chunk]:
    """Group consecutive days into chunks of at most `budget_rows(limit_bytes)` rows.

    Args:
        counts: Per day from `first_day` on, an upper bound of the rows computed that day.
        first_day: The day of `counts[0]` (days since the epoch).
        limit_bytes: The memory the build may use.

    Returns:
        The chunks in day order; days without rows belong to none.

    Raises:
        BuildMemoryError: When one day's rows alone need more than `limit_bytes`.
    """
    budget = budget_rows(limit_bytes)
    chunks: list[Chunk] = []
    start, end, rows = -1, -1, 0
    for offset in np.flatnonzero(counts).tolist():
        day_rows = int(counts[offset])
        if day_rows * BYTES_PER_ROW > limit_bytes:
            raise _too_big(day=first_day + offset, rows=day_rows, limit_bytes=limit_bytes)
        if start >= 0 and rows + day_rows > budget:
            chunks.append(Chunk(first_day + start, first_day + end, rows))
            start, rows = -1, 0
        if start < 0:
            start = offset
        rows += day_rows
        end = offset + 1
    if start >= 0:
        chunks.append(Chunk(first_day + start, first_day + end, rows))
    return chunks


def spans_per_day(*, lo_days: np.ndarray, hi_days: np.ndarray, first_day: int, n_days: int) -> np.ndarray:
    """How many of the inclusive day spans [lo, hi] cover each day from `first_day` on.

    Args:
        lo_days: Each span's first day.
        hi_days: Each span's last day (spans with hi < lo are empty).
        first_day: The day of the result's first element.
        n_days: The result's length.

    Returns:
        Per day, the number of spans covering it (int64).
    """
    keep = hi_days >= lo_days
    deltas = np.zeros(n_days + 1, dtype=np.int64)
    lo = np.clip(lo_days[keep] - first_day, 0, n_days)
    hi = np.clip(hi_days[keep] - first_day + 1, 0, n_days)
    np.add.at(deltas, lo, 1)
    np.add.at(deltas, hi, -1)
    return np.cumsum(deltas)[:n_days]
