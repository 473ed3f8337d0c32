"""Streaming intake latency: event → broker ack → lake → online store, under an open-loop producer.

What users run: a fresh home with the Feast definitions applied, 2,000 customers streamed in
first, then `churnops stream run --metrics-port P` (a subprocess, online refresh on) while this
script publishes usage events at a fixed rate for a fixed time (open loop: each event is sent at
its scheduled time whether or not earlier ones were acknowledged), one rate after another.

Measured per event:
- publish → broker ack: from the send to the JetStream acknowledgement;
- publish → lake: from the send to the first poll (every 50 ms) that finds its `event_id` in a
  lake file;
- publish → online: from the send to the first poll at or after the lake sighting in which its
  customer's online `events_30d` changed (the consumer refreshes a micro-batch's customers after
  committing it, from the lake, so that change takes the event in).
Also the consumer's lag (`churnops_stream_lag` scraped from /metrics every second), events never
seen in the lake (loss), the consumer's peak RSS and the load average.

The obvious alternative, measured in the same script on copies of the same lake: batch `ingest()`
of one micro-batch's worth of events as a landing file, against the stream's append path for the
same events (`process_records`).

Usage: .venv/bin/python bench/stream_bench.py [--rates 200,1000,5000] [--seconds 60]
       [--out bench/results/stream.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import multiprocessing
import multiprocessing.synchronize
import os
import pickle
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.broker import (
    BrokerNames,
    connect,
    encode_row,
    ensure_stream,
    message_id,
    publish_rows,
    stream_retention,
)
from churnops.settings import Workspace

CUSTOMERS = 2_000
TYPES = ("login", "course_enroll", "video_watch", "quiz_attempt", "certificate_earned")


@dataclass
class RateRun:
    """One rate's measurements."""

    rate: int
    seconds: float
    sent: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    customer: dict[str, str] = field(default_factory=dict)
    lake: dict[str, float] = field(default_factory=dict)
    online: dict[str, float] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    achieved: float = 0.0


def customer_rows() -> list[dict]:
    today = datetime.now(UTC).date()
    return [
        {
            "customer_id": f"CUST-{i:06d}",
            "company_name": f"Company {i}",
            "signup_date": (today - timedelta(days=40 + i % 300)).isoformat(),
            "plan_type": ("basic", "pro", "enterprise")[i % 3],
            "seat_count": 1 + i % 50,
            "industry": None,
            "country": "US",
            "marketing_source": "organic",
            "is_active": True,
        }
        for i in range(CUSTOMERS)
    ]


def event_row(n: int, rng: random.Random) -> dict:
    kind = TYPES[n % len(TYPES)]
    return {
        "event_id": f"EVT-{n:010d}",
        "customer_id": f"CUST-{rng.randrange(CUSTOMERS):06d}",
        "event_timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event_type": kind,
        "course_id": None if kind == "login" else f"COURSE-{n % 200:03d}",
        "watch_minutes": 12.5 if kind == "video_watch" else None,
        "quiz_score": 80.0 if kind == "quiz_attempt" else None,
    }


async def produce(url: str, names: BrokerNames, run: RateRun, *, first: int) -> None:
    """Publish `rate` events per second for `seconds`, each at its scheduled time (open loop)."""
    contract = load_source_contracts()["usage_events"]
    subject = names.subject("usage_events")
    nc = await connect(url)
    js = nc.jetstream()
    rng = random.Random(run.rate)
    total = int(run.rate * run.seconds)
    pending: set[asyncio.Task] = set()

    async def one(row: dict) -> None:
        body = encode_row(row)
        headers = {"Nats-Msg-Id": message_id(contract, row, body), "Churnops-Contract-Version": "1"}
        run.sent[row["event_id"]] = time.time()
        await js.publish(subject, body, headers=headers, timeout=60)
        run.acked[row["event_id"]] = time.time()

    start = time.monotonic()
    for i in range(total):
        delay = start + i / run.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        row = event_row(first + i, rng)
        run.customer[row["event_id"]] = row["customer_id"]
        task = asyncio.create_task(one(row))
        pending.add(task)
        task.add_done_callback(pending.discard)
    run.achieved = total / (time.monotonic() - start)
    await asyncio.gather(*pending, return_exceptions=True)
    await nc.close()


class Watcher:
    """Polls the lake (new files) and the online table (changed customers) until stopped."""

    def __init__(self, ws: Workspace, keys: dict[bytes, str]) -> None:
        self.ws = ws
        self.keys = keys
        self.seen_files: set[Path] = set()
        self.lake: dict[str, float] = {}
        # Per customer: the times its online rows were seen to change.
        self.changes: dict[str, list[float]] = {}
        self.state: dict[str, bytes] = {}
        self.stop = threading.Event()
        self.online_db = ws.home / "data" / "feast" / "online.db"

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            self._lake(now)
            self._online(now)
            time.sleep(0.05)

    def _lake(self, now: float) -> None:
        folder = self.ws.lake / "usage_events"
        for path in folder.glob("date=*/*.parquet") if folder.is_dir() else []:
            if path in self.seen_files:
                continue
            self.seen_files.add(path)
            with contextlib.suppress(OSError):
                for event_id in pq.read_table(path, columns=["event_id"]).column(0).to_pylist():
                    self.lake.setdefault(event_id, now)

    def _online(self, now: float) -> None:
        if not self.online_db.exists():
            return
        con = sqlite3.connect(f"file:{self.online_db}?mode=ro", uri=True, timeout=5)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            table = next((t for t in tables if t.endswith("customer_profile_30d")), None)
            if table is None:
                return
            # events_30d grows with every event of the customer the refresh took in.
            rows = con.execute(
                f"SELECT entity_key, value FROM \"{table}\" WHERE feature_name = 'events_30d'"
            ).fetchall()
        except sqlite3.Error:
            return
        finally:
            con.close()
        for key, value in rows:
            customer = self.keys.get(bytes(key))
            if customer is not None and self.state.get(customer) != value:
                self.state[customer] = value
                self.changes.setdefault(customer, []).append(now)


def entity_keys(ws: Workspace) -> dict[bytes, str]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from churnops.features.store import open_store

    store = open_store(home=ws.home)
    version = store.config.entity_key_serialization_version
    out = {}
    for i in range(CUSTOMERS):
        cid = f"CUST-{i:06d}"
        key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=cid)])
        out[serialize_entity_key(key, entity_key_serialization_version=version)] = cid
    return out


def scrape_lag(port: int) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("churnops_stream_lag "):
            return float(line.split()[1])
    return None


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    p = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def churnops(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "churnops.cli", *args], env=env, check=True, capture_output=True)


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watch(home: str, keys: dict[bytes, str], stop: multiprocessing.synchronize.Event, out: str) -> None:
    """The poller, in a process of its own (so it never slows the producer): results pickled to `out`."""
    watcher = Watcher(Workspace(home=Path(home)), keys)
    watcher.stop = stop  # type: ignore[assignment]
    watcher.run()
    Path(out).write_bytes(pickle.dumps((watcher.lake, watcher.changes)))


def measure_rate(
    url: str, names: BrokerNames, *, rate: int, seconds: float, first: int, port: int
) -> RateRun:
    run = RateRun(rate=rate, seconds=seconds)
    load0 = os.getloadavg()[0]
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            lag = scrape_lag(port)
            if lag is not None:
                run.lags.append(lag)
            time.sleep(1.0)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    asyncio.run(produce(url, names, run, first=first))
    # Generous: at a rate above the consumer's throughput the backlog drains after the producer stops.
    deadline = time.time() + 900
    idle = 0
    while time.time() < deadline and idle < 3:
        idle = idle + 1 if scrape_lag(port) == 0 else 0
        time.sleep(1.0)
    time.sleep(5.0)  # the last micro-batch's commit and online refresh
    done.set()
    scraper.join()
    run.load = (load0, os.getloadavg()[0])
    return run


def attribute(run: RateRun, lake: dict[str, float], changes: dict[str, list[float]]) -> None:
    """Each acknowledged event's lake sighting and the first online change of its customer after it."""
    for event_id in run.acked:
        seen = lake.get(event_id)
        if seen is None:
            continue
        run.lake[event_id] = seen
        later = [t for t in changes.get(run.customer[event_id], []) if t >= seen]
        if later:
            run.online[event_id] = later[0]


def alternative(ws: Workspace, *, rows: int, runs: int) -> tuple[float, float]:
    """Median seconds of batch `ingest()` vs the stream append for one micro-batch, same lake."""
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.ingestion.ingest import ingest
    from churnops.ingestion.stream.append import StreamTarget
    from churnops.ingestion.stream.consumer import process_records
    from churnops.ingestion.stream.records import StreamRecord

    rng = random.Random(7)
    stored = datetime.now(UTC)
    events = [event_row(900_000_000 + i, rng) for i in range(rows)]
    batch_times, stream_times = [], []
    for attempt in range(runs):
        with tempfile.TemporaryDirectory(dir=ws.home) as tmp:
            root = Path(tmp)
            shutil.copytree(ws.lake, root / "lake-a")
            shutil.copytree(ws.lake, root / "lake-b")
            landing = root / "landing"
            landing.mkdir()
            with (landing / "usage_events.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=[*events[0], "ingested_at"])
                writer.writeheader()
                for row in events:
                    writer.writerow({k: ("" if v is None else v) for k, v in row.items()} | {
                        "ingested_at": stored.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})  # fmt: skip
            started = time.perf_counter()
            ingest(
                landing_dir=landing,
                lake_dir=root / "lake-a",
                quarantine_dir=root / "q-a",
                log_db=root / "log-a.db",
                sources=["usage_events"],
            )
            batch_times.append(time.perf_counter() - started)
            target = StreamTarget(
                lake_dir=root / "lake-b",
                quarantine_dir=root / "q-b",
                log_db=root / "log-b.db",
                contracts=load_source_contracts(),
                lateness=load_feature_contract().time.allowed_lateness,
                stream="bench",
            )
            records = [
                StreamRecord(
                    sequence=10**9 + attempt * rows + i,
                    source="usage_events",
                    body=encode_row(r),
                    stored_at=stored,
                    version="1",
                )
                for i, r in enumerate(events)
            ]
            started = time.perf_counter()
            process_records(records, target=target, committed=None, max_deliver=5)
            stream_times.append(time.perf_counter() - started)
    return statistics.median(batch_times), statistics.median(stream_times)


def report(runs: list[RateRun], *, alt: tuple[float, float], alt_rows: int, rss: float, command: str) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Streaming intake: event → broker → lake → online store",
        "",
        f"Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; Python {platform.python_version()}; "
        f"commit {commit}; NATS JetStream on 127.0.0.1:4222 (file storage); "
        "the machine is shared with other jobs.",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: a fresh home, `churnops features apply`, {CUSTOMERS:,} customers streamed in, then "
        "`churnops stream run --metrics-port P` (online refresh on, defaults: micro-batches of ≤ 2,000 "
        "records or 500 ms) in its own process; an open-loop producer in this process publishes usage events "
        "of random customers at each rate for the duration, one rate after the other; a poller in a "
        "process of its own (every 50 ms) finds each event in the lake and each customer's online change. "
        "Latencies from the publish call, ms; lost = acknowledged by the broker, never in the lake.",
        "",
        "| rate (events/s) | achieved | acked / sent | lost | ack p50 / p95 / p99 | lake p50 / p95 / p99 | "
        "online p50 / p95 / p99 | lag max / median | load avg start → end |",
        "|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for run in runs:
        ack = percentiles([run.acked[e] - run.sent[e] for e in run.acked])
        lake = percentiles([run.lake[e] - run.sent[e] for e in run.lake])
        online = percentiles([run.online[e] - run.sent[e] for e in run.online])
        lost = len(run.acked) - len(run.lake)
        lag = (max(run.lags), statistics.median(run.lags)) if run.lags else (float("nan"), float("nan"))
        lines.append(
            f"| {run.rate:,} | {run.achieved:,.0f} | {len(run.acked):,} / {len(run.sent):,} | {lost:,} | "
            f"{ack[0]:.0f} / {ack[1]:.0f} / {ack[2]:.0f} | {lake[0]:.0f} / {lake[1]:.0f} / {lake[2]:.0f} | "
            f"{online[0]:.0f} / {online[1]:.0f} / {online[2]:.0f} | {lag[0]:,.0f} / {lag[1]:,.0f} | "
            f"{run.load[0]:.1f} → {run.load[1]:.1f} |"
        )
    batch_s, stream_s = alt
    lines += [
        "",
        f"Consumer peak RSS (VmHWM) over the whole run: {rss:,.0f} MiB.",
        "",
        f"Alternative, same lake (copied after the runs), {alt_rows:,} events, median of 3: batch `ingest()` "
        f"of them as one landing file {batch_s:.2f} s; the stream's append path (`process_records`) "
        f"{stream_s:.2f} s; ratio {batch_s / stream_s:.1f}x.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,1000,5000")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/stream.md"))
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    command = " ".join(["python", "bench/stream_bench.py", *sys.argv[1:]])
    rates = [int(r) for r in args.rates.split(",")]
    root = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    ws = Workspace(home=root / "home")
    names = BrokerNames.for_home(ws.home)
    env = os.environ | {"CHURNOPS_NATS_URL": args.url, "CHURNOPS_HOME": str(ws.home)}
    churnops("features", "apply", env=env)

    async def seed() -> None:
        contracts = load_source_contracts()
        nc = await connect(args.url)
        js = nc.jetstream()
        await ensure_stream(js, names, max_age=stream_retention(contracts))
        await publish_rows(js, names, contract=contracts["customers"], rows=customer_rows())
        await nc.close()

    asyncio.run(seed())
    port = 9466
    consumer = subprocess.Popen(
        [sys.executable, "-m", "churnops.cli", "stream", "run", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = root / "watcher.pickle"
    poller = context.Process(target=watch, args=(str(ws.home), entity_keys(ws), stop, str(results)))
    runs: list[RateRun] = []
    try:
        deadline = time.time() + 300
        while not (ws.lake / "customers").is_dir() or not list(
            (ws.lake / "customers").glob("date=*/*.parquet")
        ):
            if time.time() > deadline or consumer.poll() is not None:
                raise SystemExit(
                    f"the consumer did not take the customers in: {consumer.stderr.read().decode()}"
                )
            time.sleep(0.5)
        time.sleep(5.0)  # Feast opened, first refresh done
        poller.start()
        first = 0
        for rate in rates:
            runs.append(
                measure_rate(args.url, names, rate=rate, seconds=args.seconds, first=first, port=port)
            )
            first += int(rate * args.seconds) + 1
            print(f"rate {rate}: done", flush=True)
        rss = rss_peak_mib(consumer.pid)
    finally:
        stop.set()
        if poller.is_alive() or poller.exitcode is None:
            poller.join(timeout=120)
        consumer.terminate()
        consumer.wait(timeout=120)
    lake, changes = pickle.loads(results.read_bytes())
    for run in runs:
        attribute(run, lake, changes)
    alt_rows = 1_000
    alt = alternative(ws, rows=alt_rows, runs=3)
    text = report(runs, alt=alt, alt_rows=alt_rows, rss=rss, command=command)
    args.out.write_text(text)
    print(text)

    async def cleanup() -> None:
        nc = await connect(args.url)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(names.stream)
        await nc.close()

    asyncio.run(cleanup())
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
