"""Landing → lake: contract-checked, deduplicated, quarantined, logged, idempotent.

First, recovery (`recovery.recover`) finishes or undoes whatever a killed run left (commits past
their commit point are completed, batches before it are logged `interrupted`, orphan temporaries
deleted). Then every landing file is read in full once: one that is not a readable table
(empty, binary, no header, wrong delimiter, a bad byte anywhere) raises `IngestError` before
anything is written, so a run never stops half-way on garbage.

For each source (customers first, so the others can check their customer ids) and each of its
landing files (`<landing>/<source>.csv|.parquet` and `<landing>/<source>/*.csv|*.parquet`), one
batch (its context: `batch.BatchContext`):

1. Skip the file when a batch with the same content hash already succeeded (idempotence).
2. Log the batch `running` (`batch.begin_batch`) and read it as text (`readers`).
3. Type every column and find row-level violations (null key, type, format, enum, range,
   unknown customer, future timestamp): `rows.screen_rows`.
4. Run the batch checks (schema, completeness, uniqueness, freshness unless backfilling, the
   `testing:` list, the share of rows quarantined): `batch_checks`. If any fails, the whole
   batch goes to quarantine with its reasons and nothing reaches the lake.
5. Otherwise resolve duplicates by key (latest `ingested_at` wins, ties keep the first row),
   also against what the lake already holds, and stage the rewrite of the affected date
   partitions (`merge.merge_into_lake`). Broken rows are staged for
   `<quarantine>/<source>/<batch>.parquet` (`rows.write_quarantine`).
6. Commit the batch's files and its log row together (`batch.commit_batch`): all of its
   partitions change, or none. Each batch commits on its own: a later batch that fails leaves
   the earlier ones of the run committed, each with its own log row.

Always: received = accepted + quarantined + duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import SOURCE_NAMES, SourceContract, load_source_contracts
from churnops.ingestion.batch import (
    BatchContext,
    BatchOutcome,
    BatchReport,
    IngestRun,
    Mode,
    begin_batch,
    commit_batch,
)
from churnops.ingestion.batch_checks import contract_checks, decide_mode, quarantine_rate_check, schema_check
from churnops.ingestion.checks import CheckResult, write_load_state
from churnops.ingestion.log import find_ingested, interrupt_batch
from churnops.ingestion.merge import count_late, merge_into_lake
from churnops.ingestion.readers import IngestError, find_landing_files, read_landing_file
from churnops.ingestion.recovery import Recovery, recover
from churnops.ingestion.rows import ScreenedRows, known_references, screen_rows, write_quarantine
from churnops.ingestion.validate import empty_violations
from churnops.storage.staging import StagedFiles

__all__ = ["BatchReport", "IngestError", "IngestReport", "ingest"]


@dataclass(frozen=True)
class IngestReport:
    """Every batch of one `ingest` run, sources in ingestion order.

    Attributes:
        batches: One report per landing file.
        quarantine_dir: Where quarantined rows went (`<quarantine>/<source>/<batch>.parquet`).
        missing: Requested sources that had no landing file.
        recovery: What recovery did at the start of the run.
    """

    batches: list[BatchReport]
    quarantine_dir: Path
    missing: list[str] = field(default_factory=list)
    recovery: Recovery = field(default_factory=Recovery)

    @property
    def ok(self) -> bool:
        """True when no batch failed."""
        return all(b.status != "failed" for b in self.batches)

    @property
    def failed(self) -> list[BatchReport]:
        """The batches that failed a batch-level rule."""
        return [b for b in self.batches if b.status == "failed"]

    def totals(self, source: str) -> dict[str, int]:
        """Summed counts of one source's batches.

        Args:
            source: The source name.

        Returns:
            received, accepted, quarantined, duplicates, replaced and late.
        """
        keys = ("received", "accepted", "quarantined", "duplicates", "replaced", "late")
        mine = [b for b in self.batches if b.source == source]
        return {k: sum(getattr(b, k) for b in mine) for k in keys}


def ingest(
    *,
    landing_dir: Path,
    lake_dir: Path,
    quarantine_dir: Path,
    log_db: Path,
    sources: list[str] | None = None,
    backfill: bool | None = None,
    now: datetime | None = None,
    contracts: dict[str, SourceContract] | None = None,
) -> IngestReport:
    """Ingest the landing files of the given sources into the lake.

    Args:
        landing_dir: Folder with `<source>.csv|.parquet` files and/or `<source>/` folders of them.
        lake_dir: The lake's root folder.
        quarantine_dir: Root of the quarantine (`<quarantine>/<source>/<batch>.parquet`).
        log_db: The SQLite ingestion log.
        sources: Only these sources (default: all five); always processed customers first.
        backfill: True: a historical load (freshness skipped); False: live (freshness enforced);
            None: decide per batch — a batch whose data spans more than the contract's
            `quality.freshness.backfill_span` is a backfill.
        now: The ingestion time, reference for freshness and future timestamps (default: now).
        contracts: The source contracts (default: `contracts/sources/*.yaml`).

    Returns:
        The report. A failed batch does not raise: its status is `failed` and its checks say
        which rule failed, with the figure and the threshold.

    Raises:
        IngestError: When the landing folder holds no file for the sources, a source name is
            unknown, or a file is not a readable table (one paragraph naming file and expectation).
    """
    contracts = contracts if contracts is not None else load_source_contracts()
    recovery = recover(lake_dir=lake_dir, quarantine_dir=quarantine_dir, log_db=log_db)
    names = _source_order(contracts, sources)
    files = find_landing_files(landing_dir, names)
    if not any(files.values()):
        raise IngestError(
            f"landing folder {landing_dir} has no file for {', '.join(names)}: expected <source>.csv or "
            f"<source>.parquet (or a <source>/ folder of them) for at least one of these sources."
        )
    _refuse_garbage(files, contracts)
    run = IngestRun(
        contracts=contracts,
        lake_dir=lake_dir,
        quarantine_dir=quarantine_dir,
        log_db=log_db,
        backfill=backfill,
        now=(now or datetime.now(UTC)).astimezone(UTC),
        lateness=load_feature_contract().time.allowed_lateness,
    )
    batches = [
        _ingest_file(BatchContext.start(path, contract=contracts[source], run=run))
        for source in names
        for path in files[source]
    ]
    missing = [s for s in names if not files[s]]
    return IngestReport(batches=batches, quarantine_dir=quarantine_dir, missing=missing, recovery=recovery)


def _source_order(contracts: dict[str, SourceContract], sources: list[str] | None) -> list[str]:
    """The requested sources in ingestion order: customers first, so the others can check their ids."""
    wanted = list(sources) if sources is not None else list(contracts)
    unknown = [s for s in wanted if s not in contracts]
    if unknown:
        raise IngestError(f"unknown source(s) {', '.join(unknown)}: expected some of {', '.join(contracts)}.")
    order = [s for s in (*SOURCE_NAMES, *contracts) if s in wanted]
    return list(dict.fromkeys(order))


def _refuse_garbage(files: dict[str, list[Path]], contracts: dict[str, SourceContract]) -> None:
    """Raise on any landing file of a format the contract refuses or that is not a table at all."""
    # Before anything is written, so a bad file never leaves a half-ingested run. Every file is
    # read in full (not just sniffed): a bad byte deep in the last file must stop the run here,
    # not after the first sources were committed. The tables are dropped again to bound memory.
    for source, paths in files.items():
        for path in paths:
            fmt = path.suffix.lstrip(".")
            if fmt not in contracts[source].delivery.formats:
                raise IngestError(
                    f"landing file {path} is {fmt}, which the {source} contract does not accept: expected "
                    f"one of {', '.join(contracts[source].delivery.formats)}."
                )
            read_landing_file(path, contracts[source])


def _ingest_file(ctx: BatchContext) -> BatchReport:
    """Ingest one landing file: skip it, or stage its outcome and commit it with its log row."""
    prior = find_ingested(ctx.run.log_db, source=ctx.source, content_hash=ctx.content_hash)
    if prior is not None:
        return BatchReport.from_outcome(ctx, _skipped(prior))
    begin_batch(ctx)
    files = ctx.staged_files()
    try:
        report = _stage_batch(ctx, files=files)
    except BaseException as exc:
        # Before the commit point: undo the staging, so the lake stays as it was, and say so.
        files.discard()
        note = f"interrupted by {type(exc).__name__}: {exc}; nothing of it reached the lake"
        interrupt_batch(ctx.run.log_db, ctx.log_id, run=ctx.run.run_id, note=note)
        raise
    return commit_batch(ctx, report, files=files)


def _stage_batch(ctx: BatchContext, *, files: StagedFiles) -> BatchReport:
    """Reject the file whole or merge its valid rows; stage the files either way."""
    raw = read_landing_file(ctx.file, ctx.contract)
    schema = schema_check(ctx.contract, raw.column_names)
    if schema is not None:
        return _reject(
            ctx,
            raw,
            files=files,
            checks=[schema],
            violations=empty_violations(),
            mode=ctx.requested_mode,
            reason="",
        )
    rows = screen_rows(
        raw,
        ctx.contract,
        now=ctx.run.now,
        known=known_references(ctx.contract, lake_dir=ctx.run.lake_dir, contracts=ctx.run.contracts),
    )
    mode, reason = decide_mode(rows.valid, ctx.contract, backfill=ctx.run.backfill)
    checks = contract_checks(rows.typed, rows.valid, ctx.contract, now=ctx.run.now, mode=mode, reason=reason)
    checks.append(quarantine_rate_check(ctx.contract, broken=rows.broken, received=raw.num_rows))
    if any(not c.passed for c in checks):
        return _reject(
            ctx, raw, files=files, checks=checks, violations=rows.violations, mode=mode, reason=reason
        )
    return _accept(ctx, raw, files=files, rows=rows, checks=checks, mode=mode, reason=reason)


def _skipped(prior: dict[str, Any]) -> BatchOutcome:
    """The outcome of a file whose exact content was ingested before (`prior` is its log row)."""
    return BatchOutcome(
        status="skipped",
        mode=prior["mode"],
        message=(
            f"skipped: this exact file (same content hash) was ingested as batch {prior['batch']} "
            f"at {prior['finished_at']}; nothing changed"
        ),
    )


def _reject(
    ctx: BatchContext,
    raw: pa.Table,
    *,
    files: StagedFiles,
    checks: list[CheckResult],
    violations: pd.DataFrame,
    mode: Mode,
    reason: str,
) -> BatchReport:
    """Stage the quarantine of every row of a batch that failed a batch-level check."""
    summary = "; ".join(c.message for c in checks if not c.passed)
    quarantine = write_quarantine(
        ctx.quarantine_file,
        raw,
        violations,
        file=ctx.file,
        contract=ctx.contract,
        files=files,
        reject_rest=f"batch failed: {summary}",
    )
    outcome = BatchOutcome(
        status="failed",
        mode=mode,
        message=f"failed, nothing reached the lake: {summary}",
        backfill_reason=reason,
        received=raw.num_rows,
        quarantine=quarantine,
        checks=tuple(checks),
    )
    return BatchReport.from_outcome(ctx, outcome)


def _accept(
    ctx: BatchContext,
    raw: pa.Table,
    *,
    files: StagedFiles,
    rows: ScreenedRows,
    checks: list[CheckResult],
    mode: Mode,
    reason: str,
) -> BatchReport:
    """Stage the merge of a batch's valid rows into the lake and the quarantine of its broken ones."""
    merge = merge_into_lake(rows.valid, ctx.contract, lake_dir=ctx.run.lake_dir, files=files)
    late = count_late(merge.accepted, ctx.contract, lateness=ctx.run.lateness)
    quarantine = write_quarantine(
        ctx.quarantine_file, raw, rows.violations, file=ctx.file, contract=ctx.contract, files=files
    )
    write_load_state(ctx.run.lake_dir, ctx.source, mode=mode, batch=ctx.batch, files=files)
    outcome = BatchOutcome(
        status="ok",
        mode=mode,
        message=f"ok ({mode}{': ' + reason if reason else ''})",
        backfill_reason=reason,
        received=raw.num_rows,
        accepted=merge.accepted.num_rows,
        duplicates=merge.duplicates,
        replaced=merge.replaced,
        late=late,
        quarantine=quarantine,
        checks=tuple(checks),
    )
    report = BatchReport.from_outcome(ctx, outcome)
    if report.received != report.accepted + report.quarantined + report.duplicates:
        raise AssertionError(f"row accounting broke for {ctx.file}: {report}")
    return report
