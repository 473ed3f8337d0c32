"""The stream consumer against a real JetStream: accounting, dedup, quarantine, replay, compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nats_support import delete_stream, jetstream_url
from stream_events import Workload, make_workload, publish

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.broker import BrokerNames
from churnops.ingestion.log import read_log
from churnops.ingestion.stream.append import compact_source
from churnops.ingestion.stream.consumer import ConsumerSettings, StreamConsumer, replay
from churnops.settings import Workspace
from churnops.storage.lake import read_source
from churnops.streaming import stream_target

EVENTS = 50_000
CUSTOMERS = 500


def _consume(ws: Workspace, names: BrokerNames, url: str) -> None:
    consumer = StreamConsumer(
        names=names,
        target=stream_target(ws, stream=names.stream),
        lock=contextlib.nullcontext,
        settings=ConsumerSettings(url=url, until_idle=True, compact_after=0, ack_wait=60),
    )
    asyncio.run(asyncio.wait_for(consumer.run(asyncio.Event()), timeout=300))


def _lake_bytes(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*.parquet"))}


def _quarantine(ws: Workspace) -> list[tuple[str, str]]:
    files = sorted((ws.quarantine / "usage_events").glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).select(["_sequence", "_rule"]).to_pylist()]
    return sorted((r["_sequence"], r["_rule"]) for r in rows)


@pytest.fixture(scope="module")
def streamed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Workspace, BrokerNames, str, Workload]]:
    root = tmp_path_factory.mktemp("stream")
    ws = Workspace(home=root / "home")
    names = BrokerNames.for_home(ws.home)
    work = make_workload(customers=CUSTOMERS, events=EVENTS)
    with jetstream_url(root) as url:
        try:
            publish(url, names, work)
            _consume(ws, names, url)
            yield ws, names, url, work
        finally:
            delete_stream(url, names.stream)


def test_every_record_is_accounted_for_once(streamed: tuple) -> None:
    ws, _, _, work = streamed
    log = [r for r in read_log(ws.ingestion_log, source="usage_events") if r["stream_last"] is not None]
    received = sum(r["received"] for r in log)
    accepted = sum(r["accepted"] for r in log)
    replaced = sum(r["replaced"] for r in log)
    quarantined = sum(r["quarantined"] for r in log)
    duplicates = sum(r["duplicates"] for r in log)
    assert all(r["received"] == r["accepted"] + r["quarantined"] + r["duplicates"] for r in log)
    assert all(r["status"] == "ok" for r in log)
    assert received == EVENTS + len(work.resent)
    assert quarantined == work.quarantined == EVENTS // 50
    assert duplicates + replaced == len(work.resent)
    lake = read_source(ws.lake, "usage_events")
    assert len(lake) == accepted - replaced == len(work.valid)
    assert lake["event_id"].is_unique
    assert sorted(lake["event_id"]) == sorted(r["event_id"] for r in work.valid)
    customers = read_source(ws.lake, "customers")
    assert sorted(customers["customer_id"]) == [c["customer_id"] for c in work.customers]


def test_quarantine_holds_each_broken_record_with_its_reason(streamed: tuple) -> None:
    ws, _, _, work = streamed
    rules = [rule for _, rule in _quarantine(ws)]
    expected = sorted(
        [rule for _, rule in work.faulty]
        + ["undecodable"] * len(work.undecodable)
        + ["unknown_contract_version"] * len(work.wrong_version)
    )
    assert sorted(rules) == expected
    assert len({seq for seq, _ in _quarantine(ws)}) == work.quarantined


def test_a_resent_event_keeps_its_latest_version(streamed: tuple) -> None:
    ws, _, _, work = streamed
    lake = read_source(ws.lake, "usage_events").set_index("event_id")
    resent = {r["event_id"] for r in work.resent}
    others = lake.loc[~lake.index.isin(resent), "ingested_at"]
    # Re-sends were published after every first send, so each lake row of a re-sent key is younger.
    assert lake.loc[sorted(resent), "ingested_at"].min() > others.max()


def test_publishing_the_same_records_again_stores_nothing_new(streamed: tuple) -> None:
    ws, names, url, work = streamed
    before = _lake_bytes(ws.lake)
    publish_again = Workload(customers=work.customers, valid=work.valid[:2_000])
    publish(url, names, publish_again)
    _consume(ws, names, url)
    assert _lake_bytes(ws.lake) == before


def test_replay_into_an_empty_lake_rebuilds_the_same_files(streamed: tuple, tmp_path: Path) -> None:
    ws, names, url, _ = streamed
    contracts = load_source_contracts()
    for contract in contracts.values():
        compact_source(contract, lake_dir=ws.lake, log_db=ws.ingestion_log)
    original = _lake_bytes(ws.lake)
    assert original and all("stream-" not in name for name in original)
    # A second home reading the same stream: nothing of the first home's lake or log is there.
    fresh = Workspace(home=tmp_path / "replayed")
    asyncio.run(
        replay(
            names=names,
            target=stream_target(fresh, stream=names.stream),
            settings=ConsumerSettings(url=url, max_rows=3_000),
            lock=contextlib.nullcontext,
        )
    )
    for contract in contracts.values():
        compact_source(contract, lake_dir=fresh.lake, log_db=fresh.ingestion_log)
    assert _lake_bytes(fresh.lake) == original
    assert _quarantine(fresh) == _quarantine(ws)


def test_compaction_twice_changes_nothing(streamed: tuple) -> None:
    ws, _, _, _ = streamed
    contracts = load_source_contracts()
    for contract in contracts.values():
        compact_source(contract, lake_dir=ws.lake, log_db=ws.ingestion_log)
    before = _lake_bytes(ws.lake)
    done = [compact_source(c, lake_dir=ws.lake, log_db=ws.ingestion_log) for c in contracts.values()]
    assert all(d.files == 0 for d in done)
    assert _lake_bytes(ws.lake) == before
