"""Benchmark `churnops materialize` against Feast's own materialization, on the same data, in one run.

1. End to end, N customers x D days of typed lake partitions: ours (`features.materialize.
   materialize`: bring the daily grid up to date, compute every customer's snapshot at the
   refresh time, append it offline, load it online) vs Feast's `store.materialize` (what
   `feast materialize` runs, in process) of the same view over the refresh's day, which copies
   the latest offline rows into the online store.
2. The online load alone, M customers (the refreshed rows replicated under new ids): our bulk
   SQLite writer (into an empty table, and the steady state: the next refresh of the same
   customers) vs Feast's `write_to_online_store` (its row-by-row writer) on the same rows vs the
   floor, a raw `executemany` of the same 16 x M prebuilt rows into an identical empty table
   (Feast's DDL) in a fresh database with the same pragmas. The table left by ours and by
   Feast's writer is hashed row by row: the bytes must be identical.
3. Optional (`--large-customers`): end to end again on a second, shorter lake.

Every timed refresh uses a new refresh time (a few seconds later), so each run really rewrites
every row, as an hourly refresh does.

Usage:
    .venv/bin/python bench/materialize_bench.py [--customers 10000] [--days 180] [--runs 3]
        [--online-customers 300000] [--feast-write-runs 3] [--large-customers 0] [--large-days 30]
        [--out bench/results/features.md]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from features_bench import CONTRACT, START, generate_lake  # noqa: E402

from churnops.features.build import build_features  # noqa: E402

TABLE = "churnops_customer_profile_30d"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def make_home(work: Path, name: str, customers: int, days: int) -> tuple[Path, datetime, dict]:
    home = work / name
    lake = home / "data" / "lake"
    t = time.perf_counter()
    sizes = generate_lake(lake, customers, days)
    print(f"[{name}] lake {sizes} in {time.perf_counter() - t:.1f}s", flush=True)
    until = START + timedelta(days=days)
    t = time.perf_counter()
    build = build_features(
        lake_dir=lake, features_dir=home / "data" / "features", contract=CONTRACT, until=until
    )
    sizes["initial_build_s"] = time.perf_counter() - t
    sizes["snapshots"] = build.snapshots_computed
    print(f"[{name}] initial build {build.snapshots_computed:,} snapshots in {sizes['initial_build_s']:.1f}s")
    return home, until, sizes


def bench_end_to_end(home: Path, until: datetime, runs: int) -> dict[str, object]:
    """Ours vs Feast's `store.materialize`, alternating, each at a new refresh time."""
    from churnops.features.materialize import materialize
    from churnops.features.store import apply, open_store

    store = open_store(home=home)
    apply(store)
    paths = {"lake_dir": home / "data" / "lake", "features_dir": home / "data" / "features"}
    first = until + timedelta(hours=9, minutes=30)
    ours, feast, builds, computes, onlines = [], [], [], [], []
    customers = 0
    before = load()
    for i in range(runs):
        at = first + timedelta(minutes=i)
        t = time.perf_counter()
        report = materialize(store=store, contract=CONTRACT, at=at, **paths)
        ours.append(time.perf_counter() - t)
        builds.append(report.build.seconds)
        computes.append(report.compute_seconds)
        onlines.append(report.online_seconds)
        customers = report.customers
        t = time.perf_counter()
        store.materialize(start_date=at - timedelta(days=1), end_date=at + timedelta(seconds=1))
        feast.append(time.perf_counter() - t)
        print(
            f"  run {i}: ours {ours[-1]:.2f}s (build {builds[-1]:.2f}, refresh {computes[-1]:.2f}, "
            f"online {onlines[-1]:.2f}); feast {feast[-1]:.2f}s",
            flush=True,
        )
    return {
        "customers": customers,
        "ours_s": median(ours),
        "build_s": median(builds),
        "refresh_s": median(computes),
        "online_s": median(onlines),
        "feast_s": median(feast),
        "load": f"{before} → {load()}",
    }


def _table_digest(path: Path) -> tuple[int, str]:
    """Row count and a SHA-256 over every row of the online table, in key order."""
    digest = hashlib.sha256()
    count = 0
    con = sqlite3.connect(path)
    try:
        cursor = con.execute(
            f"SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts "
            f"FROM {TABLE} ORDER BY entity_key, feature_name"
        )
        for row in cursor:
            digest.update(repr(row).encode())
            count += 1
    finally:
        con.close()
    return count, digest.hexdigest()


def _floor(path: Path, source_db: Path, rows: list[tuple]) -> float:
    """A raw executemany of the prebuilt rows into Feast's table and index, in a fresh database."""
    src = sqlite3.connect(source_db)
    ddl = [
        sql
        for (sql,) in src.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
            (TABLE,),
        )
    ]
    src.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        for sql in ddl:
            con.execute(sql)
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany(
            f"INSERT INTO {TABLE} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        con.execute("COMMIT")
        return time.perf_counter() - t
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def bench_online(home: Path, work: Path, customers: int, runs: int, feast_runs: int) -> dict[str, object]:
    """The online load alone for `customers` customers: ours, Feast's writer, the floor."""
    from churnops.features import online
    from churnops.features.naming import view_name
    from churnops.features.store import open_store
    from churnops.features.table import (
        CREATED_TIMESTAMP,
        EVENT_TIMESTAMP,
        SNAPSHOT_TS,
        read_latest,
        table_schema,
    )

    store = open_store(home=home)
    view = store.get_feature_view(view_name(CONTRACT))
    db = home / "data" / "feast" / "online.db"
    latest = read_latest(features_dir=home / "data" / "features", contract=CONTRACT)
    reps = -(-customers // len(latest))
    base = pd.concat([latest] * reps, ignore_index=True).head(customers)
    base["customer_id"] = [f"BENCH-{i:07d}" for i in range(len(base))]

    def shifted(seconds: int) -> pd.DataFrame:
        frame = base.copy()
        for column in (EVENT_TIMESTAMP, CREATED_TIMESTAMP, SNAPSHOT_TS):
            frame[column] = frame[column] + pd.Timedelta(seconds=seconds)
        return frame

    def arrow(frame: pd.DataFrame) -> pa.Table:
        return pa.Table.from_pandas(frame, schema=table_schema(CONTRACT), preserve_index=False)

    def empty_table() -> None:
        con = sqlite3.connect(db)
        with con:
            con.execute(f"DELETE FROM {TABLE}")
        con.close()

    out: dict[str, object] = {"customers": len(base), "rows": len(base) * len(view.features)}
    before = load()
    empty_s = []
    for i in range(runs):
        empty_table()
        rows = arrow(shifted(i))
        t = time.perf_counter()
        online.write_online(store=store, view=view, rows=rows, replace=True)
        empty_s.append(time.perf_counter() - t)
        print(f"  ours into an empty table: {empty_s[-1]:.2f}s", flush=True)
    refresh_s = []
    for i in range(runs):
        rows = arrow(shifted(100 + i))
        t = time.perf_counter()
        online.write_online(store=store, view=view, rows=rows, replace=True)
        refresh_s.append(time.perf_counter() - t)
        print(f"  ours, next refresh of the same customers: {refresh_s[-1]:.2f}s", flush=True)
    feast_s = []
    for i in range(feast_runs):
        frame = shifted(200 + i)  # the same steady state: the table holds these customers
        t = time.perf_counter()
        store.write_to_online_store(view.name, frame)
        feast_s.append(time.perf_counter() - t)
        print(f"  Feast write_to_online_store: {feast_s[-1]:.2f}s", flush=True)
    feast_digest = _table_digest(db)
    # Ours again with the rows Feast wrote last, from a different state: the same bytes must result.
    online.write_online(store=store, view=view, rows=arrow(shifted(0)), replace=True)
    online.write_online(store=store, view=view, rows=arrow(shifted(200 + feast_runs - 1)), replace=True)
    ours_digest = _table_digest(db)
    staged = online._stage(store, view, arrow(shifted(300)))
    by_id = {value_id: (raw, text) for value_id, raw, text in staged.values}
    prebuilt = [
        (c[0], name, *by_id[c[3 + j]], c[1], c[2])
        for c in staged.customers
        for j, name in enumerate(staged.features)
    ]
    floor_s = []
    for _ in range(runs):
        floor_s.append(_floor(work / "floor.db", db, prebuilt))
        print(f"  floor executemany: {floor_s[-1]:.2f}s", flush=True)
    out.update(
        {
            "empty_s": median(empty_s),
            "refresh_s": median(refresh_s),
            "feast_s": median(feast_s),
            "feast_runs": feast_runs,
            "floor_s": median(floor_s),
            "identical": ours_digest == feast_digest,
            "digest_rows": ours_digest[0],
            "load": f"{before} → {load()}",
            "db_mb": db.stat().st_size / 1e6,
        }
    )
    return out


def machine() -> str:
    cpu = subprocess.run(
        ["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True, text=True
    )
    return (
        f"{os.cpu_count()} cores ({cpu.stdout.strip()}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def section(
    args: argparse.Namespace, command: str, sizes: dict, e2e: dict, online: dict, large: dict | None
) -> str:
    lines = [
        "## Materialize",
        "",
        f"Machine: {machine()}; shared with other engineers' jobs (load average 1/5 min shown per part).",
        "",
        f"Command: `{command}` ({datetime.now().strftime('%Y-%m-%d')}). Medians of {args.runs} runs "
        "unless noted; every run refreshes at a new time, so every online row really changes.",
        "",
        f"### End to end, {e2e['customers']:,} customers x {args.days} days "
        f"(lake {sizes['usage_events']:,} usage events; load {e2e['load']})",
        "",
        "| what | time |",
        "|---|---|",
        f"| ours: `materialize` (build up to date + refresh snapshot + offline append + online load) | "
        f"**{e2e['ours_s']:.2f} s** |",
        f"| of which: the build (`churnops features build`, incremental) | {e2e['build_s']:.2f} s |",
        f"| of which: the refresh snapshot at the refresh time (90-day lookback) + offline append | "
        f"{e2e['refresh_s']:.2f} s |",
        f"| of which: the online load | {e2e['online_s']:.2f} s |",
        f"| Feast `store.materialize` of the same view over the refresh's day | {e2e['feast_s']:.2f} s |",
        f"| ours without the build vs Feast | {e2e['ours_s'] - e2e['build_s']:.2f} s vs "
        f"{e2e['feast_s']:.2f} s (Feast / ours = {e2e['feast_s'] / (e2e['ours_s'] - e2e['build_s']):.2f}) |",
        f"| ours vs Feast + our build | {e2e['ours_s']:.2f} s vs {e2e['feast_s'] + e2e['build_s']:.2f} s |",
        "",
        f"### Online load only, {online['customers']:,} customers = {online['rows']:,} (customer, feature) "
        f"rows, a {online['db_mb']:,.0f} MB SQLite file (load {online['load']})",
        "",
        "| what | time | vs Feast's writer |",
        "|---|---|---|",
        f"| ours: the next refresh of the same customers (steady state, in-place upsert) | "
        f"**{online['refresh_s']:.2f} s** | **{online['feast_s'] / online['refresh_s']:.1f}x faster** |",
        f"| ours: into an empty table (the first load) | {online['empty_s']:.2f} s | "
        f"{online['feast_s'] / online['empty_s']:.1f}x faster |",
        f"| Feast `write_to_online_store` (row-by-row upserts, same steady state, "
        f"{online['feast_runs']} run(s)) | {online['feast_s']:.2f} s | 1x |",
        f"| floor: raw `executemany` of the same prebuilt rows into an identical empty table | "
        f"{online['floor_s']:.2f} s | {online['feast_s'] / online['floor_s']:.1f}x faster |",
        "",
        f"Same bytes: the online table after our load and after Feast's writer on the same rows hash "
        f"identically over all {online['digest_rows']:,} rows: {online['identical']}.",
        "",
    ]
    if large is not None:
        lines += [
            f"### End to end, {large['customers']:,} customers x {args.large_days} days "
            f"(load {large['load']})",
            "",
            "| what | time |",
            "|---|---|",
            f"| ours: `materialize` | **{large['ours_s']:.2f} s** (build {large['build_s']:.2f}, refresh "
            f"{large['refresh_s']:.2f}, online {large['online_s']:.2f}) |",
            f"| Feast `store.materialize`, same view and day | {large['feast_s']:.2f} s |",
            f"| ours vs Feast + our build | {large['ours_s']:.2f} s vs "
            f"{large['feast_s'] + large['build_s']:.2f} s |",
            "",
        ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the `## Materialize` section of the results file (the other sections are kept)."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Feature stage benchmarks\n"
    pattern = re.compile(r"^## Materialize\n.*?(?=^## (?!#)|\Z)", re.S | re.M)
    new = (
        pattern.sub(lambda _: text + "\n", old)
        if pattern.search(old)
        else old.rstrip() + "\n\n" + text + "\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--online-customers", type=int, default=300_000)
    parser.add_argument("--feast-write-runs", type=int, default=3)
    parser.add_argument("--large-customers", type=int, default=0)
    parser.add_argument("--large-days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "features.md")
    args = parser.parse_args()
    for key, value in {
        "FEAST_USAGE": "False",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        os.environ.setdefault(key, value)
    command = shlex.join([".venv/bin/python", "bench/materialize_bench.py", *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="materialize-bench-"))
    try:
        home, until, sizes = make_home(work, "home", args.customers, args.days)
        e2e = bench_end_to_end(home, until, args.runs)
        print("end to end", e2e, flush=True)
        online = bench_online(home, work, args.online_customers, args.runs, args.feast_write_runs)
        print("online", online, flush=True)
        large = None
        if args.large_customers:
            big, big_until, _ = make_home(work, "large", args.large_customers, args.large_days)
            large = bench_end_to_end(big, big_until, args.runs)
            print("large", large, flush=True)
        write_section(args.out, section(args, command, sizes, e2e, online, large))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
