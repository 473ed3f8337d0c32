"""The broker's layout and message ids (`churnops.ingestion.broker`).

The naming and id rules are checked offline; stream creation and de-duplication against the
JetStream server on 127.0.0.1:4222 (or `CHURNOPS_NATS_URL`), skipped saying why when none answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion import broker

CONTRACTS = load_source_contracts()
EVENTS = CONTRACTS["usage_events"]


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (broker.STREAM_ENV, broker.SUBJECT_ROOT_ENV, broker.DURABLE_ENV):
        monkeypatch.delenv(name, raising=False)


def test_names_are_private_to_a_home_and_stable(tmp_path: Path) -> None:
    a = broker.BrokerNames.for_home(tmp_path / "a")
    again = broker.BrokerNames.for_home(tmp_path / "a" / ".." / "a")
    b = broker.BrokerNames.for_home(tmp_path / "b")
    assert a == again
    assert {a.stream, a.subject_root, a.durable}.isdisjoint({b.stream, b.subject_root, b.durable})
    digest = hashlib.sha256(str((tmp_path / "a").resolve()).encode()).hexdigest()[:10]
    assert a.stream == f"churnops_events_{digest}"
    assert a.subject("billing") == f"churnops.h{digest}.events.billing"
    assert a.dead_subject("billing") == f"churnops.h{digest}.dead.billing"
    assert a.source_of(a.subject("support_tickets")) == "support_tickets"


def test_a_shared_cluster_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(broker.STREAM_ENV, "churnops_events")
    monkeypatch.setenv(broker.SUBJECT_ROOT_ENV, "churnops")
    monkeypatch.setenv(broker.DURABLE_ENV, "churnops_lake")
    names = broker.BrokerNames.for_home(tmp_path)
    assert names.subject("usage_events") == "churnops.events.usage_events"
    assert names.events_filter == "churnops.events.>"
    assert (names.stream, names.durable) == ("churnops_events", "churnops_lake")


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "has.dot"), ("durable", "sp ace"), ("subject_root", "wild.*"), ("subject_root", "a..b")],
)
def test_names_that_nats_would_misread_are_refused(field: str, value: str) -> None:
    fields = {"stream": "s", "subject_root": "r", "durable": "d"} | {field: value}
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        broker.BrokerNames(**fields)


def test_retention_is_the_longest_any_contract_keeps() -> None:
    assert broker.stream_retention(CONTRACTS) == max(c.delivery.retention for c in CONTRACTS.values())
    config = broker.stream_config(
        broker.BrokerNames("s", "r", "d"), max_age=timedelta(days=2), duplicate_window=timedelta(minutes=3)
    )
    assert (config.max_age, config.duplicate_window) == (172800.0, 180.0)
    assert config.subjects == ["r.events.>", "r.dead.>"]


def test_message_id_drops_exact_resends_and_keeps_corrections() -> None:
    row = {"event_id": "E-1", "customer_id": "CUST-000001", "sessions": 3}
    body = broker.encode_row(row)
    assert body == broker.encode_row(dict(reversed(list(row.items()))))
    assert json.loads(body) == row
    same = broker.message_id(EVENTS, row, body)
    assert same.startswith("usage_events:E-1:")
    corrected = {**row, "sessions": 4}
    assert broker.message_id(EVENTS, corrected, broker.encode_row(corrected)) != same
    with pytest.raises(ValueError, match="event_id"):
        broker.message_id(EVENTS, {"customer_id": "CUST-000001"}, b"{}")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=1):
            return True
    except OSError:
        return False


def test_stream_creation_is_idempotent_and_resends_are_stored_once(tmp_path: Path) -> None:
    if not _reachable(broker.nats_url()):
        pytest.skip(f"no NATS server answers at {broker.nats_url()}")
    names = broker.BrokerNames.for_home(tmp_path)
    rows = [{"event_id": f"E-{i}", "customer_id": "CUST-000001", "sessions": i} for i in range(3)]

    async def scenario() -> tuple[list[broker.Published], list[broker.Published], int, int]:
        nc = await broker.connect()
        js = nc.jetstream()
        try:
            for _ in range(2):
                await broker.ensure_stream(js, names, max_age=timedelta(days=1))
                await broker.ensure_consumer(js, names)
            first = await broker.publish_rows(js, names, contract=EVENTS, rows=rows)
            again = await broker.publish_rows(js, names, contract=EVENTS, rows=rows)
            info = await js.stream_info(names.stream)
            consumer = await js.consumer_info(names.stream, names.durable)
            return first, again, info.state.messages, consumer.num_pending
        finally:
            await js.delete_stream(names.stream)
            await nc.close()

    first, again, stored, pending = asyncio.run(scenario())
    assert [p.sequence for p in first] == [1, 2, 3]
    assert not any(p.duplicate for p in first)
    assert [(p.sequence, p.duplicate) for p in again] == [(1, True), (2, True), (3, True)]
    assert (stored, pending) == (3, 3)


def test_an_absent_broker_is_named() -> None:
    with pytest.raises(broker.BrokerError, match=re.escape("nats://127.0.0.1:1")):
        asyncio.run(broker.connect("nats://127.0.0.1:1", timeout=1))
