"""Landing → lake: contract-checked, deduplicated, quarantined, logged, idempotent.

For each source (customers first, so the others can check their customer ids) and each of its
landing files (`<landing>/<source>.csv|.parquet` and `<landing>/<source>/*.csv|*.parquet`), one
batch:

1. Skip the file when a batch with the same content hash already succeeded (idempotence).
2. Read it as text; garbage (empty, binary, no header, wrong delimiter) raises `IngestError`.
3. Type every column and find row-level violations (null key, type, format, enum, range,
   unknown customer, future timestamp).
4. Run the batch checks (schema, completeness, uniqueness, freshness unless backfilling, the
   `testing:` list, the share of rows quarantined). If any fails, the whole batch goes to
   quarantine with its reasons and nothing reaches the lake.
5. Otherwise resolve duplicates by key (latest `ingested_at` wins, ties keep the first row),
   also against what the lake already holds, and rewrite the affected date partitions
   atomically. Broken rows go to `<quarantine>/<source>/<batch>.parquet`.
6. Log the batch in the SQLite ingestion log.

Always: received = accepted + quarantined + duplicates.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import SOURCE_NAMES, SourceContract, load_source_contracts
from churnops.ingestion.checks import CheckResult, run_checks, write_load_state
from churnops.ingestion.log import find_ingested, record_batch
from churnops.ingestion.readers import (
    IngestError,
    check_readable,
    content_hash,
    find_landing_files,
    read_landing_file,
)
from churnops.ingestion.validate import (
    empty_violations,
    future_violations,
    lake_schema,
    parse_batch,
    quarantine_frame,
    reference_violations,
    to_lake_frame,
)
from churnops.storage.atomic import write_atomic
from churnops.storage.duck import duckdb_connection
from churnops.storage.lake import (
    list_partitions,
    read_partition,
    source_glob,
    write_partition,
    write_partition_table,
)
from churnops.storage.times import epoch_micros

__all__ = ["BatchReport", "IngestError", "IngestReport", "ingest"]

Status = Literal["ok", "failed", "skipped"]
Mode = Literal["live", "backfill"]
_ROW = "_row_position"


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

    @property
    def failures(self) -> list[CheckResult]:
        """The batch-level checks that failed."""
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class IngestReport:
    """Every batch of one `ingest` run, sources in ingestion order.

    Attributes:
        batches: One report per landing file.
        quarantine_dir: Where quarantined rows went (`<quarantine>/<source>/<batch>.parquet`).
        missing: Requested sources that had no landing file.
    """

    batches: list[BatchReport]
    quarantine_dir: Path
    missing: list[str] = field(default_factory=list)

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
    wanted = list(sources) if sources is not None else list(contracts)
    unknown = [s for s in wanted if s not in contracts]
    if unknown:
        raise IngestError(f"unknown source(s) {', '.join(unknown)}: expected some of {', '.join(contracts)}.")
    order = [s for s in (*SOURCE_NAMES, *contracts) if s in wanted]
    names = list(dict.fromkeys(order))
    now = (now or datetime.now(UTC)).astimezone(UTC)
    files = find_landing_files(landing_dir, names)
    if not any(files.values()):
        raise IngestError(
            f"landing folder {landing_dir} has no file for {', '.join(names)}: expected <source>.csv or "
            f"<source>.parquet (or a <source>/ folder of them) for at least one of these sources."
        )
    # Refuse garbage before anything is written, so a bad file never leaves a half-ingested run.
    for source, paths in files.items():
        for path in paths:
            fmt = path.suffix.lstrip(".")
            if fmt not in contracts[source].delivery.formats:
                raise IngestError(
                    f"landing file {path} is {fmt}, which the {source} contract does not accept: expected "
                    f"one of {', '.join(contracts[source].delivery.formats)}."
                )
            check_readable(path, contracts[source])
    lateness = load_feature_contract().time.allowed_lateness
    batches = [
        _ingest_file(
            path,
            contract=contracts[source],
            contracts=contracts,
            lake_dir=lake_dir,
            quarantine_dir=quarantine_dir,
            log_db=log_db,
            backfill=backfill,
            now=now,
            lateness=lateness,
        )
        for source in names
        for path in files[source]
    ]
    missing = [s for s in names if not files[s]]
    return IngestReport(batches=batches, quarantine_dir=quarantine_dir, missing=missing)


def _ingest_file(
    path: Path,
    *,
    contract: SourceContract,
    contracts: dict[str, SourceContract],
    lake_dir: Path,
    quarantine_dir: Path,
    log_db: Path,
    backfill: bool | None,
    now: datetime,
    lateness: timedelta,
) -> BatchReport:
    clock = time.perf_counter()
    started_at = datetime.now(UTC)
    digest = content_hash(path)
    batch = f"{path.stem}-{digest[:12]}"
    base: dict[str, Any] = {
        "source": contract.name,
        "file": path,
        "batch": batch,
        "content_hash": digest,
        "contract_version": contract.version,
    }
    prior = find_ingested(log_db, source=contract.name, content_hash=digest)
    if prior is not None:
        return BatchReport(
            **base,
            status="skipped",
            mode=prior["mode"],
            backfill_reason="",
            received=0,
            accepted=0,
            quarantined=0,
            duplicates=0,
            replaced=0,
            late=0,
            quarantine_rules={},
            quarantine_file=None,
            checks=(),
            message=(
                f"skipped: this exact file (same content hash) was ingested as batch {prior['batch']} "
                f"at {prior['finished_at']}; nothing changed"
            ),
            seconds=time.perf_counter() - clock,
        )
    raw = read_landing_file(path, contract)
    received = raw.num_rows
    qfile = quarantine_dir / contract.name / f"{batch}.parquet"

    def finish(report: BatchReport) -> BatchReport:
        record_batch(
            log_db,
            {
                "id": f"{contract.name}/{batch}",
                "source": contract.name,
                "batch": batch,
                "file": str(path),
                "content_hash": digest,
                "contract_version": contract.version,
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
                "finished_at": datetime.now(UTC).isoformat(),
                "seconds": report.seconds,
            },
        )
        return report

    def reject(checks: list[CheckResult], violations: pd.DataFrame, mode: Mode, reason: str) -> BatchReport:
        failed = [c for c in checks if not c.passed]
        summary = "; ".join(c.message for c in failed)
        quarantine = quarantine_frame(
            raw, violations, file=str(path), contract=contract, reject_rest=f"batch failed: {summary}"
        )
        _write_quarantine(qfile, quarantine)
        return finish(
            BatchReport(
                **base,
                status="failed",
                mode=mode,
                backfill_reason=reason,
                received=received,
                accepted=0,
                quarantined=received,
                duplicates=0,
                replaced=0,
                late=0,
                quarantine_rules=_rule_counts(quarantine),
                quarantine_file=qfile if received else None,
                checks=tuple(checks),
                message=f"failed, nothing reached the lake: {summary}",
                seconds=time.perf_counter() - clock,
            )
        )

    missing = [c for c in contract.column_names if c not in raw.column_names]
    unexpected = [c for c in raw.column_names if c not in contract.column_names]
    if missing or unexpected:
        parts = [
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"unexpected column(s) {', '.join(unexpected)}" if unexpected else "",
        ]
        message = (
            f"schema: {'; '.join(p for p in parts if p)} (a missing or renamed column); expected exactly "
            f"{', '.join(contract.column_names)}"
        )
        check = CheckResult(
            contract.name, "schema", False, float(len(missing) + len(unexpected)), 0.0, message
        )
        return reject([check], empty_violations(), "backfill" if backfill else "live", "")

    parsed = parse_batch(raw, contract)
    violations = pd.concat(
        [
            parsed.violations,
            future_violations(parsed.typed, raw, contract, now=now),
            reference_violations(
                parsed.typed, raw, contract, known=_known_references(lake_dir, contract, contracts)
            ),
        ],
        ignore_index=True,
    )
    bad = np.zeros(received, dtype=bool)
    bad[violations["row"].to_numpy(dtype=np.int64)] = True
    valid = parsed.typed.append_column(_ROW, pa.array(np.arange(received), pa.int64())).filter(pa.array(~bad))
    mode, reason = _decide_mode(valid, contract, backfill)
    checks = _batch_checks(parsed.typed, valid, contract, now=now, mode=mode, reason=reason)
    quarantined_percent = 100.0 * bad.sum() / received if received else 0.0
    limit = contract.quality.max_quarantined_percent
    rate_ok = bool(quarantined_percent <= limit)
    checks.append(
        CheckResult(
            contract.name,
            "quarantine_rate",
            rate_ok,
            float(quarantined_percent),
            limit,
            f"quarantine_rate: {quarantined_percent:.2f}% of rows broke a row-level rule, "
            f"{'within' if rate_ok else 'above'} the maximum {limit:g}%",
        )
    )
    if any(not c.passed for c in checks):
        return reject(checks, violations, mode, reason)

    merge = _merge_into_lake(valid, contract, lake_dir)
    late = _count_late(merge.accepted, contract, lateness)
    quarantine = quarantine_frame(raw, violations, file=str(path), contract=contract)
    _write_quarantine(qfile, quarantine)
    write_load_state(lake_dir, contract.name, mode=mode, batch=batch)
    report = BatchReport(
        **base,
        status="ok",
        mode=mode,
        backfill_reason=reason,
        received=received,
        accepted=merge.accepted.num_rows,
        quarantined=len(quarantine),
        duplicates=merge.batch_duplicates + merge.lake_duplicates,
        replaced=merge.replaced,
        late=late,
        quarantine_rules=_rule_counts(quarantine),
        quarantine_file=qfile if len(quarantine) else None,
        checks=tuple(checks),
        message=f"ok ({mode}{': ' + reason if reason else ''})",
        seconds=time.perf_counter() - clock,
    )
    if report.received != report.accepted + report.quarantined + report.duplicates:
        raise AssertionError(f"row accounting broke for {path}: {report}")
    return finish(report)


def _batch_checks(
    typed: pa.Table, valid: pa.Table, contract: SourceContract, *, now: datetime, mode: Mode, reason: str
) -> list[CheckResult]:
    """Contract checks on the delivery as parsed; freshness only on rows that passed row rules."""
    con = duckdb_connection()
    try:
        con.register(contract.name, typed)
        con.register("_valid_rows", valid)
        return run_checks(
            con,
            contract,
            now=now,
            freshness="skip" if mode == "backfill" else "enforce",
            skip_reason=f"backfill: {reason}",
            freshness_relation="_valid_rows",
        )
    finally:
        con.close()


def _decide_mode(valid: pa.Table, contract: SourceContract, backfill: bool | None) -> tuple[Mode, str]:
    if backfill is True:
        return "backfill", "requested (--backfill)"
    if backfill is False or valid.num_rows == 0:
        return "live", ""
    # ingested_at, not the event time: a live delivery's rows were all ingested within one
    # delivery interval, however late some of its events are; history was ingested over its span.
    bounds = pc.min_max(valid.column(contract.schema_.ingested_at)).as_py()
    span = bounds["max"] - bounds["min"]
    limit = contract.quality.freshness.backfill_span
    if span > limit:
        return "backfill", (
            f"its {contract.schema_.ingested_at} spans {span.total_seconds() / 86400:.1f} days, "
            "more than the "
            f"{limit.total_seconds() / 86400:g}d of a live delivery"
        )
    return "live", ""


def _known_references(
    lake_dir: Path, contract: SourceContract, contracts: dict[str, SourceContract]
) -> dict[str, pa.Array]:
    """For each `references` of the contract, the values the lake holds (e.g. customer ids)."""
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
                f'SELECT DISTINCT "{ref_column}" AS v FROM read_parquet({_sql_glob(lake_dir, ref_source)})'
            ).to_arrow_table()
        finally:
            con.close()
        known[column.references] = values.column("v").combine_chunks()
    return known


def _sql_glob(lake_dir: Path, source: str) -> str:
    return "'" + source_glob(lake_dir, source).replace("'", "''") + "'"


@dataclass(frozen=True)
class _Merge:
    accepted: pa.Table
    batch_duplicates: int
    lake_duplicates: int
    replaced: int


def _dedup(valid: pa.Table, contract: SourceContract) -> pa.Table:
    """Latest `ingested_at` per key wins; among equal ones the first row of the file."""
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
                   (_ROW, "ascending")],
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


def _merge_into_lake(valid: pa.Table, contract: SourceContract, lake_dir: Path) -> _Merge:
    """Deduplicate the batch, then against the lake, and rewrite the affected partitions.

    Within the batch the latest `ingested_at` per key wins (ties: the first row of the file).
    Against the lake, a winner replaces the lake's row only when its `ingested_at` is later;
    otherwise it is a duplicate. Each affected partition is rewritten whole, atomically.
    """
    keys = contract.primary_key
    ingested = contract.schema_.ingested_at
    winners = _dedup(valid, contract)
    accepted = winners
    lake_duplicates = replaced = 0
    removals: dict[str, pd.DataFrame] = {}
    existing = _existing_keys(lake_dir, contract)
    if existing is not None and winners.num_rows:
        joined = winners.select([*keys, ingested, _ROW]).join(existing, keys=keys, join_type="left outer")
        in_lake = np.asarray(
            pc.is_valid(joined.column("_lake_ingested")).to_numpy(zero_copy_only=False), dtype=bool
        )
        newer = np.asarray(
            pc.fill_null(
                pc.greater(joined.column(ingested), joined.column("_lake_ingested")), False
            ).to_numpy(zero_copy_only=False),
            dtype=bool,
        )
        lake_duplicates = int((in_lake & ~newer).sum())
        replaced = int((in_lake & newer).sum())
        dropped = pc.is_in(
            winners.column(_ROW), value_set=joined.column(_ROW).filter(pa.array(in_lake & ~newer))
        )
        accepted = winners.filter(pc.invert(dropped))
        gone = joined.filter(pa.array(in_lake & newer)).select([*keys, "_lake_day"]).to_pandas()
        removals = {str(day): group.drop(columns="_lake_day") for day, group in gone.groupby("_lake_day")}
    day = pc.cast(accepted.column(contract.partition_column), pa.date32())
    accepted = accepted.append_column("_day", day)
    accepted = accepted.take(
        pc.sort_indices(accepted, sort_keys=[("_day", "ascending"), *((k, "ascending") for k in keys)])
    )
    day_numbers = accepted.column("_day").cast(pa.int32()).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, day_numbers[1:] != day_numbers[:-1]]) if len(day_numbers) else []
    ends = [*starts[1:], len(day_numbers)] if len(day_numbers) else []
    slices = {
        (date(1970, 1, 1) + timedelta(days=int(day_numbers[a]))).isoformat(): (int(a), int(b))
        for a, b in zip(starts, ends, strict=True)
    }
    schema = pa.Schema.from_pandas(
        to_lake_frame(lake_schema(contract).empty_table(), contract), preserve_index=False
    )
    for day_name in sorted(set(slices) | set(removals)):
        frames = []
        current = read_partition(lake_dir, contract.name, day_name) if existing is not None else None
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
                write_partition_table(lake_dir, contract.name, day_name, rows)
                continue
            frames.append(to_lake_frame(accepted.slice(a, b - a), contract))
        merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
        if current is not None:
            merged = merged.sort_values(keys, kind="stable", ignore_index=True)
        write_partition(lake_dir, contract.name, day_name, merged)
    return _Merge(
        accepted=accepted.drop_columns(["_day", _ROW]),
        batch_duplicates=valid.num_rows - winners.num_rows,
        lake_duplicates=lake_duplicates,
        replaced=replaced,
    )


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
            f"FROM read_parquet({_sql_glob(lake_dir, contract.name)}, filename = true)"
        ).to_arrow_table()
    finally:
        con.close()


def _count_late(accepted: pa.Table, contract: SourceContract, lateness: timedelta) -> int:
    if contract.quality.late_arrivals != "flag" or accepted.num_rows == 0:
        return 0
    event = epoch_micros(accepted.column(contract.schema_.event_time))
    ingested = epoch_micros(accepted.column(contract.schema_.ingested_at))
    return int((ingested - event > lateness.total_seconds() * 1e6).sum())


def _rule_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    if quarantine.empty:
        return {}
    return {str(k): int(v) for k, v in quarantine["_rule"].value_counts().sort_index().items()}


def _write_quarantine(path: Path, frame: pd.DataFrame) -> None:
    """Write (or, with no rows, remove) a batch's quarantine file atomically."""
    if frame.empty:
        # A re-run that quarantines nothing must not leave an earlier run's file behind.
        path.unlink(missing_ok=True)
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))
