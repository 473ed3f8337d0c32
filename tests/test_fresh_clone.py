"""A fresh clone runs the whole pipeline from committed files alone, writing only under its home."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from churnops.settings import HOME_ENV, REPO_ROOT, Workspace


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of churnops to clone")
    target = tmp_path_factory.mktemp("fresh") / "churnops"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(target)], check=True, timeout=120)
    return target


def test_demo_from_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != HOME_ENV}
    # The clone's own code, not the checkout the virtualenv was installed from.
    env["PYTHONPATH"] = str(clone)
    env["COLUMNS"] = "200"
    args = ["demo", "--home", str(home), "--customers", "400", "--days", "100", "--seed", "7"]
    result = subprocess.run(
        [sys.executable, "-m", "churnops.cli", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gate: promoted" in result.stdout

    # Nothing was written into the repository: everything lives under the home.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True, check=True
    )
    leftovers = [line for line in status.stdout.splitlines() if "__pycache__" not in line]
    assert leftovers == []

    ws = Workspace(home)
    for path in (ws.lake / "customers", ws.features, ws.feast / "registry.db", ws.feast / "online.db",
                 ws.mlruns / "mlflow.db", ws.audit_db, ws.ingestion_log):
        assert path.exists(), path

    with sqlite3.connect(ws.mlruns / "mlflow.db") as db:
        aliases = dict(db.execute("SELECT alias, version FROM registered_model_aliases").fetchall())
    assert aliases == {"challenger": 1, "champion": 1}
    with sqlite3.connect(ws.audit_db) as db:
        decisions = db.execute("SELECT decision FROM decisions").fetchall()
    assert decisions == [("promoted",)]
