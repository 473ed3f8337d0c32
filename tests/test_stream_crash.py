"""Crash safety of the stream consumer: `kill -9` of the consumer at each step and of the broker.

Every scenario consumes the same published stream into a home of its own (its own durable
consumer), is killed at a named crash point (`CHURNOPS_CRASH_AT`), is restarted, and must end
with the lake, after compaction, byte for byte equal to an uninterrupted replay of the stream, the
same quarantined records, and every record counted exactly once in the ingestion log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nats_support import free_port, nats_server, start_server
from stream_events import Workload, make_workload, publish

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.broker import DURABLE_ENV, NATS_URL_ENV, STREAM_ENV, SUBJECT_ROOT_ENV, BrokerNames
from churnops.ingestion.log import read_log
from churnops.ingestion.stream.append import compact_source
from churnops.ingestion.stream.consumer import ConsumerSettings, replay
from churnops.settings import Workspace
from churnops.storage.crash import CRASH_ENV
from churnops.streaming import stream_target

STREAM = "churnops_crash_test"
ROOT = "churnops.crashtest"
RUN = (
    "stream",
    "run",
    "--no-online",
    "--until-idle",
    "--max-rows",
    "400",
    "--ack-wait",
    "2",
    "--compact-after",
    "0",
)


@dataclass(frozen=True)
class Broker:
    url: str
    port: int
    store: Path
    work: Workload
    reference: Workspace
    proc: list[subprocess.Popen]


def _env(broker: Broker, durable: str, crash: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env |= {NATS_URL_ENV: broker.url, STREAM_ENV: STREAM, SUBJECT_ROOT_ENV: ROOT, DURABLE_ENV: durable}
    if crash is not None:
        env[CRASH_ENV] = crash
    return env


def _churnops(home: Path, args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "churnops.cli", *args, "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _compact(ws: Workspace) -> None:
    for contract in load_source_contracts().values():
        compact_source(contract, lake_dir=ws.lake, log_db=ws.ingestion_log)


def _lake_bytes(ws: Workspace) -> dict[str, bytes]:
    return {str(p.relative_to(ws.lake)): p.read_bytes() for p in sorted(ws.lake.rglob("*.parquet"))}


def _quarantined(ws: Workspace) -> list[tuple[str, str]]:
    files = sorted(ws.quarantine.rglob("stream-*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).select(["_sequence", "_rule"]).to_pylist()]
    return sorted((r["_sequence"], r["_rule"]) for r in rows)


def _assert_same_as_reference(ws: Workspace, broker: Broker) -> None:
    _compact(ws)
    assert _lake_bytes(ws) == _lake_bytes(broker.reference)
    assert _quarantined(ws) == _quarantined(broker.reference)
    rows = [r for r in read_log(ws.ingestion_log) if r["stream_last"] is not None]
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["received"] == r["accepted"] + r["quarantined"] + r["duplicates"] for r in rows)
    assert sum(r["received"] for r in rows) == broker.work.messages


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("stream-crash")
    port = free_port()
    store = root / "nats"
    with nats_server(port, store) as proc:
        url = f"nats://127.0.0.1:{port}"
        work = make_workload(customers=60, events=3_000)
        names = BrokerNames(stream=STREAM, subject_root=ROOT, durable="unused")
        publish(url, names, work)
        reference = Workspace(home=root / "reference")
        asyncio.run(
            replay(
                names=names,
                target=stream_target(reference, stream=STREAM),
                settings=ConsumerSettings(url=url),
                lock=contextlib.nullcontext,
            )
        )
        _compact(reference)
        holder = [proc]
        yield Broker(url=url, port=port, store=store, work=work, reference=reference, proc=holder)
        for extra in holder[1:]:
            extra.kill()
            extra.wait(timeout=30)


@pytest.mark.parametrize(
    "point",
    [
        "stream:usage_events:staged-1",
        "stream:usage_events:committed",
        "stream:usage_events:renamed-1",
        "stream:before-ack",
        "stream:acked-half",
    ],
)
def test_consumer_killed_at_a_step_then_restarted_ends_with_the_same_lake(
    broker: Broker, tmp_path: Path, point: str
) -> None:
    ws = Workspace(home=tmp_path / "home")
    durable = "crash_" + point.replace(":", "_").replace("-", "_")
    killed = _churnops(ws.home, RUN, _env(broker, durable, crash=point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = _churnops(ws.home, RUN, _env(broker, durable))
    assert again.returncode == 0, again.stderr
    _assert_same_as_reference(ws, broker)


def test_compaction_killed_mid_way_is_finished_by_the_next_run(broker: Broker, tmp_path: Path) -> None:
    ws = Workspace(home=tmp_path / "home")
    done = _churnops(ws.home, RUN, _env(broker, "crash_compact"))
    assert done.returncode == 0, done.stderr
    killed = _churnops(
        ws.home, ("stream", "compact"), _env(broker, "crash_compact", crash="compact:customers:renamed-1")
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = _churnops(ws.home, ("stream", "compact"), _env(broker, "crash_compact"))
    assert again.returncode == 0, again.stderr
    _assert_same_as_reference(ws, broker)


def test_broker_killed_mid_stream_then_restarted_loses_and_doubles_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    ws = Workspace(home=tmp_path / "home")
    args = [sys.executable, "-m", "churnops.cli", *RUN[:5], "100", *RUN[6:], "--home", str(ws.home)]
    consumer = subprocess.Popen(
        args, env=_env(broker, "crash_broker"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not [r for r in read_log(ws.ingestion_log) if r["source"] == "usage_events"]:
            assert consumer.poll() is None and time.monotonic() < deadline, "the consumer committed nothing"
            time.sleep(0.05)
        broker.proc[-1].kill()
        broker.proc[-1].wait(timeout=30)
        time.sleep(1.0)
        broker.proc.append(start_server(str(Path("/usr/sbin/nats-server")), broker.port, broker.store))
        _, err = consumer.communicate(timeout=240)
        assert consumer.returncode == 0, err
    finally:
        if consumer.poll() is None:
            consumer.kill()
    _assert_same_as_reference(ws, broker)
