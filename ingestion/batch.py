"""One batch (one landing file) of an ingestion run: its context, its outcome, its report, its log row.

`IngestRun` holds what every batch of a run shares (where things go, the mode asked for, the
reference time); `BatchContext` adds what identifies one file. A batch ends in one
`BatchOutcome` (skipped, failed or ok), and `BatchReport.from_outcome` is the one place that
turns context and outcome into the report the command line prints and the log records.

A batch's files (lake partitions, quarantine file, load state) are staged and committed together
with its log row: `begin_batch` logs it `running`, `commit_batch` records the commit (the commit
point), renames the files into place and marks it done. A kill before the commit point leaves
the lake as it was; after it, recovery finishes the renames (`ingestion.recovery`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.checks import CheckResult
from churnops.ingestion.log import record_batch, settle_batch
from churnops.ingestion.readers import content_hash
from churnops.storage.crash import crash_point
from churnops.storage.staging import StagedFiles

Status = Literal["ok", "failed", "skipped"]
Mode = Literal["live", "backfill"]


@dataclass(frozen=True)
class IngestRun:
    """What every batch of one `ingest` run shares.

    Attributes:
        contracts: Every source contract (a batch's references may point at another source).
        lake_dir: The lake's root folder.
        quarantine_dir: Root of the quarantine (`<quarantine>/<source>/<batch>.parquet`).
        log_db: The SQLite ingestion log.
        backfill: True: backfill; False: live; None: decided per batch from its rows.
        now: The ingestion time (UTC-aware), reference for freshness and future timestamps.
        lateness: The feature contract's allowed lateness (later rows are counted as late).
        run_id: Unique to this run: in its log rows and in the names of its temporary files.
    """

    contracts: dict[str, SourceContract]
    lake_dir: Path
    quarantine_dir: Path
    log_db: Path
    backfill: bool | None
    now: datetime
    lateness: timedelta
    run_id: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:12]}")


@dataclass(frozen=True)
class BatchContext:
    """One landing file being ingested, and the run it belongs to.

    Attributes:
        run: The run's shared settings.
        contract: The file's source contract.
        file: The landing file.
        content_hash: SHA-256 of the file.
        batch: The batch id, `<file stem>-<first 12 hex digits of the content hash>`.
        started_at: When the batch started (for the log).
        clock: `time.perf_counter()` when the batch started (for its wall time).
    """

    run: IngestRun
    contract: SourceContract
    file: Path
    content_hash: str
    batch: str
    started_at: datetime
    clock: float

    @classmethod
    def start(cls, path: Path, *, contract: SourceContract, run: IngestRun) -> BatchContext:
        """Start the clock on a landing file and hash it.

        Args:
            path: The landing file.
            contract: Its source contract.
            run: The run's shared settings.

        Returns:
            The batch's context.
        """
        clock = time.perf_counter()
        started_at = datetime.now(UTC)
        digest = content_hash(path)
        return cls(
            run=run,
            contract=contract,
            file=path,
            content_hash=digest,
            batch=f"{path.stem}-{digest[:12]}",
            started_at=started_at,
            clock=clock,
        )

    @property
    def source(self) -> str:
        """The source name."""
        return self.contract.name

    @property
    def quarantine_file(self) -> Path:
        """Where this batch's quarantined rows go (whether or not there are any)."""
        return self.run.quarantine_dir / self.contract.name / f"{self.batch}.parquet"

    @property
    def requested_mode(self) -> Mode:
        """The mode before the rows are seen: `backfill` only when asked for."""
        return "backfill" if self.run.backfill else "live"

    @property
    def log_id(self) -> str:
        """The batch's row in the ingestion log, `<source>/<batch>`."""
        return f"{self.source}/{self.batch}"

    def elapsed(self) -> float:
        """Seconds since the batch started."""
        return time.perf_counter() - self.clock

    def staged_files(self) -> StagedFiles:
        """An empty commit for this batch's files, its temporaries tagged with the run."""
        return StagedFiles(name=self.source, tag=self.run.run_id)


@dataclass(frozen=True)
class Quarantined:
    """The rows a batch quarantined.

    Attributes:
        rows: How many rows.
        rules: Rows per first-violated rule.
        file: The quarantine file, or None when no row was quarantined.
    """

    rows: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    file: Path | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """How a batch ended, before it is stamped with its context.

    Attributes:
        status: `ok`, `failed` or `skipped`.
        mode: `live` or `backfill`.
        message: The one-line summary.
        backfill_reason: Why the batch counted as a backfill ("" for live batches).
        received: Data rows in the file.
        accepted: Rows written to the lake.
        duplicates: Rows dropped in favour of a later or equal version of their key.
        replaced: Accepted rows that replaced an older version in the lake.
        late: Accepted rows that arrived later than the allowed lateness.
        quarantine: The quarantined rows.
        checks: Every batch-level check, passed or not.
    """

    status: Status
    mode: Mode
    message: str
    backfill_reason: str = ""
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    replaced: int = 0
    late: int = 0
    quarantine: Quarantined = field(default_factory=Quarantined)
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True)
class BatchReport:
    """What happened to one landing file.

    Attributes:
        source: The source.
        file: The landing file.
        batch: The batch id, `<file stem>-<first 12 hex digits of the content hash>`.
        content_hash: SHA-256 of the file.
        contract_version: The version of the source contract the batch was checked against.
        status: `ok`, `failed` (a batch-level rule failed: nothing reached the lake) or `skipped`
            (this exact file was ingested before: nothing changed, every count is 0).
        mode: `live` or `backfill` (freshness skipped).
        backfill_reason: Why the batch counted as a backfill ("" for live batches).
        received: Data rows in the file.
        accepted: Rows written to the lake (new keys, or newer versions of keys it held).
        quarantined: Rows written to the quarantine file.
        duplicates: Rows dropped because a row with the same key and a later or equal
            `ingested_at` won (in this file or already in the lake).
        replaced: Accepted rows that replaced an older version in the lake.
        late: Accepted rows whose `ingested_at` is more than the feature contract's allowed
            lateness after their event time (valid; they land, and are counted here).
        quarantine_rules: Quarantined rows per first-violated rule.
        quarantine_file: The quarantine file, or None when no row was quarantined.
        checks: Every batch-level check, passed or not.
        message: A one-line summary (why it failed or was skipped).
        seconds: Wall time spent on the batch.
    """

    source: str
    file: Path
    batch: str
    content_hash: str
    contract_version: int
    status: Status
    mode: Mode
    backfill_reason: str
    received: int
    accepted: int
    quarantined: int
    duplicates: int
    replaced: int
    late: int
    quarantine_rules: dict[str, int]
    quarantine_file: Path | None
    checks: tuple[CheckResult, ...]
    message: str
    seconds: float

    @classmethod
    def from_outcome(cls, ctx: BatchContext, outcome: BatchOutcome) -> BatchReport:
        """Stamp a batch's outcome with its identity and wall time.

        Args:
            ctx: The batch's context.
            outcome: How it ended.

        Returns:
            The report; `seconds` is the time since the batch started.
        """
        return cls(
            source=ctx.source,
            file=ctx.file,
            batch=ctx.batch,
            content_hash=ctx.content_hash,
            contract_version=ctx.contract.version,
            status=outcome.status,
            mode=outcome.mode,
            backfill_reason=outcome.backfill_reason,
            received=outcome.received,
            accepted=outcome.accepted,
            quarantined=outcome.quarantine.rows,
            duplicates=outcome.duplicates,
            replaced=outcome.replaced,
            late=outcome.late,
            quarantine_rules=outcome.quarantine.rules,
            quarantine_file=outcome.quarantine.file,
            checks=outcome.checks,
            message=outcome.message,
            seconds=ctx.elapsed(),
        )

    @property
    def failures(self) -> list[CheckResult]:
        """The batch-level checks that failed."""
        return [c for c in self.checks if not c.passed]


def log_row(report: BatchReport, *, started_at: datetime, finished_at: datetime) -> dict[str, Any]:
    """The ingestion-log row of a batch (see `churnops.ingestion.log` for the columns).

    Args:
        report: The batch's report.
        started_at: When the batch started.
        finished_at: When it finished.

    Returns:
        The row, keyed `<source>/<batch>`; `run`, `pid`, `pending` and `note` are left empty
        for `commit_batch` to fill, and the stream sequences are empty (a landing file).
    """
    return {
        "id": f"{report.source}/{report.batch}",
        "source": report.source,
        "batch": report.batch,
        "file": str(report.file),
        "content_hash": report.content_hash,
        "contract_version": report.contract_version,
        "mode": report.mode,
        "backfill_reason": report.backfill_reason,
        "status": report.status,
        "received": report.received,
        "accepted": report.accepted,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "replaced": report.replaced,
        "late": report.late,
        "failures": json.dumps([c.to_dict() for c in report.failures]),
        "quarantine_file": str(report.quarantine_file) if report.quarantine_file else None,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "seconds": report.seconds,
        "run": None,
        "pid": None,
        "pending": None,
        "note": None,
        "stream_first": None,
        "stream_last": None,
    }


def begin_batch(ctx: BatchContext) -> None:
    """Log a batch as `running` before it writes anything, so a kill leaves a trace to recover.

    Args:
        ctx: The batch's context.
    """
    # Only the batch's identity is known yet: its counts are zero until the commit point.
    started = BatchReport.from_outcome(ctx, BatchOutcome(status="ok", mode=ctx.requested_mode, message=""))
    row = log_row(started, started_at=ctx.started_at, finished_at=ctx.started_at)
    record_batch(ctx.run.log_db, row | {"status": "running", "finished_at": None, **_owner(ctx)})
    crash_point(f"{ctx.source}:begun")


def commit_batch(ctx: BatchContext, report: BatchReport, *, files: StagedFiles) -> BatchReport:
    """Commit a batch: its log row and staged files together.

    The row, with the final figures and the commit record, is written in one SQLite
    transaction: that is the commit point. Then the files are renamed into place and the row
    gets its final status.

    Args:
        ctx: The batch's context.
        report: Its report (`ok` or `failed`).
        files: Its staged files (lake partitions, quarantine, load state).

    Returns:
        The same report, so a batch can end with `return commit_batch(ctx, report, files=files)`.
    """
    crash_point(f"{ctx.source}:staged")
    pending = json.dumps({"status": report.status, "files": files.to_record()})
    row = log_row(report, started_at=ctx.started_at, finished_at=datetime.now(UTC))
    record_batch(ctx.run.log_db, row | {"status": "committing", "pending": pending, **_owner(ctx)})
    crash_point(f"{ctx.source}:committed")
    files.apply()
    crash_point(f"{ctx.source}:renamed")
    settle_batch(ctx.run.log_db, ctx.log_id, status=report.status)
    crash_point(f"{ctx.source}:done")
    return report


def _owner(ctx: BatchContext) -> dict[str, Any]:
    """The run and process a batch's row belongs to (recovery checks whether it still lives)."""
    return {"run": ctx.run.run_id, "pid": os.getpid()}
