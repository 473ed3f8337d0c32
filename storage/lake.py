"""The lake: accepted rows as Parquet, one folder per source, partitioned by date.

Layout: `<lake>/<source>/date=YYYY-MM-DD/data.parquet`, written by batch ingestion, plus the
stream consumer's appends beside it, `stream-<first>-<last>.parquet` (named by the range of
stream sequences they hold, zero-padded so names sort by sequence). A partition is every
visible `*.parquet` file in its folder; temporaries are hidden (`.name.tmp`) and never match.
Every file is written whole and swapped in with a rename, so a reader never sees half a write
and re-running a write with the same rows leaves the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnops.storage.atomic import FileWriter, write_atomic

PARTITION_PREFIX = "date="
PARTITION_FILE = "data.parquet"
STREAM_PREFIX = "stream-"
_SEQUENCE_DIGITS = 12


def source_dir(lake_dir: Path, source: str) -> Path:
    """The folder holding one source's partitions."""
    return lake_dir / source


def source_glob(lake_dir: Path, source: str) -> str:
    """A glob over every file of every partition of a source, for DuckDB's `read_parquet`."""
    return str(source_dir(lake_dir, source) / f"{PARTITION_PREFIX}*" / "*.parquet")


def partition_path(lake_dir: Path, source: str, day: str) -> Path:
    """The file of one partition; `day` is `YYYY-MM-DD`."""
    return source_dir(lake_dir, source) / f"{PARTITION_PREFIX}{day}" / PARTITION_FILE


def partition_days(frame: pd.DataFrame, partition_column: str) -> pd.Series:
    """The `YYYY-MM-DD` partition of every row, from a datetime or date column (UTC)."""
    values = pd.to_datetime(frame[partition_column], utc=True)
    return values.dt.strftime("%Y-%m-%d")


def day_partitions(folder: Path) -> list[str]:
    """The days under `folder` that have a `date=YYYY-MM-DD/data.parquet` file, sorted.

    The lake and the offline feature table share this layout, so both list it here.
    """
    if not folder.is_dir():
        return []
    return sorted(
        p.name.removeprefix(PARTITION_PREFIX)
        for p in folder.iterdir()
        if p.name.startswith(PARTITION_PREFIX) and (p / PARTITION_FILE).is_file()
    )


def stream_file_name(first: int, last: int) -> str:
    """The name of a stream append holding stream sequences `first`..`last`."""
    return f"{STREAM_PREFIX}{first:0{_SEQUENCE_DIGITS}d}-{last:0{_SEQUENCE_DIGITS}d}.parquet"


def stream_path(lake_dir: Path, source: str, day: str, *, first: int, last: int) -> Path:
    """The file of one stream append in one partition; `day` is `YYYY-MM-DD`."""
    return source_dir(lake_dir, source) / f"{PARTITION_PREFIX}{day}" / stream_file_name(first, last)


def partition_files(lake_dir: Path, source: str, day: str) -> list[Path]:
    """Every visible file of one partition: `data.parquet` first, then stream appends by sequence."""
    folder = source_dir(lake_dir, source) / f"{PARTITION_PREFIX}{day}"
    if not folder.is_dir():
        return []
    streams = sorted(p for p in folder.glob(f"{STREAM_PREFIX}*.parquet") if p.is_file())
    base = folder / PARTITION_FILE
    return [base, *streams] if base.is_file() else streams


def list_partitions(lake_dir: Path, source: str) -> list[str]:
    """The days that have at least one partition file (batch or stream), sorted."""
    folder = source_dir(lake_dir, source)
    if not folder.is_dir():
        return []
    return sorted(
        p.name.removeprefix(PARTITION_PREFIX)
        for p in folder.iterdir()
        if p.name.startswith(PARTITION_PREFIX) and any(p.glob("[!.]*.parquet"))
    )


def read_partition_table(lake_dir: Path, source: str, day: str) -> pa.Table | None:
    """One partition (all its files, in `partition_files` order) as Arrow, or None when it has none."""
    paths = partition_files(lake_dir, source, day)
    if not paths:
        return None
    return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")


def read_partition(lake_dir: Path, source: str, day: str) -> pd.DataFrame | None:
    """One partition (all its files) as a DataFrame, or None when it does not exist."""
    found = read_partition_table(lake_dir, source, day)
    return None if found is None else found.to_pandas()


def read_source(lake_dir: Path, source: str, *, schema: pa.Schema | None = None) -> pd.DataFrame:
    """Every row of a source, partitions in day order.

    Args:
        lake_dir: The lake's root folder.
        source: The source name, e.g. `usage_events`.
        schema: The schema to return when the source has no partitions yet.

    Returns:
        The rows; an empty frame (with `schema`'s columns when given) when there are none.
    """
    days = list_partitions(lake_dir, source)
    if not days:
        return schema.empty_table().to_pandas() if schema is not None else pd.DataFrame()
    tables = [read_partition_table(lake_dir, source, day) for day in days]
    return pa.concat_tables([t for t in tables if t is not None], promote_options="default").to_pandas()


def write_partition(
    lake_dir: Path, source: str, day: str, frame: pd.DataFrame, *, write: FileWriter = write_atomic
) -> Path:
    """Replace one partition with `frame`, atomically (write a temporary file, then rename).

    Args:
        lake_dir: The lake's root folder.
        source: The source name.
        day: The partition, `YYYY-MM-DD`.
        frame: The partition's complete contents.
        write: How the file is put in place: at once (`write_atomic`) or with the other files
            of a batch (`StagedFiles.write`).

    Returns:
        The partition file.
    """
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    return write_partition_table(lake_dir, source, day, table, write=write)


def write_partition_table(
    lake_dir: Path, source: str, day: str, table: pa.Table, *, write: FileWriter = write_atomic
) -> Path:
    """Replace one partition with an Arrow table, atomically; `write_partition` without pandas.

    Args:
        lake_dir: The lake's root folder.
        source: The source name.
        day: The partition, `YYYY-MM-DD`.
        table: The partition's complete contents (keep any pandas schema metadata on it so
            `read_partition` restores the same dtypes as for a DataFrame write).
        write: How the file is put in place (see `write_partition`).

    Returns:
        The partition file.
    """
    return write(partition_path(lake_dir, source, day), lambda tmp: pq.write_table(table, tmp))
