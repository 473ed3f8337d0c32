"""Peak memory and time of `churnops features build`, beside the one-shot build it replaced.

1. The real case's shape: ~24k customers who all signed up in the first quarter of 1997 and made
   ~70k purchases over 18 months (the shape of a public purchase history), ingested as a user's
   own data and built with a plain `churnops features build` (until = now, ~30 years of daily
   boundaries). A purchase is a paid `billing` invoice (invoice_date = purchase time, amount =
   its value) and a `course_enroll` usage event at the same time; there are no tickets and no
   churn labels (the history has none), so every customer is in the population up to today.
   The one-shot build (commit 48b94ae) was killed by the OOM killer at 23 GB on this data.
2. The demo: `churnops generate` defaults (2,000 customers x 120 days) ingested, then a full
   build up to the data's end, ours vs the one-shot build of commit 48b94ae run from a
   `git archive` of that commit, alternating, medians of `--runs`.

Every build runs in its own process under `/usr/bin/time -v` (peak RSS = its maximum resident
set size).

Usage:
    .venv/bin/python bench/build_memory_bench.py [--runs 3] [--baseline 48b94ae]
        --part demo|large [--budget SECONDS] [--out bench/results/build_memory_<part>.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
CHURNOPS = REPO / ".venv" / "bin" / "churnops"
TS = pa.timestamp("us", tz="UTC")
QUIET = {"FEAST_USAGE": "False", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}

# Builds the whole table (full=True) up to argv[3] and prints the build's own time and rows.
DRIVER = """
import sys, time
from datetime import datetime
from pathlib import Path
from churnops.contracts.feature_contract import load_feature_contract
from churnops.features.build import build_features
started = time.perf_counter()
report = build_features(lake_dir=Path(sys.argv[1]), features_dir=Path(sys.argv[2]),
    contract=load_feature_contract(), until=datetime.fromisoformat(sys.argv[3]), full=True)
import churnops.features.build as module
print(f"RESULT {module.__file__} {time.perf_counter() - started:.3f} {report.snapshots_computed}")
"""


def timed_process(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, str]:
    """Run a command under `/usr/bin/time -v`, from `cwd`.

    Run a Python child from outside the checkout: its `churnops/` folder, first on `sys.path`
    as the working directory, would shadow the package that `PYTHONPATH` names.

    Returns:
        Wall seconds, peak RSS in GiB, and its standard output.
    """
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    return wall, rss_kb / 2**20, done.stdout


def write_source(lake: Path, source: str, table: pa.Table, ts_column: str) -> None:
    days = pc.strftime(table.column(ts_column), format="%Y-%m-%d")
    table = table.append_column("__day", days)
    for day in pc.unique(days).to_pylist():
        part = table.filter(pc.equal(table.column("__day"), day)).drop_columns(["__day"])
        path = lake / source / f"date={day}" / "data.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path)


def purchase_history_lake(lake: Path, *, customers: int, purchases: int, seed: int = 0) -> dict[str, int]:
    """The real case's shape: every customer's first purchase in Q1 1997, repeats until mid-1998."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("1997-01-01", "s").astype(np.int64)
    end = np.datetime64("1998-07-01", "s").astype(np.int64)
    ids = np.array([f"CUST-{i:06d}" for i in range(1, customers + 1)])
    signup_s = start + rng.integers(0, 90, size=customers) * 86_400
    # First purchases on the signup day; repeat purchases go to a heavy-tailed minority.
    weight = rng.pareto(1.2, size=customers) * (rng.random(customers) < 0.45)
    repeat_owner = rng.choice(customers, size=purchases - customers, p=weight / weight.sum())
    owner = np.concatenate([np.arange(customers), repeat_owner])
    lo = signup_s[owner]
    when_s = np.where(
        np.arange(owner.size) < customers,
        lo + rng.integers(0, 86_400, size=owner.size),
        lo + (rng.random(owner.size) * (end - lo)).astype(np.int64),
    )
    ingested = pa.array(np.full(customers, end * 1_000_000, dtype="datetime64[us]")).cast(TS)
    write_source(
        lake,
        "customers",
        pa.table(
            {
                "customer_id": ids,
                "company_name": [f"Customer {i}" for i in range(customers)],
                "signup_date": pa.array(
                    signup_s.astype("datetime64[s]").astype("datetime64[D]"), pa.date32()
                ),
                "plan_type": np.full(customers, "basic"),
                "seat_count": np.ones(customers, dtype=np.int64),
                "industry": pa.nulls(customers, pa.string()),
                "country": np.full(customers, "US"),
                "marketing_source": np.full(customers, "organic"),
                "is_active": np.ones(customers, dtype=bool),
                "ingested_at": ingested,
            }
        ),
        "signup_date",
    )
    when = pa.array((when_s * 1_000_000).astype("datetime64[us]")).cast(TS)
    amount = np.round(rng.lognormal(3.0, 0.9, size=owner.size), 2)
    write_source(
        lake,
        "billing",
        pa.table(
            {
                "invoice_id": [f"INV-{i:07d}" for i in range(owner.size)],
                "customer_id": ids[owner],
                "invoice_date": when,
                "amount": amount,
                "currency": np.full(owner.size, "USD"),
                "payment_status": np.full(owner.size, "paid"),
                "plan_type": np.full(owner.size, "basic"),
                "previous_plan_type": pa.nulls(owner.size, pa.string()),
                "ingested_at": when,
            }
        ),
        "invoice_date",
    )
    write_source(
        lake,
        "usage_events",
        pa.table(
            {
                "event_id": [f"EVT-{i:010d}" for i in range(owner.size)],
                "customer_id": ids[owner],
                "event_timestamp": when,
                "event_type": np.full(owner.size, "course_enroll"),
                "course_id": np.full(owner.size, "COURSE-001"),
                "watch_minutes": pa.nulls(owner.size, pa.float64()),
                "quiz_score": pa.nulls(owner.size, pa.float64()),
                "ingested_at": when,
            }
        ),
        "event_timestamp",
    )
    return {"customers": customers, "billing": owner.size, "usage_events": owner.size}


def _partitions(folder: Path) -> int:
    return sum(1 for _ in folder.glob("date=*")) if folder.is_dir() else 0


def watch(
    command: list[str], *, env: dict[str, str], progress: Path, log: Path, budget: float
) -> dict[str, object]:
    """Run a command, sampling its RSS every second and logging progress (partitions written).

    A run still going after `budget` seconds is stopped and reported as such.

    Returns:
        Wall seconds, the sampled peak RSS in GiB, whether it finished, the progress trace and
        the command's output.
    """
    import psutil

    started = time.perf_counter()
    trace: list[tuple[float, int, float]] = []
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
        handle, peak, last = psutil.Process(proc.pid), 0, 0.0
        while proc.poll() is None:
            try:
                peak = max(peak, handle.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            now = time.perf_counter() - started
            if now - last >= 60:
                trace.append((now, _partitions(progress), peak / 2**30))
                print(
                    f"  {now:7.0f} s: {trace[-1][1]:,} day partitions, peak RSS {peak / 2**30:.2f} GiB",
                    flush=True,
                )
                last = now
            if now > budget:
                proc.terminate()
                proc.wait()
                break
            time.sleep(1)
    finished = proc.returncode == 0
    if not finished and time.perf_counter() - started <= budget:
        raise RuntimeError(f"{command} failed ({proc.returncode}): {log.read_text(encoding='utf-8')[-3000:]}")
    return {
        "wall": time.perf_counter() - started,
        "rss": peak / 2**30,
        "finished": finished,
        "trace": trace,
        "out": log.read_text(encoding="utf-8").strip(),
    }


def bench_large(work: Path, *, customers: int, purchases: int, budget: float) -> dict[str, object]:
    home = work / "large"
    rows = purchase_history_lake(home / "data" / "lake", customers=customers, purchases=purchases)
    table_dir = home / "data" / "features" / "customer_profile_v1"
    result = watch(
        [str(CHURNOPS), "features", "build", "--home", str(home)],
        env=QUIET,
        progress=table_dir,
        log=work / "large.log",
        budget=budget,
    )
    partitions = _partitions(table_dir)
    size = sum(p.stat().st_size for p in table_dir.rglob("data.parquet"))
    expected_days = (date.today() - date(1997, 1, 1)).days + 1
    shutil.rmtree(home)
    return {"rows": rows, **result, "partitions": partitions, "bytes": size, "expected_days": expected_days}


def baseline_tree(work: Path, commit: str) -> Path:
    """The baseline commit's sources, importable as `churnops` from the returned folder."""
    source = work / "baseline-src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    shim = work / "baseline-path" / "churnops"
    shim.mkdir(parents=True)
    # The package-dir mapping of pyproject, by symlinks: churnops.features -> features/, ...
    for entry in (source / "churnops").iterdir():
        (shim / entry.name).symlink_to(entry)
    for folder in ("contracts", "storage", "synthetic", "ingestion", "features", "feature_repo", "training"):
        (shim / folder).symlink_to(source / folder)
    return shim.parent


def demo_lake(work: Path) -> tuple[Path, datetime]:
    home = work / "demo"
    env = {**QUIET, "CHURNOPS_HOME": str(home)}
    # The default window (120 days up to now), pinned to midnight so the build's end is known.
    today = datetime.now(tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=120)
    generate = [str(CHURNOPS), "generate", "--home", str(home), "--start", f"{start:%Y-%m-%d}"]
    subprocess.run(generate, check=True, capture_output=True, env=env)
    subprocess.run([str(CHURNOPS), "ingest", "--home", str(home)], check=True, capture_output=True, env=env)
    return home / "data" / "lake", today


def bench_demo(work: Path, *, runs: int, commit: str) -> dict[str, object]:
    lake, until = demo_lake(work)
    old_path = baseline_tree(work, commit)
    results: dict[str, list[tuple[float, float, float, int]]] = {"ours": [], "baseline": []}
    for i in range(runs):
        for name in ("ours", "baseline"):
            features = work / f"features-{name}-{i}"
            env = {**QUIET, "PYTHONPATH": str(old_path)} if name == "baseline" else QUIET
            wall, rss, out = timed_process(
                [str(PYTHON), "-c", DRIVER, str(lake), str(features), until.isoformat()], env=env, cwd=work
            )
            _, source, seconds, snapshots = out.split()[-4:]
            # The baseline must really run the baseline's code, and ours the checkout's.
            assert source.startswith(str(old_path)) == (name == "baseline"), source
            results[name].append((float(seconds), wall, rss, int(snapshots)))
            shutil.rmtree(features)
    return {"until": until, "results": results}


def _median(values: list[tuple[float, float, float, int]], index: int) -> float:
    return statistics.median(v[index] for v in values)


def header(args: argparse.Namespace, title: str) -> list[str]:
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cpus = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    cpu = cpus[0].split(":", 1)[1].strip() if cpus else platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"# {title}",
        "",
        f"Machine: {os.cpu_count()} CPUs, {cpu}, {memory:.0f} GiB RAM; Python {platform.python_version()}; "
        f"commit {commit}; measured {date.today()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1/5/15 min; the machine is shared with other jobs).",
        "",
        f"Command: `.venv/bin/python bench/build_memory_bench.py --part {args.part} --runs {args.runs} "
        f"--baseline {args.baseline} --budget {args.budget:.0f}`",
        "",
        "The build uses its default memory limit (a quarter of the machine's memory).",
        "",
    ]


def large_report(args: argparse.Namespace, large: dict[str, object]) -> str:
    rows = large["rows"]
    finished = bool(large["finished"])
    outcome = (
        f"Output: `{large['out']}`"
        if finished
        else f"**Stopped after the bench's time budget ({args.budget:.0f} s), not finished**: "
        f"{large['partitions']:,} of {large['expected_days']:,} day partitions written"
    )
    trace = [f"| {t:,.0f} | {n:,} | {r:.2f} |" for t, n, r in large["trace"]]  # type: ignore[attr-defined]
    return "\n".join(
        [
            *header(args, "Feature build: the real case's shape, built up to today"),
            f"{rows['customers']:,} customers signed up in Q1 1997; "  # type: ignore[index]
            f"{rows['billing']:,} purchases over 18 months "  # type: ignore[index]
            "(Jan 1997 to Jun 1998), each a paid invoice and a usage event; no churn labels, so every "
            "customer has a snapshot every day from signup to today. Peak RSS is sampled every second "
            "(psutil) from the `churnops features build` process.",
            "",
            "| what | wall time | peak RSS |",
            "|---|---:|---:|",
            f"| ours: `churnops features build` (default until = now) | {large['wall']:.0f} s"
            f"{'' if finished else ' (stopped)'} | **{large['rss']:.2f} GiB** |",
            "| one-shot build of commit 48b94ae (measured before, same shape) | killed by the OOM killer "
            "| 23 GB |",
            "",
            f"{outcome}; {large['partitions']:,} day partitions, "
            f"{large['bytes'] / 2**30:.2f} GiB of Parquet.",
            "",
            "Progress, once a minute:",
            "",
            "| seconds | day partitions written | peak RSS so far (GiB) |",
            "|---:|---:|---:|",
            *trace,
            "",
        ]
    )


def demo_report(args: argparse.Namespace, demo: dict[str, object]) -> str:
    res = demo["results"]
    ours, base = res["ours"], res["baseline"]  # type: ignore[index]
    return "\n".join(
        [
            *header(args, "Feature build: demo data, chunked vs one shot"),
            "`churnops generate` defaults (2,000 customers x 120 days) ingested with `churnops ingest`; "
            f"full build up to the data's end ({demo['until']:%Y-%m-%d %H:%M} UTC); {ours[0][3]:,} "
            f"snapshots (ours) and {base[0][3]:,} (baseline: no population rule, so churned customers "
            f"keep snapshots to the end). Medians of {args.runs} runs, alternating, each build in its own "
            "process under `/usr/bin/time -v` (peak RSS = its maximum resident set size); build time is "
            "measured inside the process, wall time includes the imports.",
            "",
            "| build | build time | wall time | peak RSS |",
            "|---|---:|---:|---:|",
            f"| ours (chunked) | **{_median(ours, 0):.2f} s** | {_median(ours, 1):.2f} s | "
            f"{_median(ours, 2):.2f} GiB |",
            f"| baseline {args.baseline} (one shot) | {_median(base, 0):.2f} s | {_median(base, 1):.2f} s | "
            f"{_median(base, 2):.2f} GiB |",
            "",
            f"Ours / baseline build time: {_median(ours, 0) / _median(base, 0):.2f}x. "
            f"Every run (build s): ours {[round(v[0], 2) for v in ours]}, "
            f"baseline {[round(v[0], 2) for v in base]}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="48b94ae")
    parser.add_argument("--customers", type=int, default=23_570)
    parser.add_argument("--purchases", type=int, default=69_659)
    parser.add_argument("--part", choices=["demo", "large"], required=True)
    parser.add_argument(
        "--budget", type=float, default=6 * 3600, help="seconds before a large run is stopped"
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/build_memory_<part>.md")
    args = parser.parse_args()
    out = args.out or REPO / "bench" / "results" / f"build_memory_{args.part}.md"
    with tempfile.TemporaryDirectory(prefix="build-memory-", dir=Path.home()) as tmp:
        work = Path(tmp)
        if args.part == "demo":
            text = demo_report(args, bench_demo(work, runs=args.runs, commit=args.baseline))
        else:
            large = bench_large(work, customers=args.customers, purchases=args.purchases, budget=args.budget)
            text = large_report(args, large)
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
