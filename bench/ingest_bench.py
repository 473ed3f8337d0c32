"""Ingest throughput: `ingestion.ingest.ingest` vs row-by-row validation in plain Python.

Generates the five sources (CSV, dirty rate 0.02 so every rule has work) at the default size
(2000 customers x 120 days) and at 10x that (20000 customers), then times, on a fresh lake each
run, a full `ingest()` (read, type, row rules, batch checks, dedup, lake merge, quarantine, log)
and the obvious alternative: `csv.DictReader`, one row at a time, the same row-level rules in
Python (`datetime.fromisoformat`, `float`, regex, enum sets, reference set, future check), a dict
for "latest ingested_at wins", then one Parquet file per day. The alternative does no batch
checks, no quarantine file and no log, which favours it.

Usage: .venv/bin/python bench/ingest_bench.py [--runs 3] [--scales 1,10] [--out bench/results/ingest.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from churnops.contracts.source_contract import Column, SourceContract, load_source_contracts
from churnops.ingestion.ingest import ingest
from churnops.synthetic.generate import generate

START = date(2026, 1, 1)
DAYS = 120
BASE_CUSTOMERS = 2000


def run_ingest(landing: Path, work: Path) -> int:
    """One full `ingest()` into a fresh lake; returns the rows received."""
    report = ingest(
        landing_dir=landing,
        lake_dir=work / "lake",
        quarantine_dir=work / "quarantine",
        log_db=work / "log.db",
    )
    assert report.ok, [b.message for b in report.failed]
    return sum(b.received for b in report.batches)


def _parse(column_type: str, text: str) -> object:
    if column_type == "string":
        return text
    if column_type == "int":
        value = float(text)
        if value != int(value):
            raise ValueError(text)
        return int(value)
    if column_type == "float":
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value
    if column_type == "bool":
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "t", "f", "y", "n"):
            raise ValueError(text)
        return lowered in ("true", "1", "yes", "t", "y")
    if column_type == "date":
        return date.fromisoformat(text)
    stamp = datetime.fromisoformat(text)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@dataclass(frozen=True)
class _RowRules:
    """One source's row rules, compiled once per file.

    Attributes:
        columns: The contract's columns, in landing-file order.
        patterns: Compiled `format` regexes by column.
        enums: Allowed values by column.
        nulls: The texts that mean null.
        known: Keys of the sources already loaded, for references.
        ingested_col: The ingestion-time column.
        event_col: The event-time column.
        skew: The tolerated clock skew.
        reject_future: Whether an event time after ingestion is rejected.
    """

    columns: list[Column]
    patterns: dict[str, re.Pattern[str]]
    enums: dict[str, set[str]]
    nulls: set[str]
    known: dict[str, set[str]]
    ingested_col: str
    event_col: str
    skew: timedelta
    reject_future: bool

    @classmethod
    def of(cls, contract: SourceContract, *, known: dict[str, set[str]]) -> _RowRules:
        """Compile a contract's row rules."""
        columns = contract.columns
        return cls(
            columns=columns,
            patterns={c.name: re.compile(c.format) for c in columns if c.format},
            enums={c.name: set(c.enum) for c in columns if c.enum},
            nulls=set(contract.delivery.null_values) | {""},
            known=known,
            ingested_col=contract.schema_.ingested_at,
            event_col=contract.schema_.event_time,
            skew=contract.quality.clock_skew,
            reject_future=contract.quality.future_event_time == "reject",
        )


def _python_row(raw: dict[str, str], *, rules: _RowRules) -> dict[str, object] | None:
    """One CSV row parsed and checked column by column; None when any column breaks a rule."""
    row: dict[str, object] = {}
    ok = True
    for col in rules.columns:
        text = (raw.get(col.name) or "").strip()
        if text in rules.nulls:
            if not col.nullable:
                ok = False
            row[col.name] = None
            continue
        if col.normalize == "trim_lower":
            text = text.lower()
        try:
            value = _parse(col.type, text)
        except ValueError:
            ok = False
            continue
        if col.name in rules.patterns and not rules.patterns[col.name].fullmatch(text):
            ok = False
        if col.name in rules.enums and value not in rules.enums[col.name]:
            ok = False
        if col.minimum is not None and value < col.minimum:  # type: ignore[operator]
            ok = False
        if col.maximum is not None and value > col.maximum:  # type: ignore[operator]
            ok = False
        if col.references and value not in rules.known.get(col.references, set()):
            ok = False
        row[col.name] = value
    return row if ok else None


def _python_admitted(row: dict[str, object], *, rules: _RowRules, now: datetime) -> bool:
    """Whether a valid row is kept: not ingested in the future, and its event time allowed."""
    ingested = row[rules.ingested_col]
    if ingested > now + rules.skew:  # type: ignore[operator]
        return False
    event = row[rules.event_col]
    if isinstance(event, date) and not isinstance(event, datetime):
        event = datetime(event.year, event.month, event.day, tzinfo=UTC)
    future = event > min(ingested, now) + rules.skew  # type: ignore[operator,type-var]
    return not (rules.reject_future and future)


def _python_write_days(
    best: dict[object, tuple[object, ...]], *, contract: SourceContract, out: Path
) -> None:
    """Write the kept rows as one Parquet file per partition day."""
    columns = contract.columns
    part_at = [c.name for c in columns].index(contract.partition_column)
    days: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for kept in best.values():
        days[kept[part_at].strftime("%Y-%m-%d")].append(kept)  # type: ignore[union-attr]
    arrow = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC")}  # fmt: skip
    schema = pa.schema([pa.field(c.name, arrow[c.type]) for c in columns])
    for day, rows in days.items():
        folder = out / contract.name / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)], schema=schema
        )
        pq.write_table(table, folder / "data.parquet")


def _python_source(
    path: Path, contract: SourceContract, out: Path, known: dict[str, set[str]], now: datetime
) -> tuple[int, set[str]]:
    """Validate one file row by row, keep the latest row per key, write one Parquet per day."""
    rules = _RowRules.of(contract, known=known)
    key_col = contract.primary_key[0]
    ingested_at = [c.name for c in rules.columns].index(rules.ingested_col)
    best: dict[object, tuple[object, ...]] = {}
    received = 0
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            received += 1
            row = _python_row(raw, rules=rules)
            if row is None or not _python_admitted(row, rules=rules, now=now):
                continue
            key = row[key_col]
            # Tuples, not dicts: at 10x scale the kept rows must fit in memory next to others' jobs.
            if key not in best or row[rules.ingested_col] > best[key][ingested_at]:  # type: ignore[operator]
                best[key] = tuple(row.get(c.name) for c in rules.columns)
    _python_write_days(best, contract=contract, out=out)
    return received, {str(k) for k in best}


def run_python(landing: Path, work: Path) -> int:
    """The row-by-row alternative over the five sources; returns the rows received."""
    contracts = load_source_contracts()
    known: dict[str, set[str]] = {}
    now = datetime.now(UTC)
    total = 0
    for name, contract in contracts.items():
        received, keys = _python_source(landing / f"{name}.csv", contract, work / "lake", known, now)
        if name == "customers":
            known["customers.customer_id"] = keys
        total += received
    return total


def _time(fn: Callable[[Path, Path], int], landing: Path, runs: int) -> tuple[float, int]:
    seconds = []
    rows = 0
    for _ in range(runs):
        work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        try:
            start = time.perf_counter()
            rows = fn(landing, work)
            seconds.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return statistics.median(seconds), rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    """Run the benchmark and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scales", default="1,10", help="Multiples of 2000 customers, comma-separated.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.md"))
    args = parser.parse_args()
    lines = []
    for scale in (int(s) for s in args.scales.split(",")):
        landing = Path(tempfile.mkdtemp(prefix="ingest-bench-landing-"))
        try:
            generate(
                out_dir=landing, customers=BASE_CUSTOMERS * scale, days=DAYS, start=START, dirty_rate=0.02
            )
            ours, rows = _time(run_ingest, landing, args.runs)
            theirs, rows_py = _time(run_python, landing, args.runs)
            assert rows == rows_py
            lines.append(
                f"| {BASE_CUSTOMERS * scale:,} x {DAYS} | {rows:,} | {ours:.2f} | {rows / ours:,.0f} | "
                f"{theirs:.2f} | {rows / theirs:,.0f} | {theirs / ours:.1f}x |"
            )
            print(lines[-1], flush=True)
        finally:
            shutil.rmtree(landing, ignore_errors=True)
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    text = "\n".join(
        [
            "# Ingest throughput",
            "",
            f"Machine: {os.cpu_count()} CPUs (`nproc`), {_cpu_model()}; Python "
            f"{platform.python_version()}; commit {commit}; load average at the end {load[0]:.1f} "
            "(the machine is shared with other jobs).",
            "",
            f"Command: `.venv/bin/python bench/ingest_bench.py --runs {args.runs} --scales {args.scales}`",
            "",
            f"Data: `generate(customers=N, days={DAYS}, start={START}, dirty_rate=0.02)`, CSV, all five "
            f"sources; median of {args.runs} runs, each on a fresh lake. Rows = data rows received over the "
            "five files.",
            "",
            "| customers x days | rows | ingest() s | ingest() rows/s | row-by-row Python s "
            "| row-by-row rows/s | speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *lines,
            "",
            "`ingest()` does everything (typing and row rules with Arrow kernels and DuckDB casts, batch "
            "checks in DuckDB, dedup and lake merge, quarantine file, ingestion log); the row-by-row "
            "alternative applies only the row rules and dedup, then writes the partitions.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
