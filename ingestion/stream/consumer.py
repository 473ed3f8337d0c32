"""The stream consumer: JetStream micro-batches → the lake, acknowledged only once committed.

One loop, one durable pull consumer (`broker.ensure_consumer`):

1. fetch a micro-batch: up to `max_rows` messages, or what arrived within `max_wait` of the
   first one (short fetches, since a fetch on a quiet stream waits out its whole timeout);
2. under the workspace's writer lock (held per micro-batch, so batch `ingest` and `materialize`
   run beside the consumer), append each source's records (`append.append_source`, customers
   first so events can name customers of the same micro-batch);
3. acknowledge the messages, then call the hook with what was committed (the command line
   refreshes the touched customers' features there).

At-least-once delivery plus idempotent writes: a message redelivered after a crash between
commit and acknowledgement is recognised by its sequence (the sequence ranges each source's
micro-batches committed are in the ingestion log, `log.stream_ranges`) and acknowledged without
being written again. A sequence above a committed one is not necessarily committed: the messages
a killed consumer had fetched come back only after the acknowledgement wait, behind newer ones
its successor fetched meanwhile. So a micro-batch is committed per run of consecutive sequences:
a range then holds every record of its source between its ends, and the redelivered records,
outside every range, are written. A micro-batch whose processing raises is retried in place up to
`max_deliver` times; then its records are tried one by one and those that still fail are moved to
the dead-letter subject with the reason in a header, and acknowledged. A record the broker has
already delivered `max_deliver` times (the consumer died on it each time) goes there directly,
as does a record of a source without a contract.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from churnops.contracts.source_contract import SOURCE_NAMES
from churnops.ingestion.broker import (
    CONTRACT_VERSION_HEADER,
    MSG_ID_HEADER,
    BrokerNames,
    connect,
    ensure_consumer,
    ensure_stream,
    stream_retention,
)
from churnops.ingestion.log import stream_ranges
from churnops.ingestion.stream.append import Appended, StreamTarget, append_source, compact_source
from churnops.ingestion.stream.metrics import StreamMetrics
from churnops.ingestion.stream.records import StreamRecord, decode
from churnops.storage.crash import crash_point

DEAD_REASON_HEADER = "Churnops-Dead-Reason"
ORIGINAL_SEQUENCE_HEADER = "Churnops-Original-Sequence"


@dataclass(frozen=True)
class ConsumerSettings:
    """How the consumer batches and retries.

    Attributes:
        max_rows: Most messages in one micro-batch.
        max_wait: Seconds to keep filling a micro-batch after its first message.
        fetch_wait: Seconds one fetch waits on a quiet stream.
        max_deliver: Attempts before a record is moved to the dead-letter subject.
        compact_after: Fold a touched partition once it holds this many stream files (0: never).
        ack_wait: Seconds the broker waits for an acknowledgement before redelivering (applied
            when the durable consumer is created).
        until_idle: Stop once the stream holds nothing unacknowledged for this consumer.
        url: The NATS server(s); None for `broker.nats_url()`.
    """

    max_rows: int = 2_000
    max_wait: float = 0.5
    fetch_wait: float = 0.03
    max_deliver: int = 5
    compact_after: int = 64
    ack_wait: float = 30.0
    until_idle: bool = False
    url: str | None = None


@dataclass
class Committed:
    """What one micro-batch did.

    Attributes:
        appended: One entry per source written.
        skipped: Records inside a committed range of their source (acknowledged only).
        dead: (record, reason) moved to the dead-letter subject.
    """

    appended: list[Appended] = field(default_factory=list)
    skipped: int = 0
    dead: list[tuple[StreamRecord, str]] = field(default_factory=list)

    @property
    def touched(self) -> list[str]:
        """Entity values (customer ids) whose records were accepted, sorted."""
        return sorted({value for a in self.appended for value in a.touched})


def to_record(msg: Msg) -> StreamRecord:
    """What the consumer keeps of a JetStream message."""
    meta = msg.metadata
    headers = msg.headers or {}
    return StreamRecord(
        sequence=int(meta.sequence.stream),
        source=msg.subject.rsplit(".", 1)[-1],
        body=bytes(msg.data),
        stored_at=meta.timestamp.astimezone(UTC),
        version=str(headers.get(CONTRACT_VERSION_HEADER, "")),
        deliveries=int(meta.num_delivered or 1),
    )


def process_records(
    records: Sequence[StreamRecord],
    *,
    target: StreamTarget,
    committed: Mapping[str, Sequence[tuple[int, int]]] | None,
    max_deliver: int,
) -> Committed:
    """Commit one micro-batch: skip what is committed, set aside what cannot go, append the rest.

    With `committed` given (the live consumer), each run of consecutive sequences is appended on
    its own, every source's runs in sequence order, customers first across all runs as within
    one: a gap may be a record delivered before and not committed yet, which a range spanning it
    would later skip.

    Args:
        records: The micro-batch.
        target: Where things go.
        committed: Each source's committed sequence ranges, lowest first (`log.stream_ranges`);
            None: skip nothing and append the micro-batch whole, as a replay, which reads the
            stream in order without gaps, does.
        max_deliver: A record delivered this many times before is moved to dead letters.

    Returns:
        What was done.
    """
    done = Committed()
    fresh = []
    for record in records:
        if committed is not None and _within(committed.get(record.source, ()), record.sequence):
            done.skipped += 1
        elif record.source not in target.contracts:
            done.dead.append((record, f"no source contract named {record.source!r}"))
        elif record.deliveries > max_deliver:
            done.dead.append((record, f"delivered {record.deliveries - 1} times without being committed"))
        else:
            fresh.append(record)
    runs = [
        decode(run, target.contracts) for run in (_runs(records, fresh) if committed is not None else [fresh])
    ]
    present = {source for groups in runs for source in groups}
    for source in dict.fromkeys(s for s in (*SOURCE_NAMES, *sorted(present)) if s in present):
        for groups in runs:
            if source in groups:
                done.appended.append(append_source(groups[source], target.contracts[source], target=target))
    return done


def _within(ranges: Sequence[tuple[int, int]], sequence: int) -> bool:
    """Whether a sequence lies in one of the (disjoint, lowest first) ranges."""
    at = bisect.bisect_right(ranges, sequence, key=lambda r: r[0]) - 1
    return at >= 0 and ranges[at][0] <= sequence <= ranges[at][1]


def _runs(records: Sequence[StreamRecord], fresh: list[StreamRecord]) -> list[list[StreamRecord]]:
    """`fresh` split where the micro-batch's sequences (skipped and dead records too) have a gap."""
    ordered = sorted(r.sequence for r in records)
    breaks = [b for a, b in pairwise(ordered) if b != a + 1]
    runs: list[list[StreamRecord]] = [[] for _ in range(len(breaks) + 1)]
    for record in fresh:
        runs[bisect.bisect_right(breaks, record.sequence)].append(record)
    return [run for run in runs if run]


class StreamConsumer:
    """The consumer loop; `run` until `stop` is set.

    Args:
        names: Where the records live on the broker.
        target: Where they go.
        lock: Enters the workspace's writer lock (held per micro-batch).
        on_commit: Called after each acknowledged micro-batch, outside the lock.
        settings: Batching and retry settings.
        metrics: Where throughput and lag are counted.
    """

    def __init__(
        self,
        *,
        names: BrokerNames,
        target: StreamTarget,
        lock: Callable[[], AbstractContextManager[object]],
        on_commit: Callable[[Committed], None] | None = None,
        settings: ConsumerSettings | None = None,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.names = names
        self.target = target
        self.lock = lock
        self.on_commit = on_commit
        self.settings = settings or ConsumerSettings()
        self.metrics = metrics or StreamMetrics()
        self._nc: Client | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the micro-batch in flight is finished first.

        Args:
            stop: Set (e.g. by a SIGTERM handler) to end the loop.
        """
        nc = self._nc = await connect(self.settings.url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.names, max_age=stream_retention(self.target.contracts))
            await ensure_consumer(
                js,
                self.names,
                ack_wait=timedelta(seconds=self.settings.ack_wait),
                # One delivery more than the consumer's limit: that last one is its dead letter.
                max_deliver=self.settings.max_deliver + 1,
            )
            sub = await js.pull_subscribe_bind(durable=self.names.durable, stream=self.names.stream)
            await asyncio.to_thread(self._recover)
            last_lag = 0.0
            while not stop.is_set():
                msgs = await self._fetch(sub, stop)
                if msgs:
                    await self._handle(js, msgs)
                elif self.settings.until_idle or time.monotonic() - last_lag > 1.0:
                    last_lag = time.monotonic()
                    if await self._idle(sub) and self.settings.until_idle:
                        return
        finally:
            # Not `drain`: draining a pull subscription waits out its timeout, and every
            # acknowledgement was flushed already.
            with contextlib.suppress(Exception):
                await nc.close()

    async def _idle(self, sub: JetStreamContext.PullSubscription) -> bool:
        """Update the lag; whether nothing is pending or awaiting acknowledgement (False if unknown)."""
        try:
            info = await sub.consumer_info()
        except (nats.errors.Error, TimeoutError):
            return False
        self.metrics.lag.set(info.num_pending)
        return info.num_pending == 0 and info.num_ack_pending == 0

    async def _fetch(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> list[Msg]:
        """Up to `max_rows` messages: what arrives within `max_wait` of the first one."""
        got: list[Msg] = []
        deadline: float | None = None
        while len(got) < self.settings.max_rows and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                got += await sub.fetch(self.settings.max_rows - len(got), timeout=self.settings.fetch_wait)
            except TimeoutError:
                if not got:
                    return got
                continue
            except nats.errors.Error:
                # The server is away (restarting, failing over): the client reconnects by itself.
                await asyncio.sleep(0.2)
                return got
            if deadline is None:
                deadline = time.monotonic() + self.settings.max_wait
        return got

    def _recover(self) -> None:
        """Finish or undo a micro-batch a killed consumer left (under the lock, like any writer)."""
        from churnops.ingestion.recovery import recover

        with self.lock():
            recover(
                lake_dir=self.target.lake_dir,
                quarantine_dir=self.target.quarantine_dir,
                log_db=self.target.log_db,
            )

    async def _handle(self, js: JetStreamContext, msgs: list[Msg]) -> None:
        """Commit, move dead letters, acknowledge, count, call the hook."""
        started = time.perf_counter()
        records = [to_record(m) for m in msgs]
        done = await asyncio.to_thread(self._commit_with_retries, records)
        crash_point("stream:before-ack")
        try:
            for record, reason in done.dead:
                await self._dead_letter(js, record, reason)
            half = len(msgs) // 2
            for i, msg in enumerate(msgs, start=1):
                await msg.ack()
                if i == half:
                    await self._nc.flush()
                    crash_point("stream:acked-half")
            await self._nc.flush()
        except (nats.errors.Error, TimeoutError):
            # Committed but not acknowledged: the broker redelivers, and the ranges skip what is committed.
            self.metrics.failures.inc()
        self.metrics.count(done, seconds=time.perf_counter() - started, lag=msgs[-1].metadata.num_pending)
        if self.on_commit is not None and done.appended:
            await asyncio.to_thread(self.on_commit, done)

    def _commit_with_retries(self, records: list[StreamRecord]) -> Committed:
        """Commit the micro-batch; on failure retry, then isolate the records that keep failing."""
        error: Exception | None = None
        for attempt in range(self.settings.max_deliver):
            try:
                return self._commit(records)
            except Exception as exc:  # any failure of our own: retried, then isolated
                error = exc
                time.sleep(min(0.2 * 2**attempt, 2.0))
        done = Committed()
        for record in records:
            try:
                one = self._commit([record])
            except Exception as exc:
                done.dead.append((record, f"processing failed {self.settings.max_deliver} times: {exc}"))
                continue
            done.appended += one.appended
            done.skipped += one.skipped
            done.dead += one.dead
        if error is not None and not done.appended and not done.skipped:
            self.metrics.failures.inc()
        return done

    def _commit(self, records: list[StreamRecord]) -> Committed:
        with self.lock():
            done = process_records(
                records,
                target=self.target,
                committed=stream_ranges(self.target.log_db, since=min(r.sequence for r in records)),
                max_deliver=self.settings.max_deliver,
            )
            if self.settings.compact_after > 0:
                for appended in done.appended:
                    days = sorted({f.parent.name.removeprefix("date=") for f in appended.files})
                    compact_source(
                        self.target.contracts[appended.source],
                        lake_dir=self.target.lake_dir,
                        log_db=self.target.log_db,
                        days=days,
                        min_files=self.settings.compact_after,
                        guard=self.target.guard,
                    )
        return done

    async def _dead_letter(self, js: JetStreamContext, record: StreamRecord, reason: str) -> None:
        """Publish a record to its dead-letter subject (once, by its id) with the reason in a header."""
        headers = {
            MSG_ID_HEADER: f"dead:{record.sequence}",
            DEAD_REASON_HEADER: reason[:1000],
            ORIGINAL_SEQUENCE_HEADER: str(record.sequence),
            CONTRACT_VERSION_HEADER: record.version,
        }
        await js.publish(self.names.dead_subject(record.source), record.body, headers=headers)
        self.metrics.dead.inc()


async def replay(
    *,
    names: BrokerNames,
    target: StreamTarget,
    from_sequence: int | None = None,
    since: datetime | None = None,
    settings: ConsumerSettings | None = None,
    on_commit: Callable[[Committed], None] | None = None,
    lock: Callable[[], AbstractContextManager[object]],
) -> list[Committed]:
    """Rebuild the lake from the broker: every record from a sequence or a time, through the same path.

    An ordered ephemeral consumer reads the stream once, in sequence order, up to what the stream
    held when the replay started; nothing is acknowledged and the durable consumer is untouched.
    Rows the lake holds already are duplicates and write nothing, so a replay into an empty lake
    writes what the first pass wrote.

    Args:
        names: Where the records live.
        target: Where they go.
        from_sequence: Start at this stream sequence (default: the first).
        since: Or start at the first record stored at or after this time.
        settings: Batch size (`max_rows`) and broker address.
        on_commit: Called after each micro-batch.
        lock: Enters the writer lock for each micro-batch.

    Returns:
        One entry per micro-batch.
    """
    settings = settings or ConsumerSettings()
    nc = await connect(settings.url)
    out: list[Committed] = []
    try:
        js = nc.jetstream()
        info = await js.stream_info(names.stream)
        end = int(info.state.last_seq)
        if from_sequence is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_sequence
            )
        elif since is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=_rfc3339(since)
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        config.ack_policy = AckPolicy.NONE
        sub = await js.subscribe(names.events_filter, ordered_consumer=True, config=config)
        try:
            pending = (await sub.consumer_info()).num_pending
            batch: list[StreamRecord] = []
            while pending > 0:
                msg = await sub.next_msg(timeout=30)
                record = to_record(msg)
                pending = msg.metadata.num_pending
                if record.sequence > end:
                    break
                batch.append(record)
                if len(batch) >= settings.max_rows or pending == 0:
                    out.append(
                        _replay_batch(batch, target=target, lock=lock, settings=settings, on_commit=on_commit)
                    )
                    batch = []
            if batch:
                out.append(
                    _replay_batch(batch, target=target, lock=lock, settings=settings, on_commit=on_commit)
                )
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


def _replay_batch(
    batch: list[StreamRecord],
    *,
    target: StreamTarget,
    lock: Callable[[], AbstractContextManager[object]],
    settings: ConsumerSettings,
    on_commit: Callable[[Committed], None] | None,
) -> Committed:
    with lock():
        done = process_records(batch, target=target, committed=None, max_deliver=settings.max_deliver)
    if on_commit is not None and done.appended:
        on_commit(done)
    return done


def _rfc3339(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
