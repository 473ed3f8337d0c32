"""A running `feast serve` reads what `materialize` loads, and the next refresh without a restart.

Feast's server keeps one SQLite connection open for its lifetime; the bulk load commits in
place (WAL), so the server's next read sees the new refresh whole.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from test_features_lake import CONTRACT, START, random_records, write_lake

from churnops.features.store import FEATURE_REPO

FEAST = Path(sys.executable).parent / "feast"  # the venv's `feast` command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"feast serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"feast serve was not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def _served(port: int, ids: list[str]) -> dict[str, list]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/get-online-features",
        json={"feature_service": f"customer_profile_v{CONTRACT.version}", "entities": {"customer_id": ids}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    names = body["metadata"]["feature_names"]
    return {name: result["values"] for name, result in zip(names, body["results"], strict=True)}


def test_feast_serve_reads_each_refresh_unchanged(tmp_path: Path) -> None:
    from churnops.features.materialize import materialize
    from churnops.features.store import apply, open_store
    from churnops.features.table import read_table

    home = tmp_path / "home"
    write_lake(home / "data" / "lake", random_records(customers=20, days=15, seed=41))
    store = open_store(home=home)
    apply(store)
    paths = {"lake_dir": home / "data" / "lake", "features_dir": home / "data" / "features"}
    first = START + timedelta(days=15, hours=2, minutes=5, seconds=1)
    materialize(store=store, contract=CONTRACT, at=first, **paths)

    port, log = _free_port(), tmp_path / "feast.log"
    env = {**os.environ, "CHURNOPS_HOME": str(home), "FEAST_USAGE": "False"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                FEAST,
                "-c",
                FEATURE_REPO,
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
                "--no-access-log",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/health", process, log)
        for at in (first, first + timedelta(hours=1, minutes=17)):
            if at != first:
                materialize(store=store, contract=CONTRACT, at=at, **paths)
            offline = read_table(features_dir=paths["features_dir"], start=at, end=at)
            ids = offline["customer_id"].tolist()
            served = _served(port, [*ids, "CUST-NOPE"])
            assert served["customer_id"] == [*ids, "CUST-NOPE"]
            assert served["snapshot_ts"][:-1] == [int(at.timestamp())] * len(ids)
            for name in CONTRACT.feature_names:
                assert served[name] == [*offline[name].tolist(), None], (at, name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
