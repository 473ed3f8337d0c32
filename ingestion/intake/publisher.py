"""The intake's one connection to the broker, opened on first use and re-opened when lost.

Nothing is buffered here: a record counts as delivered only when the broker acknowledged it
(stored on disk in the stream), and a broker that cannot take records now is a `BrokerError` at
once — the API turns it into 503 and the producer retries; the retry's duplicates are dropped by
the broker's message ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.broker import (
    BrokerError,
    BrokerNames,
    Published,
    connect,
    ensure_stream,
    publish_rows,
)


class Publisher:
    """Publishes records of any source to one stream.

    Args:
        names: Where the records go.
        url: The broker's address(es); None for `broker.nats_url()`.
        max_age: The stream's retention (`broker.stream_retention` of the contracts).
        connect_timeout_s: Longest wait for a connection before a request is refused.
        ack_timeout_s: Longest wait for the broker's acknowledgement of one record.
    """

    def __init__(
        self,
        *,
        names: BrokerNames,
        url: str | None,
        max_age: timedelta,
        connect_timeout_s: float,
        ack_timeout_s: float,
    ) -> None:
        self.names = names
        self._url = url
        self._max_age = max_age
        self._connect_timeout = connect_timeout_s
        self._ack_timeout = ack_timeout_s
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._client is not None and self._client.is_connected

    async def _context(self) -> JetStreamContext:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A client belongs to the event loop it was opened on (one per server lifespan).
            self._loop, self._lock = loop, asyncio.Lock()
            self._client, self._js, self._stream_ready = None, None, False
        assert self._lock is not None
        async with self._lock:
            if self._client is not None and not self._client.is_connected:
                if self._client.is_reconnecting:
                    raise BrokerError(f"the broker is unreachable (reconnecting to {self._where()})")
                self._client, self._js, self._stream_ready = None, None, False
            if self._client is None:
                self._client = await connect(self._url, timeout=self._connect_timeout)
                self._js = self._client.jetstream()
            assert self._js is not None
            if not self._stream_ready:
                await self._ensure_stream(self._js)
            return self._js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await asyncio.wait_for(
                ensure_stream(js, self.names, max_age=self._max_age), timeout=self._connect_timeout
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(
                f"cannot create or update stream {self.names.stream} on {self._where()} "
                f"({type(exc).__name__}: {exc}); is JetStream enabled (`nats-server -js`)?"
            ) from exc
        self._stream_ready = True

    def _where(self) -> str:
        client = self._client
        url = client.connected_url if client is not None else None
        return url.geturl() if url is not None else (self._url or "the configured NATS server")

    async def open(self) -> None:
        """Connect and make sure the stream exists now rather than on the first delivery.

        Raises:
            BrokerError: The broker is unreachable or refused the stream.
        """
        await self._context()

    async def publish(self, contract: SourceContract, rows: Iterable[Mapping[str, Any]]) -> list[Published]:
        """Publish records and return once the broker acknowledged every one.

        Args:
            contract: The records' source contract.
            rows: The records (checked by `records`).

        Returns:
            One acknowledgement per record, in order.

        Raises:
            BrokerError: No connection, no stream, or an acknowledgement did not come in time.
        """
        js = await self._context()
        try:
            return await publish_rows(js, self.names, contract=contract, rows=rows, timeout=self._ack_timeout)
        except BrokerError:
            self._stream_ready = False  # the stream may have been removed: check it next time
            raise
        except (nats.errors.Error, OSError) as exc:
            raise BrokerError(
                f"the broker at {self._where()} did not take the records ({type(exc).__name__}: {exc})"
            ) from exc

    async def close(self) -> None:
        """Drain and close the connection, if one is open on the running loop."""
        client, self._client, self._js = self._client, None, None
        self._stream_ready = False
        if client is not None and self._loop is asyncio.get_running_loop() and not client.is_closed:
            await client.close()
