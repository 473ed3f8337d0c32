"""Benchmark: the vectorised generator against the obvious per-customer-per-day Python loop.

Usage:
    .venv/bin/python bench/generate_bench.py            # print only
    .venv/bin/python bench/generate_bench.py --record   # also append a row to bench/RESULTS.md

Both sides produce the same five CSV sources from the same behavioural model (the naive one
with the `random` module, one Python iteration per customer-day, session and event, and the
`csv` module for writing). The vectorised side is timed as a median over several runs, in both
formats; the naive side once, as it is the slow one.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churnops.synthetic.generate import generate
from churnops.synthetic.schemas import SOURCES, column_names

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## generate"
START = datetime(2026, 1, 1, tzinfo=UTC)
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_NAIVE_PRICE = {"pro": 15.0, "enterprise": 45.0}
TABLE_HEADER = (
    "| date (UTC) | machine | python | customers x days | rows written | vectorised CSV median s "
    "| vectorised Parquet median s | naive loop s | speed-up (CSV) |\n"
    "|---|---|---|---|---|---|---|---|---|\n"
)


@dataclass(frozen=True)
class _NaiveCustomer:
    """One customer of the naive loop, with the draws every source needs."""

    cid: str
    e: float
    paid: bool
    plan: str
    seats: int
    signup: datetime
    users: float
    churned: bool
    churn: datetime
    stop: datetime


def naive_generate(*, out_dir: Path, customers: int, days: int, seed: int, start: datetime) -> dict[str, int]:
    """The straightforward implementation: nested Python loops and `csv.writer`.

    Args:
        out_dir: Folder for the five CSV files.
        customers: Number of customers.
        days: Window length in days.
        seed: Random seed.
        start: Window start (UTC).

    Returns:
        Rows written per source.
    """
    rnd = random.Random(seed)
    end = start + timedelta(days=days)
    rows: dict[str, list[list[object]]] = {name: [] for name in SOURCES}
    counters = {"usage_events": 0, "support_tickets": 0, "billing": 0}
    for i in range(1, customers + 1):
        c = _naive_customer(rnd, i=i, start=start, end=end, days=days)
        for d in range(days):
            day = start + timedelta(days=d)
            if day >= c.stop:
                break
            _naive_day(rnd, c, day=day, end=end, rows=rows, counters=counters)
        if c.paid:
            _naive_invoices(rnd, c, rows=rows, counters=counters)
        if c.churned:
            rows["churn_labels"].append([c.cid, c.churn.strftime(_ISO), "low_usage", c.churn.strftime(_ISO)])
        rows["customers"].append(
            [
                c.cid,
                "Blue Harbor Labs",
                c.signup.date().isoformat(),
                c.plan,
                c.seats,
                "education",
                "US",
                "organic",
                str(not c.churned).lower(),
                c.signup.strftime(_ISO),
            ]
        )
    # The naive version sorts events by time too, as the real feed is in event order.
    rows["usage_events"].sort(key=lambda r: r[2])
    for name, data in rows.items():
        with (out_dir / f"{name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(column_names(name))
            writer.writerows(data)
    return {name: len(data) for name, data in rows.items()}


def _naive_customer(
    rnd: random.Random, *, i: int, start: datetime, end: datetime, days: int
) -> _NaiveCustomer:
    """Draw one customer's plan, seats, signup, utilization and churn."""
    e = rnd.betavariate(2.0, 2.5)
    paid = rnd.random() < 0.35
    plan = ("enterprise" if rnd.random() < 0.3 else "pro") if paid else "basic"
    seats = {"basic": rnd.randint(1, 3), "pro": rnd.randint(2, 25), "enterprise": rnd.randint(20, 200)}[plan]
    signup = datetime.combine(start.date(), datetime.min.time(), UTC) - timedelta(days=rnd.randint(30, 400))
    # Seat utilization drawn on its own: the generator's copula to engagement needs a Beta
    # quantile function the standard library lacks; the amount of work is the same.
    utilization = rnd.betavariate(2.0, 2.5)
    p_churn = min(0.95, 0.35 * (0.4 + 1.4 * (1 - utilization) ** 1.6)) * (0.75 if paid else 1.0)
    churned = rnd.random() < p_churn
    churn = start + timedelta(days=rnd.randint(days // 4, days - 1), seconds=rnd.randint(0, 86_399))
    return _NaiveCustomer(
        cid=f"CUST-{i:06d}",
        e=e,
        paid=paid,
        plan=plan,
        seats=seats,
        signup=signup,
        users=utilization * math.sqrt(seats),
        churned=churned,
        churn=churn,
        stop=churn if churned else end,
    )


def _naive_day(
    rnd: random.Random,
    c: _NaiveCustomer,
    *,
    day: datetime,
    end: datetime,
    rows: dict[str, list[list[object]]],
    counters: dict[str, int],
) -> None:
    """One customer-day: maybe a ticket, then, if the account is active, its sessions."""
    if rnd.random() < 0.005 * (0.3 + 1.26 * (1 - c.e)):
        counters["support_tickets"] += 1
        created = day + timedelta(seconds=rnd.randint(0, 86_399))
        if created < c.stop:
            hours = round(24.0 * math.exp(rnd.gauss(0, 0.8)), 2)
            score = min(5, max(1, round(rnd.gauss(1.8 + 2.8 * c.e, 0.9))))
            rows["support_tickets"].append(
                [
                    f"TCK-{counters['support_tickets']:06d}",
                    c.cid,
                    created.strftime(_ISO),
                    "how_to",
                    "medium",
                    f"{hours:.2f}",
                    score,
                    (created + timedelta(hours=hours)).strftime(_ISO),
                ]
            )
    if rnd.random() >= 1 - (1 - (0.15 + 0.8 * c.e)) ** max(1.0, c.users):
        return
    for _ in range(1 + poisson(rnd, c.users)):
        _naive_session(rnd, c, day=day, end=end, rows=rows, counters=counters)


def _naive_session(
    rnd: random.Random,
    c: _NaiveCustomer,
    *,
    day: datetime,
    end: datetime,
    rows: dict[str, list[list[object]]],
    counters: dict[str, int],
) -> None:
    """One session: a login and the learning events that follow it, cut at the customer's stop."""
    e = c.e
    session = day + timedelta(seconds=rnd.randint(0, 86_400 - 3_600))
    events = [("login", 0)]
    events += [("video_watch", rnd.randint(30, 3_599)) for _ in range(poisson(rnd, 0.2 + 1.6 * e))]
    events += [("quiz_attempt", rnd.randint(30, 3_599)) for _ in range(poisson(rnd, 0.05 + 0.6 * e))]
    if rnd.random() < 0.03 + 0.07 * e:
        events.append(("course_enroll", rnd.randint(30, 3_599)))
    if rnd.random() < 0.004 + 0.02 * e:
        events.append(("certificate_earned", rnd.randint(30, 3_599)))
    for etype, offset in events:
        ts = session + timedelta(seconds=offset)
        if ts >= c.stop:
            continue
        counters["usage_events"] += 1
        minutes = f"{rnd.gammavariate(2.0, 3.0 + 12.0 * e):.2f}" if etype == "video_watch" else ""
        quiz = f"{min(100.0, max(0.0, rnd.gauss(45 + 45 * e, 12))):.1f}" if etype == "quiz_attempt" else ""
        course = "" if etype == "login" else f"COURSE-{rnd.randint(1, 40):03d}"
        ingested = min(ts + timedelta(seconds=rnd.randint(60, 900)), end)
        rows["usage_events"].append(
            [
                f"EVT-{counters['usage_events']:010d}",
                c.cid,
                ts.strftime(_ISO),
                etype,
                course,
                minutes,
                quiz,
                ingested.strftime(_ISO),
            ]
        )


def _naive_invoices(
    rnd: random.Random, c: _NaiveCustomer, *, rows: dict[str, list[list[object]]], counters: dict[str, int]
) -> None:
    """A paid customer's invoices, every 30 days from signup until they stop."""
    due = c.signup + timedelta(seconds=rnd.randint(0, 6 * 3_600))
    while due < c.stop:
        counters["billing"] += 1
        failed = rnd.random() < 0.07 * (0.25 + 1.35 * (1 - c.e))
        rows["billing"].append(
            [
                f"INV-{counters['billing']:07d}",
                c.cid,
                due.strftime(_ISO),
                f"{c.seats * _NAIVE_PRICE[c.plan]:.2f}",
                "USD",
                "failed" if failed else "paid",
                c.plan,
                "",
                due.strftime(_ISO),
            ]
        )
        due += timedelta(days=30)


def poisson(rnd: random.Random, lam: float) -> int:
    """Knuth's Poisson draw: the loop a plain-Python implementation would write."""
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rnd.random()
        if p <= threshold:
            return k
        k += 1


def machine() -> str:
    """`nproc` and the CPU model, as recorded in RESULTS.md."""
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or "?"
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{nproc} x {model}"


def time_vectorised(fmt: str, customers: int, days: int, runs: int) -> tuple[float, int]:
    """Median wall time of `generate` and the rows it wrote."""
    times, total = [], 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            result = generate(
                out_dir=Path(tmp), customers=customers, days=days, seed=42, start=START, fmt=fmt
            )
            times.append(time.perf_counter() - began)
            total = sum(result.rows.values())
    return statistics.median(times), total


def record(row: str) -> None:
    """Append one table row to this benchmark's section of RESULTS.md, leaving other sections alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    heads = [i for i, line in enumerate(lines) if line.rstrip() == SECTION]
    if not heads:
        section = (
            f"\n{SECTION}\n\nThe synthetic source generator (`synthetic/`) against a naive "
            "per-customer-per-day Python loop (in `bench/generate_bench.py`), same model, CSV output.\n\n"
            "Command: `.venv/bin/python bench/generate_bench.py --record`\n\n" + TABLE_HEADER + row + "\n"
        )
        new = text.rstrip("\n") + "\n" + section
    else:
        begin = heads[0]
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        table_rows = [i for i in range(begin, end) if lines[i].startswith("|")]
        at = table_rows[-1] + 1 if table_rows else end
        lines.insert(at, row + "\n")
        new = "".join(lines)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, RESULTS)


def main() -> None:
    """Run the benchmark and print (and optionally record) the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3, help="runs of the vectorised generator (median)")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args()

    csv_s, csv_rows = time_vectorised("csv", args.customers, args.days, args.runs)
    parquet_s, _ = time_vectorised("parquet", args.customers, args.days, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        naive_rows = naive_generate(
            out_dir=Path(tmp), customers=args.customers, days=args.days, seed=42, start=START
        )
        naive_s = time.perf_counter() - began

    print(f"machine:            {machine()}")
    print(f"python:             {platform.python_version()}")
    print(f"size:               {args.customers} customers x {args.days} days")
    print(f"vectorised rows:    {csv_rows:,}  (naive: {sum(naive_rows.values()):,})")
    print(f"vectorised csv:     {csv_s:.2f} s (median of {args.runs})")
    print(f"vectorised parquet: {parquet_s:.2f} s (median of {args.runs})")
    print(f"naive loop csv:     {naive_s:.2f} s (1 run)")
    print(f"speed-up:           {naive_s / csv_s:.1f}x")
    if args.record:
        row = (
            f"| {datetime.now(UTC):%Y-%m-%d} | {machine()} | {platform.python_version()} "
            f"| {args.customers} x {args.days} | {csv_rows:,} | {csv_s:.2f} | {parquet_s:.2f} "
            f"| {naive_s:.2f} | {naive_s / csv_s:.1f}x |"
        )
        record(row)
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
