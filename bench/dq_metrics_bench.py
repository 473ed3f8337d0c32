"""Cost of one scrape of the data-quality gauges, against reading freshness from the lake.

Generates the five sources (2000 customers x 120 days, dirty rate 0.02, CSV), ingests them, builds
the feature table, then times a full scrape of `DataQualityCollector` (the ingestion log, each
source's quarantine `_rule` column, the newest feature partition) and the obvious alternative for
the one figure that could come from the data instead of the log: the newest freshness column of
every source, `max(<column>)` over the lake's Parquet partitions with DuckDB. Each is measured in
its own process (`--measure`), so its peak RSS is its own and not the data preparation's.

Usage: .venv/bin/python bench/dq_metrics_bench.py [--runs 30] [--out bench/results/dq_metrics.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import load_source_contracts
from churnops.features.build import build_features
from churnops.ingestion.ingest import ingest
from churnops.monitoring.dq_metrics import DataQualityCollector
from churnops.storage import layout
from churnops.storage.duck import duckdb_connection
from churnops.synthetic.generate import generate

CUSTOMERS = 2000
DAYS = 120


def prepare(home: Path) -> int:
    """Generate, ingest and build features in `home`; returns the rows received."""
    landing = home / layout.LANDING_DIR
    generate(
        out_dir=landing, customers=CUSTOMERS, days=DAYS, seed=42, start=date(2026, 1, 1), dirty_rate=0.02
    )
    report = ingest(
        landing_dir=landing,
        lake_dir=home / layout.LAKE_DIR,
        quarantine_dir=home / layout.QUARANTINE_DIR,
        log_db=home / layout.INGESTION_LOG,
    )
    build_features(
        lake_dir=home / layout.LAKE_DIR,
        features_dir=home / layout.FEATURES_DIR,
        contract=load_feature_contract(),
    )
    return sum(b.received for b in report.batches)


def scrape(home: Path) -> Callable[[], object]:
    registry = CollectorRegistry()
    registry.register(DataQualityCollector(home=home))
    return lambda: generate_latest(registry)


def lake_freshness(home: Path) -> Callable[[], object]:
    contracts = load_source_contracts()

    def run() -> dict[str, object]:
        newest = {}
        with duckdb_connection() as con:
            for name, contract in contracts.items():
                glob = str(home / layout.LAKE_DIR / name / "date=*" / "data.parquet")
                column = contract.quality.freshness.column
                newest[name] = con.execute(
                    f"SELECT max({column}) FROM read_parquet(?, hive_partitioning = false)", [glob]
                ).fetchone()
        return newest

    return run


def median_ms(run: Callable[[], object], runs: int) -> float:
    run()  # warm: imports, file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def reset_peak_rss() -> None:
    # A child forked from the process that prepared the data starts with that process's peak
    # (Linux copies it across fork and exec); writing 5 to clear_refs resets it.
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


MEASURES: dict[str, Callable[[Path], Callable[[], object]]] = {"scrape": scrape, "lake": lake_freshness}


def measure_in_child(kind: str, home: Path, runs: int) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; its median ms and its own peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--home", str(home), "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def report(*, rows: int, runs: int, scrape_: dict[str, float], lake: dict[str, float]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    load = os.getloadavg()
    return "\n".join(
        [
            "# Data-quality gauges: cost of a scrape",
            "",
            f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; Python "
            f"{platform.python_version()}; commit {commit.stdout.strip()}; load average at the end "
            f"{load[0]:.1f} (the machine is shared with other jobs).",
            "",
            f"Command: `.venv/bin/python bench/dq_metrics_bench.py --runs {runs}`",
            "",
            f"Data: `generate(customers={CUSTOMERS}, days={DAYS}, dirty_rate=0.02)`, ingested ({rows:,} rows "
            "received, five batches, each with a quarantine file) and the feature table built; median of "
            f"{runs} runs after one warm-up, each kind in its own process (peak RSS: that process's).",
            "",
            "| what | median ms | peak RSS, MB |",
            "|---|---:|---:|",
            f"| a full scrape of `DataQualityCollector` (every gauge) | {scrape_['ms']:.1f} "
            f"| {scrape_['rss']:.0f} |",
            f"| newest freshness column of each source from the lake (DuckDB) | {lake['ms']:.1f} "
            f"| {lake['rss']:.0f} |",
            "",
            f"Ratio: reading the lake for freshness alone costs {lake['ms'] / scrape_['ms']:.1f}x "
            "a full scrape.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--measure", choices=sorted(MEASURES), default=None)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    if args.measure is not None:
        reset_peak_rss()
        ms = median_ms(MEASURES[args.measure](args.home), args.runs)
        print(json.dumps({"ms": ms, "rss": peak_rss_mb()}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        rows = prepare(home)
        scraped = measure_in_child("scrape", home, args.runs)
        lake = measure_in_child("lake", home, args.runs)
    text = report(rows=rows, runs=args.runs, scrape_=scraped, lake=lake)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
