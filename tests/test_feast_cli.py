"""End to end: generate → ingest → build → training set; the `feast` CLI from `feature_repo/`."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from test_features_lake import CONTRACT, oracle
from typer.testing import CliRunner

from churnops.cli import app
from churnops.features.store import FEATURE_REPO, apply, is_applied, open_store
from churnops.features.table import read_latest
from churnops.features.training_set import get_training_set
from churnops.ingestion.ingest import ingest
from churnops.storage.lake import read_source
from churnops.synthetic.generate import generate

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 45
UNTIL = START + timedelta(days=DAYS)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("e2e")
    data = home / "data"
    generate(out_dir=data / "landing", customers=150, days=DAYS, seed=5, start=START, fmt="parquet")
    ingest(
        landing_dir=data / "landing",
        lake_dir=data / "lake",
        quarantine_dir=data / "quarantine",
        log_db=data / "ingestion_log.db",
        backfill=True,
        now=UNTIL + timedelta(days=1),
    )
    result = CliRunner().invoke(app, ["features", "build", "--home", str(home), "--until", UNTIL.isoformat()])
    assert result.exit_code == 0, result.output
    return home


def test_generated_and_ingested_data_gives_the_oracles_training_set(home: Path) -> None:
    lake = home / "data" / "lake"
    frames = {s: read_source(lake, s) for s in ("customers", "usage_events", "support_tickets", "billing")}
    assert len(frames["usage_events"]) > 1000
    frames["customers"] = (
        frames["customers"].sort_values("ingested_at").drop_duplicates("customer_id", keep="last")
    )
    store = open_store(home=home)
    result = CliRunner().invoke(app, ["features", "apply", "--home", str(home)])
    assert result.exit_code == 0, result.output
    ids = frames["customers"]["customer_id"].tolist()
    entities = pd.DataFrame(
        {
            "customer_id": [ids[(i * 7) % len(ids)] for i in range(60)],
            "event_timestamp": [UNTIL - timedelta(days=i % 30, hours=i % 24, minutes=i) for i in range(60)],
        }
    )
    training = get_training_set(store=store, entities=entities)
    assert len(training) == len(entities)
    assert training["customer_id"].tolist() == entities["customer_id"].tolist()
    checked = 0
    for _, row in training.iterrows():
        if row[CONTRACT.entity.join.default_flag]:
            continue
        s = row["event_timestamp"].floor("1D")
        assert row["snapshot_ts"] == s
        for name, value in oracle(frames, row["customer_id"], s.to_pydatetime()).items():
            got = row[name]
            assert math.isclose(got, value, rel_tol=1e-9) if isinstance(value, float) else got == value, name
        checked += 1
    assert checked > 30


# Feast's own command line (the `feast` entry point's click group), four commands in one process
# so the test pays Feast's import once; the working directory is `feature_repo/`, as documented.
_DRIVER = """
import sys
from feast.cli.cli import cli
for args in sys.argv[1:]:
    print("=== feast", args, flush=True)
    cli.main(args.split(), prog_name="feast", standalone_mode=False)
"""


def test_the_feast_cli_applies_plans_and_materializes_from_the_feature_repo(home: Path) -> None:
    env = {**os.environ, "CHURNOPS_HOME": str(home), "FEAST_USAGE": "False"}
    commands = [
        "apply",
        "plan",
        f"materialize {(UNTIL - timedelta(days=2)).isoformat()} {UNTIL.isoformat()}",
        f"materialize-incremental {(UNTIL + timedelta(hours=12)).isoformat()}",
    ]
    run = subprocess.run(
        [sys.executable, "-c", _DRIVER, *commands],
        cwd=FEATURE_REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("=== feast") == len(commands)
    assert "Created feature view customer_profile_30d" in run.stdout or "No changes" in run.stdout

    from churnops.features.online import read_online

    latest = read_latest(features_dir=home / "data" / "features")
    # Customers who churned before UNTIL have no snapshot in the materialized interval.
    latest = latest[latest["snapshot_ts"] == UNTIL].reset_index(drop=True)
    assert len(latest) > 0
    online = read_online(store=open_store(home=home), customer_ids=latest["customer_id"].tolist())
    assert (online["snapshot_ts"] == UNTIL).all()
    for name in CONTRACT.feature_names:
        assert online[name].tolist() == latest[name].tolist(), name


def _feast(*commands: str, repo: Path, home: Path) -> str:
    """`feast` commands in a process of their own (as a user runs them), from `repo`; the stdout."""
    run = subprocess.run(
        [sys.executable, "-c", _DRIVER, *commands],
        cwd=repo,
        env={**os.environ, "CHURNOPS_HOME": str(home), "FEAST_USAGE": "False"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_feast_plan_after_apply_and_materialize_reports_no_changes_until_a_definition_changes(
    home: Path, tmp_path: Path
) -> None:
    # A fresh registry over the module's feature table, and a copy of feature_repo/ to edit.
    fresh = tmp_path / "home"
    (fresh / "data").mkdir(parents=True)
    (fresh / "data" / "features").symlink_to(home / "data" / "features")
    repo = tmp_path / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    window = f"{(UNTIL - timedelta(days=1)).isoformat()} {UNTIL.isoformat()}"

    applied = _feast("apply", f"materialize {window}", repo=repo, home=fresh)
    assert "Created feature view customer_profile_30d" in applied

    planned = _feast("plan", repo=repo, home=fresh)
    assert "No changes to registry" in planned, planned
    assert "Updated" not in planned

    # A real change still shows, and only that change.
    with (repo / "features.py").open("a") as f:
        f.write('\ncustomer_profile_30d.description = "Edited in a pull request."\n')
    changed = _feast("plan", repo=repo, home=fresh)
    assert "Updated feature view customer_profile_30d" in changed
    assert "\tdescription:" in changed
    assert "batch_source" not in changed


def test_the_feast_ui_app_starts_and_lists_the_project(home: Path) -> None:
    from fastapi.testclient import TestClient
    from feast.ui_server import get_app

    store = open_store(home=home)
    if not is_applied(store):
        apply(store)
    with TestClient(get_app(store, store.project)) as client:
        projects = client.get("/projects-list.json")
        page = client.get("/")
    assert projects.status_code == 200
    assert [p["id"] for p in projects.json()["projects"]] == [store.project]
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_feast_plan_after_churnops_features_apply_reports_no_changes(home: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "home"
    (fresh / "data").mkdir(parents=True)
    (fresh / "data" / "features").symlink_to(home / "data" / "features")
    result = CliRunner().invoke(app, ["features", "apply", "--home", str(fresh)])
    assert result.exit_code == 0, result.output
    planned = _feast("plan", repo=FEATURE_REPO, home=fresh)
    assert "No changes to registry" in planned, planned
    assert "No changes to infrastructure" in planned, planned
