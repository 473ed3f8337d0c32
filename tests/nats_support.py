"""A JetStream server for the streaming tests: the machine's own on 127.0.0.1:4222, or one started here."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DEFAULT_PORT = 4222


def answers(port: int, *, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on the port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def nats_server(port: int, store_dir: Path) -> Iterator[subprocess.Popen]:
    """Run `nats-server -js` on a port with its own store folder; skip when it is not installed."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        pytest.skip("no NATS server answers on 127.0.0.1:4222 and nats-server is not installed")
    proc = start_server(binary, port, store_dir)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def start_server(binary: str, port: int, store_dir: Path) -> subprocess.Popen:
    """Start a JetStream server and wait (up to 30 s) until it accepts connections."""
    store_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"nats-server did not start on port {port} (exit {proc.poll()})")
        time.sleep(0.1)
    return proc


@contextmanager
def jetstream_url(tmp: Path) -> Iterator[str]:
    """The machine's JetStream when it answers, else a private one for the block."""
    if answers(DEFAULT_PORT):
        yield f"nats://127.0.0.1:{DEFAULT_PORT}"
        return
    port = free_port()
    with nats_server(port, tmp / "nats-store"):
        yield f"nats://127.0.0.1:{port}"


def delete_stream(url: str, stream: str) -> None:
    """Remove a test's stream (and its consumers) from the server; quiet when it is gone."""

    async def run() -> None:
        from churnops.ingestion.broker import connect

        nc = await connect(url)
        try:
            # Teardown: the stream may be gone already.
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(run())
