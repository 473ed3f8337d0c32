"""The stream's online refresh: a streamed event changes the served features, offline and online alike."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pandas as pd
from nats_support import delete_stream, jetstream_url
from stream_events import make_workload, publish

from churnops.features.online import read_online
from churnops.features.table import SNAPSHOT_TS, read_latest
from churnops.ingestion.broker import BrokerNames
from churnops.ingestion.stream.consumer import ConsumerSettings, StreamConsumer
from churnops.settings import Workspace
from churnops.streaming import OnlineRefresh, stream_target


def test_streamed_events_reach_the_online_store_with_offline_parity(tmp_path: Path) -> None:
    from churnops.features.store import apply, open_store

    ws = Workspace(home=tmp_path / "home")
    apply(open_store(home=ws.home))
    names = BrokerNames.for_home(ws.home)
    work = make_workload(customers=12, events=600, fault_every=10**9, resend_every=10**9)
    hook = OnlineRefresh(ws=ws, lock=contextlib.nullcontext)
    with jetstream_url(tmp_path) as url:
        try:
            publish(url, names, work)
            consumer = StreamConsumer(
                names=names,
                target=stream_target(ws, stream=names.stream),
                lock=contextlib.nullcontext,
                on_commit=hook,
                settings=ConsumerSettings(url=url, until_idle=True, max_rows=150, ack_wait=60),
            )
            asyncio.run(asyncio.wait_for(consumer.run(asyncio.Event()), timeout=300))
        finally:
            delete_stream(url, names.stream)
    ids = [c["customer_id"] for c in work.customers]
    online = read_online(store=hook.store, customer_ids=ids).set_index("customer_id")
    events = Counter(r["customer_id"] for r in work.valid)
    logins = Counter(r["customer_id"] for r in work.valid if r["event_type"] == "login")
    assert online["events_30d"].astype(int).to_dict() == {c: events[c] for c in ids}
    assert online["sessions_30d"].astype(int).to_dict() == {c: logins[c] for c in ids}
    offline = read_latest(features_dir=ws.features).set_index("customer_id").loc[ids]
    assert (offline[SNAPSHOT_TS] == pd.to_datetime(online[SNAPSHOT_TS], utc=True)).all()
    for name in ("events_30d", "sessions_30d", "watch_minutes_30d", "quiz_avg_score_30d"):
        assert offline[name].astype(float).tolist() == online[name].astype(float).tolist(), name
