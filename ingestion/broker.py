"""The event broker: one NATS JetStream stream that carries every source's records to the lake.

Layout, created idempotently by `ensure_stream` / `ensure_consumer`:

- one stream with file storage, holding `<root>.events.<source>` (records) and
  `<root>.dead.<source>` (records the consumer gave up on after `max_deliver` attempts);
- a duplicate window: a record re-published with the same `Nats-Msg-Id` inside it is stored once;
- a retention (`max_age`) equal to the longest `delivery.retention` of the source contracts, so
  the broker can replay anything the lake may still hold;
- one durable pull consumer over `<root>.events.>` with explicit acks.

By default the names carry a digest of the home's resolved path, so two homes on one broker never
read each other's records; a shared production cluster names them explicitly (`BrokerNames.named`).

One message is one record: the body is the row as JSON, the headers name the contract version the
sender validated against and the message id. The id is the source, the record's primary key and a
digest of the row, so an exact re-send is dropped by the broker while a corrected record (same key,
other values) passes to the lake, where the contract's dedup rule decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from churnops.contracts.source_contract import SourceContract

log = logging.getLogger(__name__)

NATS_URL_ENV = "CHURNOPS_NATS_URL"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# Overrides for a shared cluster, where operators choose the names (e.g. `churnops_events`,
# `churnops`, `churnops_lake`) instead of the per-home defaults.
STREAM_ENV = "CHURNOPS_STREAM"
SUBJECT_ROOT_ENV = "CHURNOPS_SUBJECT_ROOT"
DURABLE_ENV = "CHURNOPS_STREAM_CONSUMER"

CONTRACT_VERSION_HEADER = "Churnops-Contract-Version"
MSG_ID_HEADER = "Nats-Msg-Id"

DEFAULT_DUPLICATE_WINDOW = timedelta(minutes=10)
DEFAULT_ACK_WAIT = timedelta(seconds=30)
DEFAULT_MAX_DELIVER = 5

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT_ROOT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class BrokerError(RuntimeError):
    """The broker refused, or is unreachable; says which server and what to check."""


@dataclass(frozen=True)
class BrokerNames:
    """Where one home's records live on the broker.

    Attributes:
        stream: The JetStream stream's name.
        subject_root: The dot-separated prefix of every subject.
        durable: The durable pull consumer that feeds the lake.
    """

    stream: str
    subject_root: str
    durable: str

    def __post_init__(self) -> None:
        for label, value in (("stream", self.stream), ("consumer", self.durable)):
            if not _NAME.match(value):
                raise ValueError(f"broker {label} name {value!r} may hold only letters, digits, '_' and '-'")
        if not _SUBJECT_ROOT.match(self.subject_root):
            raise ValueError(
                f"subject root {self.subject_root!r} must be dot-separated tokens of letters, "
                "digits, '_' and '-' (no wildcards)"
            )

    @classmethod
    def for_home(cls, home: Path) -> BrokerNames:
        """Names private to one home, unless the environment names them.

        Args:
            home: The workspace's home folder.

        Returns:
            The names; each of `CHURNOPS_STREAM`, `CHURNOPS_SUBJECT_ROOT` and
            `CHURNOPS_STREAM_CONSUMER` overrides its default when set.
        """
        digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:10]
        return cls(
            stream=os.environ.get(STREAM_ENV) or f"churnops_events_{digest}",
            subject_root=os.environ.get(SUBJECT_ROOT_ENV) or f"churnops.h{digest}",
            durable=os.environ.get(DURABLE_ENV) or f"churnops_lake_{digest}",
        )

    def subject(self, source: str) -> str:
        """The subject a source's records are published on."""
        return f"{self.subject_root}.events.{source}"

    def dead_subject(self, source: str) -> str:
        """The subject a source's undeliverable records are moved to."""
        return f"{self.subject_root}.dead.{source}"

    @property
    def events_filter(self) -> str:
        """The consumer's filter: every source's records, no dead letters."""
        return f"{self.subject_root}.events.>"

    def source_of(self, subject: str) -> str:
        """The source a subject belongs to (its last token)."""
        return subject.rsplit(".", 1)[-1]


def nats_url() -> str:
    """The broker's address: `CHURNOPS_NATS_URL`, else the local default."""
    return os.environ.get(NATS_URL_ENV) or DEFAULT_NATS_URL


async def _log_error(exc: Exception) -> None:
    # nats-py's default prints a traceback for every failed (re)connection attempt.
    log.warning("NATS: %s", " ".join(str(exc).split()) or type(exc).__name__)


async def connect(url: str | None = None, *, timeout: float = 5.0) -> Client:
    """Connect to NATS, failing fast with the address when nothing answers.

    Args:
        url: The server(s), comma-separated; default `nats_url()`.
        timeout: Seconds to wait for the first connection.

    Returns:
        A connected client.

    Raises:
        BrokerError: No server answered.
    """
    servers = [s.strip() for s in (url or nats_url()).split(",") if s.strip()]
    try:
        # With unlimited reconnects nats-py retries the first connection forever too: the
        # deadline is what makes an absent server an error instead of a hang.
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                connect_timeout=timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_log_error,
            ),
            timeout=timeout,
        )
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        raise BrokerError(
            f"no NATS server answered at {', '.join(servers)}: start one with JetStream "
            f"(`nats-server -js`) or set {NATS_URL_ENV}"
        ) from exc


def stream_retention(contracts: Mapping[str, SourceContract]) -> timedelta:
    """The broker's retention: the longest any source contract keeps its records."""
    return max(c.delivery.retention for c in contracts.values())


def stream_config(
    names: BrokerNames,
    *,
    max_age: timedelta,
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW,
) -> StreamConfig:
    """The stream's configuration (file storage, dedup window, retention)."""
    return StreamConfig(
        name=names.stream,
        subjects=[f"{names.subject_root}.events.>", f"{names.subject_root}.dead.>"],
        storage=StorageType.FILE,
        max_age=max_age.total_seconds(),
        duplicate_window=duplicate_window.total_seconds(),
    )


async def ensure_stream(
    js: JetStreamContext,
    names: BrokerNames,
    *,
    max_age: timedelta,
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW,
) -> None:
    """Create the stream, or bring an existing one to the configuration; safe to repeat.

    Args:
        js: A JetStream context.
        names: Where the records live.
        max_age: How long the broker keeps a record (`stream_retention`).
        duplicate_window: How long a message id is remembered for de-duplication.
    """
    config = stream_config(names, max_age=max_age, duplicate_window=duplicate_window)
    try:
        await js.stream_info(names.stream)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


def consumer_config(
    names: BrokerNames,
    *,
    ack_wait: timedelta = DEFAULT_ACK_WAIT,
    max_deliver: int = DEFAULT_MAX_DELIVER,
) -> ConsumerConfig:
    """The durable pull consumer's configuration (explicit acks, bounded redelivery)."""
    return ConsumerConfig(
        durable_name=names.durable,
        filter_subject=names.events_filter,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait.total_seconds(),
        max_deliver=max_deliver,
    )


async def ensure_consumer(
    js: JetStreamContext,
    names: BrokerNames,
    *,
    ack_wait: timedelta = DEFAULT_ACK_WAIT,
    max_deliver: int = DEFAULT_MAX_DELIVER,
) -> None:
    """Create the durable consumer if it is missing; safe to repeat."""
    try:
        await js.consumer_info(names.stream, names.durable)
    except NotFoundError:
        await js.add_consumer(
            names.stream, consumer_config(names, ack_wait=ack_wait, max_deliver=max_deliver)
        )


def message_id(contract: SourceContract, row: Mapping[str, Any], body: bytes) -> str:
    """The broker's de-duplication id of one record.

    Args:
        contract: The record's source contract (its name and primary key).
        row: The record.
        body: The record's encoded body.

    Returns:
        `<source>:<primary key values>:<digest of the body>`.

    Raises:
        ValueError: A primary-key column is missing from the row.
    """
    missing = [c for c in contract.primary_key if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"record has no value for primary key column(s) {', '.join(missing)}")
    key = "|".join(str(row[c]) for c in contract.primary_key)
    return f"{contract.name}:{key}:{hashlib.sha256(body).hexdigest()[:16]}"


def encode_row(row: Mapping[str, Any]) -> bytes:
    """A record's message body: canonical JSON, so equal rows give equal bytes."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class Published:
    """What the broker acknowledged for one record.

    Attributes:
        sequence: The stream sequence the record is stored at.
        duplicate: Whether the broker had it already (inside its duplicate window).
    """

    sequence: int
    duplicate: bool


async def publish_rows(
    js: JetStreamContext,
    names: BrokerNames,
    *,
    contract: SourceContract,
    rows: Iterable[Mapping[str, Any]],
    timeout: float = 10.0,
) -> list[Published]:
    """Publish records and wait until the broker acknowledged every one.

    Args:
        js: A JetStream context.
        names: Where the records go.
        contract: The source contract the records claim to follow.
        rows: The records (JSON-compatible mappings).
        timeout: Seconds to wait for the acknowledgements of all the records.

    Returns:
        One acknowledgement per record, in order.

    Raises:
        ValueError: A record lacks its primary key.
        BrokerError: The broker did not acknowledge in time.
    """
    subject = names.subject(contract.name)
    version = str(contract.version)
    # Every message is built first, so a record without its key stops the batch before any is sent.
    messages = []
    for row in rows:
        body = encode_row(row)
        headers = {MSG_ID_HEADER: message_id(contract, row, body), CONTRACT_VERSION_HEADER: version}
        messages.append((body, headers))
    # Asynchronous publishes share one reply subscription: about twice the rate of one request
    # per record (`bench/results/intake.md`); every acknowledgement is still awaited.
    futures: list[asyncio.Future[PubAck]] = []
    try:
        for body, headers in messages:
            futures.append(await js.publish_async(subject, body, headers=headers))
        acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout)
    except (TimeoutError, nats.errors.Error) as exc:
        for future in futures:
            future.cancel()  # frees its slot among the client's in-flight publishes
        raise BrokerError(
            f"the broker did not acknowledge records on {subject} ({type(exc).__name__}): is the "
            f"stream {names.stream} there and JetStream enabled?"
        ) from exc
    return [Published(sequence=ack.seq, duplicate=bool(ack.duplicate)) for ack in acks]
