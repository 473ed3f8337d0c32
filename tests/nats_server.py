"""A NATS JetStream server for the tests: the one already running, or a private one started here.

Use it by importing the fixture into a test module (`from nats_server import nats_url`). The
fixture answers the broker's URL and sets `CHURNOPS_NATS_URL` for the session. When nothing
answers at `CHURNOPS_NATS_URL` (default 127.0.0.1:4222), it starts `nats-server -js` on a free
port with its store in a temporary folder, and stops it at the end; without a `nats-server`
binary the tests that need the broker are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

URL_ENV = "CHURNOPS_NATS_URL"
DEFAULT_URL = "nats://127.0.0.1:4222"
START_TIMEOUT_S = 30


def _answers(url: str, timeout: float = 1.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if binary is None:
        pytest.skip(
            f"no NATS server answers at {os.environ.get(URL_ENV) or DEFAULT_URL} and no nats-server binary"
        )
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(url, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.skip(f"nats-server -js did not start on port {port} within {START_TIMEOUT_S} s")
        time.sleep(0.05)
    return process, url


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a NATS server with JetStream, exported as `CHURNOPS_NATS_URL` for the session."""
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    process = None
    if not _answers(url):
        process, url = _start(tmp_path_factory.mktemp("nats"))
    previous = os.environ.get(URL_ENV)
    os.environ[URL_ENV] = url
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop(URL_ENV, None)
        else:
            os.environ[URL_ENV] = previous
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
