"""Intake throughput: records through `churnops intake` vs publishing them straight to JetStream.

Generates the default data (2000 customers x 120 days, CSV), starts a private `nats-server -js`
(store in a temporary folder) and the real `churnops intake` command on it, then measures:

- events: `--events` usage events posted as JSON arrays of `--batch` records, one request after
  another, each answered once the broker acknowledged every record; against the obvious
  alternative, a producer with a NATS client calling `broker.publish_rows` on the same batches
  (the same acknowledged publish, without HTTP, JSON parsing and shape checks);
- uploads: the first `--upload-rows` rows of the default `usage_events.csv` (an analyst's export)
  PUT as one upload (new records), then the same file again (every record a broker duplicate);
  against reading the file with the same reader (`readers.read_landing_file`) and `publish_rows`
  in batches of 1000 in-process;
- the intake process's peak resident memory (VmHWM) after each phase.

Each run uses new record ids, so no run is answered from the broker's duplicate window by
mistake. Medians over `--runs`.

Usage: .venv/bin/python bench/intake_bench.py [--runs 3] [--events 20000] [--batch 500]
       [--upload-rows 100000] [--out bench/results/intake.md]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from churnops.contracts.source_contract import load_source_contract
from churnops.ingestion.broker import BrokerNames, connect, ensure_stream, publish_rows
from churnops.ingestion.readers import read_landing_file
from churnops.synthetic.generate import generate

START = date(2026, 1, 1)
CONTRACT = load_source_contract("usage_events")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _renumbered(rows: list[dict[str, str]], run: int) -> list[dict[str, str]]:
    # EVT- and ten digits: the first digit carries the run, so every run's records are new.
    return [{**r, "event_id": f"EVT-{run}{r['event_id'][5:]}"} for r in rows]


def _events(path: Path, count: int) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return [
            {k: v for k, v in row.items() if v != ""} for _, row in zip(range(count), reader, strict=False)
        ]


def _batches(rows: list[dict[str, str]], size: int) -> list[list[dict[str, str]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def http_events(client: httpx.Client, batches: list[list[dict[str, str]]]) -> tuple[float, float]:
    """Post every batch; returns (seconds, median seconds per request)."""
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        response = client.post("/v1/events/usage_events", json=batch)
        latencies.append(time.perf_counter() - t)
        assert response.status_code == 202 and response.json()["published"] == len(batch), response.text
    return time.perf_counter() - start, statistics.median(latencies)


async def direct_events(url: str, names: BrokerNames, batches: list[list[dict[str, str]]]) -> float:
    """Publish every batch straight to the broker, awaiting each batch's acknowledgements."""
    client = await connect(url)
    try:
        js = client.jetstream()
        start = time.perf_counter()
        for batch in batches:
            acks = await publish_rows(js, names, contract=CONTRACT, rows=batch)
            assert not any(a.duplicate for a in acks)
        return time.perf_counter() - start
    finally:
        await client.close()


async def direct_upload(url: str, names: BrokerNames, path: Path) -> float:
    """Read a CSV with the landing-file reader and publish its rows in batches of 1000."""
    client = await connect(url)
    try:
        js = client.jetstream()
        start = time.perf_counter()
        table = read_landing_file(path, CONTRACT)
        for batch in table.to_batches(max_chunksize=1000):
            rows = [{k: v for k, v in r.items() if v is not None} for r in batch.to_pylist()]
            await publish_rows(js, names, contract=CONTRACT, rows=rows)
        return time.perf_counter() - start
    finally:
        await client.close()


def http_upload(client: httpx.Client, data: bytes, *, duplicates: bool) -> float:
    start = time.perf_counter()
    response = client.put(
        "/v1/uploads/usage_events", content=data, headers={"Content-Type": "text/csv"}, timeout=600
    )
    elapsed = time.perf_counter() - start
    body = response.json()
    assert response.status_code == 202, response.text
    assert body["duplicates" if duplicates else "published"] == body["rows"], body
    return elapsed


def _start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = _free_port()
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: _answers(port), "nats-server")
    return process, f"nats://127.0.0.1:{port}"


def _start_intake(home: Path, url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    churnops = str(Path(sys.executable).with_name("churnops"))
    env = {**os.environ, "CHURNOPS_NATS_URL": url}
    args = [churnops, "intake", "--home", str(home), "--port", str(port), "--no-require-keys",
            "--max-upload-mb", "1024"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    _wait(lambda: _answers(port), "churnops intake")
    return process, port


def _head(data: bytes, rows: int) -> bytes:
    """The header and the first `rows` data rows of a CSV without line breaks inside values."""
    end = -1
    for _ in range(rows + 1):
        end = data.find(b"\n", end + 1)
        if end < 0:
            return data
    return data[: end + 1]


def measure(*, runs: int, events: int, batch: int, upload_rows: int, work: Path) -> dict[str, object]:
    """Run every measurement; returns the figures for the report."""
    home = work / "home"
    landing = work / "landing"
    generate(out_dir=landing, customers=2000, days=120, start=START, fmt="csv")
    csv_path = landing / "usage_events.csv"
    original = _head(csv_path.read_bytes(), upload_rows)
    rows = _events(csv_path, events)
    nats_process, url = _start_nats(work / "nats")
    intake, port = _start_intake(home, url)
    names = BrokerNames.for_home(home)
    asyncio.run(_ensure(url, names))
    figures: dict[str, list[float]] = {
        k: [] for k in ("http_ev", "http_lat", "direct_ev", "up_new", "up_dup", "direct_up")
    }
    rss: dict[str, float] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for run in range(1, runs + 1):
                seconds, latency = http_events(client, _batches(_renumbered(rows, run), batch))
                figures["http_ev"].append(seconds)
                figures["http_lat"].append(latency)
                direct = _batches(_renumbered(rows, run + 4), batch)
                figures["direct_ev"].append(asyncio.run(direct_events(url, names, direct)))
            rss["after events"] = _peak_rss_mb(intake.pid)
            for run in range(1, runs + 1):
                data = original.replace(b"\nEVT-0", f"\nEVT-{run}".encode())
                figures["up_new"].append(http_upload(client, data, duplicates=False))
                figures["up_dup"].append(http_upload(client, data, duplicates=True))
                direct_path = work / f"direct-{run}.csv"
                direct_path.write_bytes(original.replace(b"\nEVT-0", f"\nEVT-{run + 4}".encode()))
                figures["direct_up"].append(asyncio.run(direct_upload(url, names, direct_path)))
            rss["after uploads"] = _peak_rss_mb(intake.pid)
    finally:
        intake.terminate()
        intake.wait(timeout=30)
        nats_process.terminate()
        nats_process.wait(timeout=30)
    return {
        "medians": {k: statistics.median(v) for k, v in figures.items()},
        "rss": rss,
        "upload_rows": original.count(b"\n") - 1,
        "upload_mb": len(original) / 1024 / 1024,
        "events": len(rows),
    }


async def _ensure(url: str, names: BrokerNames) -> None:
    from datetime import timedelta

    client = await connect(url)
    try:
        await ensure_stream(client.jetstream(), names, max_age=timedelta(days=730))
    finally:
        await client.close()


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(result: dict[str, Any], *, args: argparse.Namespace) -> str:
    """The results as Markdown."""
    m, rss = result["medians"], result["rss"]
    events, up_rows = result["events"], result["upload_rows"]
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    command = (
        f"`.venv/bin/python bench/intake_bench.py --runs {args.runs} --events {args.events} "
        f"--batch {args.batch} --upload-rows {args.upload_rows}`"
    )
    table = [
        _row(["what", "records", "intake s", "intake records/s", "direct s", "direct records/s",
              "intake / direct time"]),
        "|---|---:|---:|---:|---:|---:|---:|",
        _row([f"events, {args.batch} per request, one request at a time", f"{events:,}",
              f"{m['http_ev']:.2f}", f"{events / m['http_ev']:,.0f}", f"{m['direct_ev']:.2f}",
              f"{events / m['direct_ev']:,.0f}", f"{m['http_ev'] / m['direct_ev']:.2f}x"]),
        _row([f"upload, `usage_events.csv` ({result['upload_mb']:.1f} MiB), new records", f"{up_rows:,}",
              f"{m['up_new']:.2f}", f"{up_rows / m['up_new']:,.0f}", f"{m['direct_up']:.2f}",
              f"{up_rows / m['direct_up']:,.0f}", f"{m['up_new'] / m['direct_up']:.2f}x"]),
        _row(["the same upload again (all broker duplicates)", f"{up_rows:,}", f"{m['up_dup']:.2f}",
              f"{up_rows / m['up_dup']:,.0f}", "", "", ""]),
    ]  # fmt: skip
    return "\n".join(
        [
            "# Intake throughput",
            "",
            f"Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; Python {platform.python_version()}; "
            f"commit {commit}; load average at the end {load} (1/5/15 min; the machine is shared "
            "with other jobs).",
            "",
            f"Command: {command}",
            "",
            "Setup: `generate(customers=2000, days=120, start=2026-01-01)` (the default data), a "
            "private `nats-server -js` (file store), the real `churnops intake --no-require-keys` "
            f'process; medians of {args.runs} runs, every run with new record ids. "direct" is the '
            "same acknowledged publish (`broker.publish_rows`) from a Python NATS client in the same "
            "script: no HTTP, no JSON parsing, no shape checks.",
            "",
            *table,
            "",
            f"Median time of one events request of {args.batch} records (answered after every "
            f"acknowledgement): {m['http_lat'] * 1000:.1f} ms.",
            "",
            f"Peak resident memory of the intake process (VmHWM): {rss['after events']:.0f} MiB after "
            f"the events runs, {rss['after uploads']:.0f} MiB after the uploads (an upload is held as "
            "an Arrow text table while its records are published 1,000 at a time).",
            "",
        ]
    )


def main() -> None:
    """Parse the arguments, measure, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--upload-rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/intake.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as work:
        result = measure(
            runs=args.runs,
            events=args.events,
            batch=args.batch,
            upload_rows=args.upload_rows,
            work=Path(work),
        )
    text = report(result, args=args)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
