"""The lake merge of a batch's valid rows: deduplicate, resolve against the lake, rewrite partitions.

Within the batch the latest `ingested_at` per key wins (ties: the first row of the file).
Against the lake, a winner replaces the lake's row only when its `ingested_at` is later;
otherwise it is a duplicate. Each affected date partition is rewritten whole and staged in the
batch's commit, so all of a batch's partitions change together (`storage.staging`). A
partition's stream appends (`stream-*.parquet`) count as lake rows here like `data.parquet`, and a
rewrite folds them into `data.parquet` and removes them in the same commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.rows import ROW_POSITION, sql_glob
from churnops.ingestion.validate import lake_schema, to_lake_frame
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import (
    PARTITION_FILE,
    list_partitions,
    partition_files,
    read_partition,
    write_partition,
    write_partition_table,
)
from churnops.storage.staging import StagedFiles
from churnops.storage.times import epoch_micros


@dataclass(frozen=True)
class LakeMerge:
    """What merging a batch into the lake did.

    Attributes:
        accepted: The rows written to the lake (contract columns only).
        batch_duplicates: Rows that lost to a row of the same key in the batch.
        lake_duplicates: Rows that lost to a row of the same key already in the lake.
        replaced: Accepted rows that replaced an older version in the lake.
    """

    accepted: pa.Table
    batch_duplicates: int
    lake_duplicates: int
    replaced: int

    @property
    def duplicates(self) -> int:
        """Rows dropped as duplicates, in the batch or against the lake."""
        return self.batch_duplicates + self.lake_duplicates


@dataclass(frozen=True)
class _AgainstLake:
    """The batch's winners after comparing them with the lake's versions of their keys."""

    accepted: pa.Table
    lake_duplicates: int = 0
    replaced: int = 0
    # Partition day → keys of the lake rows that newer batch rows replace.
    removals: dict[str, pd.DataFrame] = field(default_factory=dict)


def dedup(valid: pa.Table, contract: SourceContract) -> pa.Table:
    """Latest `ingested_at` per key wins; among equal ones the first row of the file.

    Args:
        valid: Rows with the contract's columns and `ROW_POSITION`.
        contract: The source's contract.

    Returns:
        One row per key.
    """
    keys = contract.primary_key
    if valid.num_rows == 0:
        return valid
    unique_part = None
    if len(keys) == 1:
        # Only the few rows whose key repeats need sorting; the rest pass straight through.
        counts = pc.value_counts(valid.column(keys[0]))
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        if len(repeated) == 0:
            return valid
        involved = pc.is_in(valid.column(keys[0]), value_set=repeated)
        unique_part = valid.filter(pc.invert(involved))
        valid = valid.filter(involved)
    order = pc.sort_indices(
        valid,
        sort_keys=[*((k, "ascending") for k in keys), (contract.schema_.ingested_at, "descending"),
                   (ROW_POSITION, "ascending")],
    )  # fmt: skip
    ranked = valid.take(order)
    repeat = np.ones(ranked.num_rows - 1, dtype=bool)
    for key in keys:
        column = ranked.column(key)
        repeat &= np.asarray(
            pc.equal(column.slice(1), column.slice(0, ranked.num_rows - 1)).to_numpy(), dtype=bool
        )
    winners = ranked.filter(pa.array(np.r_[True, ~repeat]))
    return winners if unique_part is None else pa.concat_tables([unique_part, winners])


def merge_into_lake(
    valid: pa.Table, contract: SourceContract, *, lake_dir: Path, files: StagedFiles
) -> LakeMerge:
    """Deduplicate the batch, then against the lake, and stage the rewritten partitions.

    Args:
        valid: The batch's valid rows, with `ROW_POSITION`.
        contract: The source's contract.
        lake_dir: The lake's root folder.
        files: The batch's commit; the lake changes when it is applied.

    Returns:
        The accepted rows and the duplicate and replacement counts.
    """
    winners = dedup(valid, contract)
    existing = _existing_keys(lake_dir, contract)
    resolved = _against_lake(winners, existing, contract)
    accepted = _by_day(resolved.accepted, contract)
    _rewrite_partitions(
        accepted,
        contract,
        lake_dir=lake_dir,
        files=files,
        removals=resolved.removals,
        lake_has_rows=existing is not None,
    )
    return LakeMerge(
        accepted=accepted.drop_columns(["_day", ROW_POSITION]),
        batch_duplicates=valid.num_rows - winners.num_rows,
        lake_duplicates=resolved.lake_duplicates,
        replaced=resolved.replaced,
    )


def _against_lake(winners: pa.Table, existing: pa.Table | None, contract: SourceContract) -> _AgainstLake:
    """Drop winners the lake holds in an equal or later version; note the lake rows newer ones replace."""
    if existing is None or not winners.num_rows:
        return _AgainstLake(accepted=winners)
    keys = contract.primary_key
    ingested = contract.schema_.ingested_at
    joined = winners.select([*keys, ingested, ROW_POSITION]).join(existing, keys=keys, join_type="left outer")
    in_lake = _flags(pc.is_valid(joined.column("_lake_ingested")))
    newer = _flags(pc.fill_null(pc.greater(joined.column(ingested), joined.column("_lake_ingested")), False))
    dropped = pc.is_in(
        winners.column(ROW_POSITION), value_set=joined.column(ROW_POSITION).filter(pa.array(in_lake & ~newer))
    )
    gone = joined.filter(pa.array(in_lake & newer)).select([*keys, "_lake_day"]).to_pandas()
    return _AgainstLake(
        accepted=winners.filter(pc.invert(dropped)),
        lake_duplicates=int((in_lake & ~newer).sum()),
        replaced=int((in_lake & newer).sum()),
        removals={str(day): group.drop(columns="_lake_day") for day, group in gone.groupby("_lake_day")},
    )


def _flags(mask: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _by_day(accepted: pa.Table, contract: SourceContract) -> pa.Table:
    """The rows with their partition day as `_day`, sorted by day then key."""
    day = pc.cast(accepted.column(contract.partition_column), pa.date32())
    accepted = accepted.append_column("_day", day)
    keys = contract.primary_key
    return accepted.take(
        pc.sort_indices(accepted, sort_keys=[("_day", "ascending"), *((k, "ascending") for k in keys)])
    )


def _day_slices(accepted: pa.Table) -> dict[str, tuple[int, int]]:
    """Partition day (ISO date) → the [start, end) row range of that day in rows sorted by `_day`."""
    day_numbers = accepted.column("_day").cast(pa.int32()).to_numpy(zero_copy_only=False)
    if not len(day_numbers):
        return {}
    starts = np.flatnonzero(np.r_[True, day_numbers[1:] != day_numbers[:-1]])
    ends = [*starts[1:], len(day_numbers)]
    return {
        (date(1970, 1, 1) + timedelta(days=int(day_numbers[a]))).isoformat(): (int(a), int(b))
        for a, b in zip(starts, ends, strict=True)
    }


def _rewrite_partitions(
    accepted: pa.Table,
    contract: SourceContract,
    *,
    lake_dir: Path,
    files: StagedFiles,
    removals: dict[str, pd.DataFrame],
    lake_has_rows: bool,
) -> None:
    """Stage a rewrite of every partition that gains accepted rows or loses replaced ones."""
    keys = contract.primary_key
    slices = _day_slices(accepted)
    schema = pa.Schema.from_pandas(
        to_lake_frame(lake_schema(contract).empty_table(), contract), preserve_index=False
    )
    for day_name in sorted(set(slices) | set(removals)):
        frames = []
        current = read_partition(lake_dir, contract.name, day_name) if lake_has_rows else None
        if current is not None:
            if day_name in removals:
                gone_rows = current.merge(removals[day_name], on=keys, how="left", indicator=True)
                current = current.loc[(gone_rows["_merge"] != "both").to_numpy()]
            frames.append(to_lake_frame(current, contract))
        if day_name in slices:
            a, b = slices[day_name]
            if current is None:
                # A new partition: straight from Arrow, with the pandas metadata a DataFrame write has.
                rows = accepted.slice(a, b - a).select(contract.column_names).cast(schema)
                write_partition_table(lake_dir, contract.name, day_name, rows, write=files.write)
                continue
            frames.append(to_lake_frame(accepted.slice(a, b - a), contract))
        merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
        if current is not None:
            merged = merged.sort_values(keys, kind="stable", ignore_index=True)
        write_partition(lake_dir, contract.name, day_name, merged, write=files.write)
        # The rewrite holds the stream appends' rows too: they go in the same commit.
        for appended in partition_files(lake_dir, contract.name, day_name):
            if appended.name != PARTITION_FILE:
                files.remove(appended)


def _existing_keys(lake_dir: Path, contract: SourceContract) -> pa.Table | None:
    """Key, `ingested_at` and partition day of every row the lake holds, or None for an empty source."""
    if not list_partitions(lake_dir, contract.name):
        return None
    keys = ", ".join(f'"{k}"' for k in contract.primary_key)
    con = duckdb_connection()
    try:
        return con.execute(
            f'SELECT {keys}, "{contract.schema_.ingested_at}" AS _lake_ingested, '
            f"regexp_extract(filename, 'date=([0-9-]+)', 1) AS _lake_day "
            f"FROM read_parquet({sql_glob(lake_dir, contract.name)}, filename = true)"
        ).to_arrow_table()
    finally:
        con.close()


def count_late(accepted: pa.Table, contract: SourceContract, *, lateness: timedelta) -> int:
    """Accepted rows ingested more than the allowed lateness after their event time.

    Args:
        accepted: The rows written to the lake.
        contract: The source's contract (only `late_arrivals: flag` sources count them).
        lateness: The feature contract's allowed lateness.

    Returns:
        How many rows were late.
    """
    if contract.quality.late_arrivals != "flag" or accepted.num_rows == 0:
        return 0
    event = epoch_micros(accepted.column(contract.schema_.event_time))
    ingested = epoch_micros(accepted.column(contract.schema_.ingested_at))
    return int((ingested - event > lateness.total_seconds() * 1e6).sum())
