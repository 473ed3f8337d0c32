"""A small open/closed-loop HTTP/1.1 load generator over loopback (asyncio streams, keep-alive).

A hand-written client instead of httpx: on a 2-core machine the client shares the CPU with the
server, and httpx spends about as much CPU per request as the service does. This one writes a
prepared request and reads `Content-Length` bytes back (tens of microseconds per request), so
the figures measure the server. Every response's status line is checked; anything but 200
counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunResult:
    """One load run.

    Attributes:
        latencies_ms: Per request, from its scheduled start (paced) or its send (closed loop).
        errors: Responses that were not 200, or failed connections.
        elapsed_s: Wall time of the run.
    """

    latencies_ms: np.ndarray
    errors: int
    elapsed_s: float

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (len(self.latencies_ms) - self.errors) / self.elapsed_s

    def percentile(self, q: float) -> float:
        """A latency percentile in milliseconds."""
        return float(np.percentile(self.latencies_ms, q))


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> int:
        """Send a prepared request and read the whole response; return its status."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def _send(conn: Connection, port: int, request: bytes) -> tuple[Connection, int]:
    """Post on `conn`; a broken connection counts as status 0 and is replaced by a new one."""
    try:
        return conn, await conn.post(request)
    except (OSError, asyncio.IncompleteReadError):
        conn.close()
        return await Connection.open(port), 0


def prepare(path: str, payload: dict) -> bytes:
    """A complete POST request with a JSON body.

    Args:
        path: The request path.
        payload: The JSON body.

    Returns:
        The request bytes.
    """
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def closed_loop(
    *, port: int, make_request: Callable[[random.Random], bytes], concurrency: int, requests: int, seed: int
) -> RunResult:
    """`concurrency` clients, each sending its next request as soon as the last one returns.

    Args:
        port: The server's loopback port.
        make_request: Builds a request (random customer ids from the given generator).
        concurrency: Concurrent clients, one connection each.
        requests: Total requests over all clients.
        seed: Seed of the request generator.

    Returns:
        The latencies, errors and wall time.
    """
    rng = random.Random(seed)
    prepared = [make_request(rng) for _ in range(requests)]
    latencies = np.zeros(requests)
    errors = 0
    next_index = 0

    async def client() -> None:
        nonlocal next_index, errors
        conn = await Connection.open(port)
        try:
            while next_index < requests:
                i = next_index
                next_index += 1
                start = time.perf_counter()
                conn, status = await _send(conn, port, prepared[i])
                latencies[i] = (time.perf_counter() - start) * 1e3
                errors += status != 200
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return RunResult(latencies_ms=latencies, errors=errors, elapsed_s=time.perf_counter() - start)


async def paced(
    *,
    port: int,
    make_request: Callable[[random.Random], bytes],
    rate: float,
    requests: int,
    connections: int,
    seed: int,
) -> RunResult:
    """Open loop: request i is due at `i / rate` seconds whatever the server does.

    Latency runs from the due time, not the send time, so a server that falls behind is charged
    for the queueing it causes (no coordinated omission).

    Args:
        port: The server's loopback port.
        make_request: Builds a request.
        rate: Requests per second.
        requests: Total requests.
        connections: Keep-alive connections shared by the requests in flight.
        seed: Seed of the request generator.

    Returns:
        The latencies, errors and wall time.
    """
    rng = random.Random(seed)
    prepared = [make_request(rng) for _ in range(requests)]
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port))
    latencies = np.zeros(requests)
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        conn, status = await _send(await pool.get(), port, prepared[i])
        latencies[i] = (time.perf_counter() - due) * 1e3
        errors += status != 200
        pool.put_nowait(conn)

    tasks = []
    start = time.perf_counter()
    for i in range(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return RunResult(latencies_ms=latencies, errors=errors, elapsed_s=elapsed)
