"""The stream's append path: one micro-batch of one source → lake, quarantine and log, in one commit.

Batch ingestion rewrites partitions after scanning every key of the source; a micro-batch cannot
afford that, so this path:

1. screens the records with the same row rules as a landing file (`rows.screen_rows`) and sets
   aside what `records.decode` could not read;
2. keeps the latest `ingested_at` per key within the micro-batch (`merge.dedup`);
3. compares the winners with the keys of the day partitions they touch, and only those: an equal
   or later version there makes a row a duplicate, an older one is replaced;
4. stages one new file per touched day, `stream-<first>-<last>.parquet` (the micro-batch's
   sequence range, rows sorted by key), or, when a row replaces an older version, the whole
   partition folded into `data.parquet`; stages the quarantine file
   `<quarantine>/<source>/stream-<first>-<last>.parquet`;
5. commits the files and the micro-batch's log row together, like a landing file
   (`StagedFiles`, the row written `committing` with the commit record is the commit point,
   recovery rolls a killed commit forward).

Nothing written depends on the wall clock: `ingested_at` and the reference time for future
timestamps are the broker's storage times, so the same records give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.log import record_batch, settle_batch
from churnops.ingestion.merge import count_late, dedup
from churnops.ingestion.rows import ROW_POSITION, rule_counts, screen_rows
from churnops.ingestion.stream.records import (
    BODY_COLUMN,
    SEQUENCE_COLUMN,
    Decoded,
    raw_table,
    unreadable_table,
)
from churnops.ingestion.validate import empty_violations, lake_schema, quarantine_frame, to_lake_frame
from churnops.storage.crash import crash_point
from churnops.storage.lake import (
    PARTITION_FILE,
    partition_files,
    partition_path,
    read_partition_table,
    stream_file_name,
    stream_path,
)
from churnops.storage.staging import StagedFiles

_DAY = "_day"


@dataclass(frozen=True)
class StreamTarget:
    """Where a micro-batch goes and what it is checked against.

    Attributes:
        lake_dir: The lake's root folder.
        quarantine_dir: Root of the quarantine.
        log_db: The ingestion log.
        contracts: Every source contract (references may point at another source).
        lateness: The feature contract's allowed lateness (later rows are counted as late).
        stream: The broker stream's name, recorded in the log.
        guard: Held while a commit that replaces files of a partition (a fold) renames them, so
            a reader in the same process that holds it too never sees the new `data.parquet`
            beside the stream files it replaces (other processes are kept out by the writer lock).
    """

    lake_dir: Path
    quarantine_dir: Path
    log_db: Path
    contracts: dict[str, SourceContract]
    lateness: timedelta
    stream: str
    guard: threading.Lock | None = None


@dataclass(frozen=True)
class Appended:
    """What one source's part of a micro-batch did.

    Attributes:
        source: The source.
        first: Its lowest stream sequence.
        last: Its highest stream sequence.
        received: Records received.
        accepted: Rows written to the lake.
        quarantined: Records quarantined (unreadable or breaking a row rule).
        duplicates: Records dropped for an equal or later version of their key.
        replaced: Accepted rows that replaced an older version in the lake.
        late: Accepted rows later than the allowed lateness.
        touched: Distinct values of `entity_column` among the accepted rows.
        files: Lake files written.
    """

    source: str
    first: int
    last: int
    received: int
    accepted: int
    quarantined: int
    duplicates: int
    replaced: int
    late: int
    touched: tuple[str, ...]
    files: tuple[Path, ...]


def lake_table_schema(contract: SourceContract) -> pa.Schema:
    """The exact Arrow schema (pandas metadata included) every lake file of a source is written with."""
    return pa.Schema.from_pandas(
        to_lake_frame(lake_schema(contract).empty_table(), contract), preserve_index=False
    )


def append_source(
    group: Decoded, contract: SourceContract, *, target: StreamTarget, entity_column: str = "customer_id"
) -> Appended:
    """Validate, deduplicate and commit one source's records of a micro-batch.

    Args:
        group: The source's decoded records.
        contract: The source's contract.
        target: Where things go.
        entity_column: The column whose accepted values are reported as touched.

    Returns:
        What was done; received = accepted + quarantined + duplicates.
    """
    first, last = group.first, group.last
    raw = raw_table(group, contract)
    now = max(r.stored_at for r in (*(r for r, _ in group.records), *(u.record for u in group.unreadable)))
    rows = screen_rows(raw, contract, now=now, known=_known_references(contract, target=target))
    winners = dedup(rows.valid, contract)
    files = StagedFiles(name=f"stream:{contract.name}", tag=f"{os.getpid()}-{first}")
    fresh, duplicates, replaced = _stage_lake(
        winners, contract, target=target, first=first, last=last, files=files
    )
    quarantined = _stage_quarantine(group, raw, rows.violations, contract, target=target, files=files)
    accepted = fresh.num_rows
    touched: tuple[str, ...] = ()
    if entity_column in contract.column_names and accepted:
        touched = tuple(sorted(pc.unique(fresh.column(entity_column)).to_pylist()))
    result = Appended(
        source=contract.name,
        first=first,
        last=last,
        received=group.received,
        accepted=accepted,
        quarantined=quarantined.rows,
        duplicates=(rows.valid.num_rows - winners.num_rows) + duplicates,
        replaced=replaced,
        late=count_late(fresh, contract, lateness=target.lateness),
        touched=touched,
        files=tuple(final for _, final in files.renames if final.is_relative_to(target.lake_dir)),
    )
    if result.received != result.accepted + result.quarantined + result.duplicates:
        raise AssertionError(f"row accounting broke for {contract.name} sequences {first}-{last}: {result}")
    row = _log_row(result, contract, target=target, stored=now, quarantine=quarantined)
    commit_staged(target.log_db, row, files=files, point=f"stream:{contract.name}", guard=target.guard)
    return result


@dataclass(frozen=True)
class _Quarantine:
    rows: int
    rules: dict[str, int]
    file: Path | None


def _stage_lake(
    winners: pa.Table,
    contract: SourceContract,
    *,
    target: StreamTarget,
    first: int,
    last: int,
    files: StagedFiles,
) -> tuple[pa.Table, int, int]:
    """Stage the winners that are new to their partitions; return them, the duplicates and the replaced."""
    schema = lake_table_schema(contract)
    keys = contract.primary_key
    ingested = contract.schema_.ingested_at
    days = pc.cast(pc.cast(winners.column(contract.partition_column), pa.date32()), pa.string())
    winners = winners.append_column(_DAY, days)
    kept: list[pa.Table] = []
    duplicates = replaced = 0
    for day in sorted(set(days.to_pylist())):
        rows = winners.filter(pc.equal(winners.column(_DAY), day))
        lake = _partition_keys(target.lake_dir, contract, day)
        older = np.zeros(rows.num_rows, dtype=bool)
        if lake is not None:
            joined = rows.select([*keys, ingested, ROW_POSITION]).join(
                lake, keys=keys, join_type="left outer"
            )
            # Both sides in the same order (the join does not keep any): one row per winner each.
            joined = joined.sort_by(ROW_POSITION)
            rows = rows.sort_by(ROW_POSITION)
            in_lake = _flags(pc.is_valid(joined.column("_lake_ingested")))
            newer = _flags(
                pc.fill_null(pc.greater(joined.column(ingested), joined.column("_lake_ingested")), False)
            )
            duplicates += int((in_lake & ~newer).sum())
            older = in_lake & newer
            rows = rows.filter(pa.array(~in_lake | newer))
            older = older[~in_lake | newer]
        rows = rows.sort_by([(k, "ascending") for k in keys])
        body = rows.select(contract.column_names).cast(schema)
        if older.any():
            replaced += int(older.sum())
            current = read_partition_table(target.lake_dir, contract.name, day)
            _stage_fold(current, body, contract, target=target, day=day, files=files, schema=schema)
        elif body.num_rows:
            files.write(
                stream_path(target.lake_dir, contract.name, day, first=first, last=last),
                lambda tmp, body=body: pq.write_table(body, tmp),
            )
        kept.append(body)
    fresh = pa.concat_tables(kept) if kept else lake_schema(contract).empty_table().cast(schema)
    return fresh, duplicates, replaced


# Lake file → (its mtime and size, its keys and `ingested_at`): a stream file never changes
# once written, so each is read once per process; a rewritten `data.parquet` is read again.
_KEY_CACHE: dict[Path, tuple[tuple[int, int], pa.Table]] = {}
_KEY_CACHE_FILES = 4_096


def _partition_keys(lake_dir: Path, contract: SourceContract, day: str) -> pa.Table | None:
    """Key columns and `_lake_ingested` of every row of one partition, or None when it has no file."""
    keys = contract.primary_key
    columns = [*keys, contract.schema_.ingested_at]
    parts = []
    for path in partition_files(lake_dir, contract.name, day):
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _KEY_CACHE.get(path)
        if cached is None or cached[0] != stamp:
            if len(_KEY_CACHE) >= _KEY_CACHE_FILES:
                _KEY_CACHE.clear()
            table = pq.read_table(path, columns=columns).rename_columns([*keys, "_lake_ingested"])
            cached = _KEY_CACHE[path] = (stamp, table)
        parts.append(cached[1])
    return pa.concat_tables(parts) if parts else None


# Lake file → (its mtime and size, the distinct values of one referenced column): the same
# reasoning as `_KEY_CACHE`, for the `references` checks (e.g. which customers exist).
_REF_CACHE: dict[tuple[Path, str], tuple[tuple[int, int], pa.Array]] = {}


def _known_references(contract: SourceContract, *, target: StreamTarget) -> dict[str, pa.Array]:
    """What `rows.known_references` finds, read per file and cached: a micro-batch reads only new files."""
    from churnops.storage.lake import list_partitions

    known: dict[str, pa.Array] = {}
    for column in contract.columns:
        if column.references is None or column.references in known:
            continue
        ref_source, ref_column = column.references.split(".", 1)
        parts = [pa.array([], pa.string())]
        if ref_source in target.contracts:
            for day in list_partitions(target.lake_dir, ref_source):
                for path in partition_files(target.lake_dir, ref_source, day):
                    parts.append(_distinct(path, ref_column))
        known[column.references] = pc.unique(pa.chunked_array(parts, pa.string()))
    return known


def _distinct(path: Path, column: str) -> pa.Array:
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _REF_CACHE.get((path, column))
    if cached is None or cached[0] != stamp:
        if len(_REF_CACHE) >= _KEY_CACHE_FILES:
            _REF_CACHE.clear()
        values = pc.unique(pq.read_table(path, columns=[column]).column(0)).cast(pa.string())
        cached = _REF_CACHE[(path, column)] = (stamp, values)
    return cached[1]


def _stage_fold(
    current: pa.Table,
    body: pa.Table,
    contract: SourceContract,
    *,
    target: StreamTarget,
    day: str,
    files: StagedFiles,
    schema: pa.Schema,
) -> None:
    """Stage a partition rewritten whole: its rows minus the replaced versions, plus the new rows."""
    keys = contract.primary_key
    old = current.select(contract.column_names).cast(schema)
    old_keys = _key_strings(old, keys)
    folded = pa.concat_tables([old.filter(pc.invert(pc.is_in(old_keys, _key_strings(body, keys)))), body])
    write_fold(folded, contract, target.lake_dir, day=day, files=files)


def write_fold(
    rows: pa.Table, contract: SourceContract, lake_dir: Path, *, day: str, files: StagedFiles
) -> None:
    """Stage a partition as one `data.parquet` of `rows` sorted by key, its stream files removed.

    The bytes depend only on the set of rows, so folding the same rows twice, in any grouping,
    writes the same file.

    Args:
        rows: The partition's complete rows, in the lake schema.
        contract: The source's contract.
        lake_dir: The lake's root folder.
        day: The partition.
        files: The commit the rewrite belongs to.
    """
    ordered = rows.sort_by([(k, "ascending") for k in contract.primary_key])
    files.write(partition_path(lake_dir, contract.name, day), lambda tmp: pq.write_table(ordered, tmp))
    for path in partition_files(lake_dir, contract.name, day):
        if path.name != PARTITION_FILE:
            files.remove(path)


def _key_strings(table: pa.Table, keys: list[str]) -> pa.ChunkedArray:
    if len(keys) == 1:
        return pc.cast(table.column(keys[0]), pa.string())
    return pc.binary_join_element_wise(*(pc.cast(table.column(k), pa.string()) for k in keys), "\x1f")


def _flags(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _stage_quarantine(
    group: Decoded,
    raw: pa.Table,
    violations: pd.DataFrame,
    contract: SourceContract,
    *,
    target: StreamTarget,
    files: StagedFiles,
) -> _Quarantine:
    """Stage the quarantine file of the micro-batch: broken rows with their reasons, then unreadable ones."""
    label = f"stream {target.stream} sequences {group.first}-{group.last}"
    frames = []
    screened = quarantine_frame(raw, violations, file=label, contract=contract)
    if not screened.empty:
        frames.append(screened)
    if group.unreadable:
        unread = unreadable_table(group, contract)
        found = pd.DataFrame(
            {
                "row": np.arange(len(group.unreadable), dtype=np.int64),
                "column": BODY_COLUMN,
                "rule": [u.rule for u in group.unreadable],
                "value": [None] * len(group.unreadable),
                "message": [u.message for u in group.unreadable],
            }
        )
        frames.append(quarantine_frame(unread, found.astype(empty_violations().dtypes.to_dict()), file=label,
                                       contract=contract))  # fmt: skip
    if not frames:
        return _Quarantine(rows=0, rules={}, file=None)
    frame = pd.concat(frames, ignore_index=True).sort_values(SEQUENCE_COLUMN, key=lambda s: s.astype("int64"))
    frame = frame.astype(pd.StringDtype("python")).astype({"_row": "int64"}).reset_index(drop=True)
    path = target.quarantine_dir / contract.name / stream_file_name(group.first, group.last)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    files.write(path, lambda tmp: pq.write_table(table, tmp))
    return _Quarantine(rows=len(frame), rules=rule_counts(frame), file=path)


def _log_row(
    result: Appended,
    contract: SourceContract,
    *,
    target: StreamTarget,
    stored: datetime,
    quarantine: _Quarantine,
) -> dict[str, Any]:
    """The micro-batch's ingestion-log row (times are the broker's, so a replay logs the same row)."""
    batch = stream_file_name(result.first, result.last).removesuffix(".parquet")
    identity = f"{target.stream}:{contract.name}:{result.first}-{result.last}"
    return {
        "id": f"{contract.name}/{batch}",
        "source": contract.name,
        "batch": batch,
        "file": f"nats://{target.stream}/{result.first}-{result.last}",
        "content_hash": hashlib.sha256(identity.encode()).hexdigest(),
        "contract_version": contract.version,
        "mode": "live",
        "backfill_reason": "",
        "received": result.received,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "duplicates": result.duplicates,
        "replaced": result.replaced,
        "late": result.late,
        "failures": json.dumps([]),
        "quarantine_file": str(quarantine.file) if quarantine.file else None,
        "started_at": stored.astimezone(UTC).isoformat(),
        "finished_at": stored.astimezone(UTC).isoformat(),
        "seconds": 0.0,
        "stream_first": result.first,
        "stream_last": result.last,
    }


def commit_staged(
    log_db: Path, row: dict[str, Any], *, files: StagedFiles, point: str, guard: threading.Lock | None = None
) -> None:
    """Commit staged files with their log row: the row written `committing` is the commit point.

    Args:
        log_db: The ingestion log.
        row: The log row (its final status is `ok`).
        files: The staged files.
        point: Prefix of the crash points (`<point>:staged`, `:committed`, `:renamed`).
        guard: Held around the renames when the commit removes files (see `StreamTarget.guard`).
    """
    crash_point(f"{point}:staged")
    pending = json.dumps({"status": "ok", "files": files.to_record()})
    record_batch(
        log_db, row | {"status": "committing", "pending": pending, "run": files.tag, "pid": os.getpid()}
    )
    crash_point(f"{point}:committed")
    with guard if guard is not None and files.removals else contextlib.nullcontext():
        files.apply()
    crash_point(f"{point}:renamed")
    settle_batch(log_db, row["id"], status="ok")


@dataclass(frozen=True)
class Compacted:
    """What compacting one source did.

    Attributes:
        source: The source.
        partitions: Days whose stream files were folded into `data.parquet`.
        files: Stream files folded (and removed).
    """

    source: str
    partitions: tuple[str, ...]
    files: int


def compact_source(
    contract: SourceContract,
    *,
    lake_dir: Path,
    log_db: Path,
    days: list[str] | None = None,
    min_files: int = 1,
    guard: threading.Lock | None = None,
) -> Compacted:
    """Fold each partition's stream files into its `data.parquet`, one commit per partition.

    Idempotent: a partition without stream files is left alone, and folding gives the same bytes
    whatever the files were (rows sorted by key, one schema). A kill mid-way is finished by
    recovery from the commit record, like any batch.

    Args:
        contract: The source's contract.
        lake_dir: The lake's root folder.
        log_db: The ingestion log (each partition's fold is logged, with zero counts).
        days: Only these partitions (default: all).
        min_files: Fold a partition only when it has at least this many stream files.
        guard: Held around each partition's renames (see `StreamTarget.guard`).

    Returns:
        What was folded.
    """
    from churnops.storage.lake import list_partitions

    schema = lake_table_schema(contract)
    folded: list[str] = []
    count = 0
    for day in days if days is not None else list_partitions(lake_dir, contract.name):
        paths = partition_files(lake_dir, contract.name, day)
        streams = [p for p in paths if p.name != PARTITION_FILE]
        if len(streams) < max(min_files, 1):
            continue
        rows = pa.concat_tables([pq.read_table(p).select(contract.column_names).cast(schema) for p in paths])
        files = StagedFiles(name=f"compact:{contract.name}", tag=f"{os.getpid()}-compact")
        write_fold(rows, contract, lake_dir, day=day, files=files)
        last = streams[-1].stem
        row_id = f"{contract.name}/compact-{day}-{last}"
        row = {
            "id": row_id,
            "source": contract.name,
            "batch": f"compact-{day}-{last}",
            "file": str(partition_path(lake_dir, contract.name, day)),
            "content_hash": hashlib.sha256(row_id.encode()).hexdigest(),
            "contract_version": contract.version,
            "mode": "live",
            "received": 0,
            "accepted": 0,
            "quarantined": 0,
            "duplicates": 0,
            "replaced": 0,
            "late": 0,
            "note": f"folded {len(streams)} stream file(s) into {PARTITION_FILE}",
            "started_at": datetime.now(UTC).isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
        }
        commit_staged(log_db, row, files=files, point=f"compact:{contract.name}", guard=guard)
        folded.append(day)
        count += len(streams)
    return Compacted(source=contract.name, partitions=tuple(folded), files=count)
