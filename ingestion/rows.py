"""Row-level screening of a batch: which rows may go on to the lake, and the quarantine of the rest.

`screen_rows` types the delivery and collects every row-level violation (null, type, format,
enum, range, future timestamp, unknown reference); the rows without one are the batch's valid
rows. `write_quarantine` puts the broken rows, with their reasons, in the batch's quarantine file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.batch import Quarantined
from churnops.ingestion.validate import (
    future_violations,
    parse_batch,
    quarantine_frame,
    reference_violations,
)
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import list_partitions, source_glob
from churnops.storage.staging import StagedFiles

ROW_POSITION = "_row_position"


@dataclass(frozen=True)
class ScreenedRows:
    """A batch after the row-level rules.

    Attributes:
        typed: Every row, typed (see `ParsedBatch.typed`).
        violations: Every row-level violation (see `ParsedBatch.violations`).
        valid: The rows without a violation, plus `ROW_POSITION` (their 0-based row in the file).
        broken: How many rows have at least one violation.
    """

    typed: pa.Table
    violations: pd.DataFrame
    valid: pa.Table
    broken: int


def screen_rows(
    raw: pa.Table, contract: SourceContract, *, now: datetime, known: dict[str, pa.Array]
) -> ScreenedRows:
    """Type a delivery and split its rows into valid and broken.

    Args:
        raw: The delivery as text, with exactly the contract's columns.
        contract: The source's contract.
        now: The ingestion time (UTC-aware), for future timestamps.
        known: The values `references` columns may take (see `known_references`).

    Returns:
        The typed rows, the violations and the valid rows.
    """
    parsed = parse_batch(raw, contract)
    violations = pd.concat(
        [
            parsed.violations,
            future_violations(parsed.typed, raw, contract, now=now),
            reference_violations(parsed.typed, raw, contract, known=known),
        ],
        ignore_index=True,
    )
    bad = np.zeros(raw.num_rows, dtype=bool)
    bad[violations["row"].to_numpy(dtype=np.int64)] = True
    positions = pa.array(np.arange(raw.num_rows), pa.int64())
    valid = parsed.typed.append_column(ROW_POSITION, positions).filter(pa.array(~bad))
    return ScreenedRows(typed=parsed.typed, violations=violations, valid=valid, broken=int(bad.sum()))


def known_references(
    contract: SourceContract, *, lake_dir: Path, contracts: dict[str, SourceContract]
) -> dict[str, pa.Array]:
    """For each `references` of the contract, the values the lake holds (e.g. customer ids).

    Args:
        contract: The source's contract.
        lake_dir: The lake's root folder.
        contracts: Every source contract (a reference to a source without one knows no values).

    Returns:
        `"<source>.<column>"` → the distinct values in the lake (empty when it holds none).
    """
    known: dict[str, pa.Array] = {}
    for column in contract.columns:
        if column.references is None or column.references in known:
            continue
        ref_source, ref_column = column.references.split(".", 1)
        if ref_source not in contracts or not list_partitions(lake_dir, ref_source):
            known[column.references] = pa.array([], pa.string())
            continue
        con = duckdb_connection()
        try:
            values = con.execute(
                f'SELECT DISTINCT "{ref_column}" AS v FROM read_parquet({sql_glob(lake_dir, ref_source)})'
            ).to_arrow_table()
        finally:
            con.close()
        known[column.references] = values.column("v").combine_chunks()
    return known


def sql_glob(lake_dir: Path, source: str) -> str:
    """A source's partition glob as a quoted SQL string literal.

    Args:
        lake_dir: The lake's root folder.
        source: The source name.

    Returns:
        The literal, single quotes escaped.
    """
    return "'" + source_glob(lake_dir, source).replace("'", "''") + "'"


def write_quarantine(
    path: Path,
    raw: pa.Table,
    violations: pd.DataFrame,
    *,
    file: Path,
    contract: SourceContract,
    files: StagedFiles,
    reject_rest: str | None = None,
) -> Quarantined:
    """Stage a batch's quarantine file (or, with no broken rows, its removal) in the batch's commit.

    Args:
        path: The batch's quarantine file.
        raw: The delivery as text.
        violations: Its row-level violations.
        file: The landing file, as the quarantine names it.
        contract: The source's contract.
        files: The batch's commit; the file changes when it is applied.
        reject_rest: When the whole batch failed, the reason given to rows without a violation of
            their own (see `quarantine_frame`).

    Returns:
        What was quarantined.
    """
    frame = quarantine_frame(raw, violations, file=str(file), contract=contract, reject_rest=reject_rest)
    if frame.empty:
        # A re-run that quarantines nothing must not leave an earlier run's file behind.
        files.remove(path)
        return Quarantined()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    files.write(path, lambda tmp: pq.write_table(table, tmp))
    return Quarantined(rows=len(frame), rules=rule_counts(frame), file=path)


def rule_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Quarantined rows per first-violated rule.

    Args:
        quarantine: A quarantine frame (see `quarantine_frame`).

    Returns:
        Rule → rows, rules in alphabetical order.
    """
    if quarantine.empty:
        return {}
    return {str(k): int(v) for k, v in quarantine["_rule"].value_counts().sort_index().items()}
