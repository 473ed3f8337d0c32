"""Promotion and rollback survive kill -9 at every step: audit, history and alias agree after a restart.

One world for the module: a real MLflow store with three small sklearn models registered as versions
1 (fair), 2 (strong) and 3 (weak) of `churn-model`; versions 1 and 2 were promoted by `churnops promote`,
so `champion` is 2, the history [1, 2] and 3 the challenger. Each crash case copies the whole home
(the MLflow SQLite store included, its absolute artifact paths rewritten), runs `churnops promote
--force` (3 is worse than 2: only a forced promotion moves it) or `churnops rollback` in a child
process that `$CHURNOPS_CRASH_AT` kills with SIGKILL at one step, then restarts as an operator would.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlite_utils
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from test_gate_promotion import MODELS, labelled
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.monitoring.audit import (
    ABANDONED,
    DONE,
    PENDING,
    AuditRecord,
    as_record,
    begin_decision,
    finish_decision,
    list_decisions,
    pending_decisions,
)
from churnops.monitoring.gate import (
    MOVES_CHAMPION,
    GateCheck,
    GateError,
    Versions,
    decide,
    promotion_record,
    recorded_decision,
)
from churnops.monitoring.registry import champion_history, champion_version, mark_done, rollback
from churnops.settings import Workspace
from churnops.storage.crash import CRASH_ENV
from churnops.training.names import CHALLENGER, REGISTERED_MODEL

runner = CliRunner()
MODEL = REGISTERED_MODEL
REASON = "CAB-7: hotfix approved despite the model check"
PROMOTE_POINTS = ["promote.pending", "promote.report", "promote.history", "promote.alias", "promote.result"]
# From these on, the alias has moved: the promotion happened and is completed on restart.
ALIAS_MOVED = {"promote.alias", "promote.result"}
ROLLBACK_POINTS = ["rollback.pending", "rollback.history", "rollback.alias"]


@dataclass(frozen=True)
class World:
    home: Path
    current: pd.DataFrame


def client_for(home: Path):
    from mlflow import MlflowClient

    uri = Workspace(home).tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(client, run_id: str, uri: str) -> str:
    version = client.create_model_version(MODEL, uri, run_id)
    client.set_registered_model_alias(MODEL, CHALLENGER, version.version)
    return str(version.version)


def current_file(world: World, folder: Path) -> Path:
    """The current features, fresh as of now (the feature table's freshness is checked)."""
    path = folder / "current.parquet"
    world.current.assign(snapshot_ts=datetime.now(UTC) - timedelta(minutes=30)).to_parquet(path)
    return path


def promote_args(world: World, home: Path) -> list[str]:
    current = str(current_file(world, home))
    return ["promote", "--home", str(home), "--current", current, "--force", "--reason", REASON]


def invoke(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    import mlflow

    home = tmp_path_factory.mktemp("crash_world")
    ws = Workspace(home)
    ws.mlruns.mkdir(parents=True)
    client = client_for(home)
    experiment = client.create_experiment("churn", artifact_location=ws.artifacts.as_uri())
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.tracking_uri)
    train, test = labelled(3000, seed=11), labelled(1500, seed=12)
    datasets = home / "datasets"
    datasets.mkdir()
    train.to_parquet(datasets / "train.parquet", index=False)
    test.to_parquet(datasets / "test.parquet", index=False)
    features = load_feature_contract().feature_names
    client.create_registered_model(MODEL)
    logged = {}
    for name in ("fair", "strong", "weak"):
        model = Pipeline(
            [
                ("select", ColumnTransformer([("num", "passthrough", MODELS[name])])),
                ("clf", LogisticRegression(max_iter=500)),
            ]
        ).fit(train[features], train["label"])
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
            mlflow.log_artifacts(str(datasets), artifact_path="datasets")
        logged[name] = (run.info.run_id, info.model_uri)
    current = test.drop(columns=["label", "event_timestamp", "profile_defaulted"]).assign(
        customer_id=[f"CUST-{i:06d}" for i in range(len(test))]
    )
    world = World(home=home, current=current)
    for name in ("fair", "strong"):
        register(client, *logged[name])
        args = ["promote", "--home", str(home), "--current", str(current_file(world, home))]
        assert "promoted" in invoke(args).output
    assert register(client, *logged["weak"]) == "3"
    assert (champion_version(client=client, model=MODEL), champion_history(client=client, model=MODEL)) == (
        "2",
        ["1", "2"],
    )
    return world


def copy_home(source: Path, target: Path) -> Path:
    """A private copy of a home; MLflow keeps absolute artifact paths, so they are moved along."""
    from mlflow.tracking._tracking_service import utils

    # MLflow caches artifact repositories by run id for the whole process, and copies share run ids.
    utils._artifact_repos_cache.clear()
    shutil.copytree(source, target)
    db = Workspace(target).tracking_db
    assert db is not None
    con = sqlite3.connect(db)
    with con:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    con.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                        [f"{source}/", f"{target}/"],
                    )
    con.close()
    return target


def crash(runs: dict[str, list[str]]) -> None:
    """Run churnops commands in child processes (at once), each killed at its point; each must die there.

    Args:
        runs: The crash point of each run, and the command line to run.
    """
    children = {
        point: subprocess.Popen(
            [sys.executable, "-m", "churnops.cli", *args],
            env={**os.environ, CRASH_ENV: point, "CHURNOPS_USER": "ana"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for point, args in runs.items()
    }
    for point, child in children.items():
        _, err = child.communicate(timeout=1800)
        assert child.returncode == -signal.SIGKILL, f"exit {child.returncode}, not killed at {point}:\n{err}"


def replayed(rows: list[dict]) -> list[str]:
    """The champion history the audit's done rows say there must be, oldest first."""
    history: list[str] = []
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["state"] != DONE or row["model"] != MODEL:
            continue
        if row["action"] == "promote" and row["decision"] in MOVES_CHAMPION:
            assert row["champion_before"] == (history[-1] if history else None), row
            history.append(row["champion_after"])
        elif row["action"] == "rollback":
            assert history[-2:] == [row["champion_after"], row["champion_before"]], row
            history.pop()
    return history


def assert_consistent(home: Path) -> list[dict]:
    """Nothing pending; the done rows replay to exactly the history tag, and its last entry is the alias."""
    rows = list_decisions(db_path=Workspace(home).audit_db)
    client = client_for(home)
    history = champion_history(client=client, model=MODEL)
    assert [r["id"] for r in rows if r["state"] == PENDING] == []
    assert replayed(rows) == history
    assert champion_version(client=client, model=MODEL) == history[-1]
    for row in rows:
        if row["decision"] == "forced":
            assert row["reason"] == REASON and row["user"] == "ana", row
    return rows


# ---------------------------------------------------------------- promote, killed at every step


@pytest.fixture(scope="module")
def crashed_promotions(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One home per step, in which `churnops promote --force` was killed right after that step."""
    homes = {
        point: copy_home(world.home, tmp_path_factory.mktemp("crashed") / "home") for point in PROMOTE_POINTS
    }
    crash({point: promote_args(world, home) for point, home in homes.items()})
    return homes


@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_killed_promotion_left_a_pending_row_with_its_reason_before_anything_moved(
    crashed_promotions: dict[str, Path], point: str
) -> None:
    home = crashed_promotions[point]
    client = client_for(home)
    (row,) = pending_decisions(db_path=Workspace(home).audit_db)
    assert (row["action"], row["decision"], row["reason"], row["user"]) == (
        "promote",
        "forced",
        REASON,
        "ana",
    )
    assert (row["champion_before"], row["champion_after"], row["challenger_version"]) == ("2", "3", "3")
    assert {c["check_name"]: bool(c["passed"]) for c in row["checks"]}["model"] is False
    assert champion_version(client=client, model=MODEL) == ("3" if point in ALIAS_MOVED else "2")
    history_moved = point in ALIAS_MOVED or point == "promote.history"
    assert champion_history(client=client, model=MODEL) == (["1", "2", "3"] if history_moved else ["1", "2"])
    with pytest.raises(GateError, match="pending"):
        rollback(
            client=client, audit_db=Workspace(home).audit_db, user="bo", now=datetime.now(UTC), model=MODEL
        )


@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_rollback_after_a_killed_promotion_reconciles_then_moves_back(
    crashed_promotions: dict[str, Path], point: str, tmp_path: Path
) -> None:
    home = copy_home(crashed_promotions[point], tmp_path / "home")
    moved = point in ALIAS_MOVED
    result = invoke(["rollback", "--home", str(home), "--reason", "pager"])
    state = "completed after interruption" if moved else "abandoned after interruption"
    assert "recovered:" in result.stderr and state in result.stderr
    assert ("v3 → v2" if moved else "v2 → v1") in result.stdout

    client = client_for(home)
    rows = assert_consistent(home)
    assert champion_version(client=client, model=MODEL) == ("2" if moved else "1")
    forced = next(r for r in rows if r["decision"] == "forced")
    assert forced["state"] == (DONE if moved else ABANDONED) and state in forced["resolution"]
    latest = rows[0]
    assert (latest["action"], latest["state"], latest["reason"]) == ("rollback", DONE, "pager")
    if moved:  # the gate result is logged on completion, and says so
        run_id = client.get_model_version(MODEL, "3").run_id
        files = {a.path for a in client.list_artifacts(run_id, "gate")}
        assert {"gate/drift.html", "gate/drift.json", "gate/gate_result.json"} <= files
        logged = json.loads(
            Path(client.download_artifacts(run_id, "gate/gate_result.json", str(tmp_path))).read_text()
        )
        assert (logged["decision"], logged["reason"], logged["user"]) == ("forced", REASON, "ana")
        assert logged["resolution"].startswith("completed after interruption")


@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_promote_again_after_a_killed_promotion_finishes_the_job_once(
    world: World, crashed_promotions: dict[str, Path], point: str, tmp_path: Path
) -> None:
    home = copy_home(crashed_promotions[point], tmp_path / "home")
    result = runner.invoke(app, promote_args(world, home), env={"CHURNOPS_USER": "ana"})
    assert result.exit_code == 0, result.output
    moved = point in ALIAS_MOVED
    assert ("unchanged" if moved else "forced") in result.stdout
    rows = assert_consistent(home)
    assert champion_history(client=client_for(home), model=MODEL) == ["1", "2", "3"]
    applied = [r for r in rows if r["decision"] == "forced" and r["state"] == DONE]
    assert len(applied) == 1  # the move to 3 is audited once, with its reason

    invoke(["rollback", "--home", str(home)])
    assert_consistent(home)
    assert champion_version(client=client_for(home), model=MODEL) == "2"


def test_audit_reconciles_and_a_crash_while_reconciling_is_reconciled_next_time(
    crashed_promotions: dict[str, Path], tmp_path: Path
) -> None:
    home = copy_home(crashed_promotions["promote.alias"], tmp_path / "home")
    crash({"reconcile.history": ["audit", "--home", str(home)]})
    assert len(pending_decisions(db_path=Workspace(home).audit_db)) == 1

    listed = invoke(["audit", "--home", str(home)])
    assert "recovered:" in listed.stderr and "completed after interruption" in listed.stderr
    rows = assert_consistent(home)
    assert rows[0]["state"] == DONE and rows[0]["resolution"].startswith("completed after interruption")
    assert champion_version(client=client_for(home), model=MODEL) == "3"
    again = invoke(["audit", "--home", str(home)])
    assert "recovered" not in again.stderr


# ---------------------------------------------------------------- rollback, killed at every step


@pytest.fixture(scope="module")
def promoted_world(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world after `churnops promote --force` of version 3: champion 3, history [1, 2, 3]."""
    home = copy_home(world.home, tmp_path_factory.mktemp("promoted") / "home")
    result = runner.invoke(app, promote_args(world, home), env={"CHURNOPS_USER": "ana"})
    assert result.exit_code == 0, result.output
    assert champion_history(client=client_for(home), model=MODEL) == ["1", "2", "3"]
    return home


@pytest.fixture(scope="module")
def crashed_rollbacks(promoted_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One home per step, in which `churnops rollback` (3 → 2) was killed right after that step."""
    homes = {
        point: copy_home(promoted_world, tmp_path_factory.mktemp("crashed") / "home")
        for point in ROLLBACK_POINTS
    }
    crash({point: ["rollback", "--home", str(home), "--reason", "latency"] for point, home in homes.items()})
    return homes


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_killed_rollback_is_reconciled_and_the_next_rollback_goes_one_further(
    crashed_rollbacks: dict[str, Path], point: str
) -> None:
    home = crashed_rollbacks[point]
    client = client_for(home)
    (row,) = pending_decisions(db_path=Workspace(home).audit_db)
    assert (row["action"], row["champion_before"], row["champion_after"], row["reason"]) == (
        "rollback",
        "3",
        "2",
        "latency",
    )
    moved = point == "rollback.alias"
    assert champion_version(client=client, model=MODEL) == ("2" if moved else "3")

    result = invoke(["rollback", "--home", str(home)])
    assert ("completed" if moved else "abandoned") + " after interruption" in result.stderr
    assert ("v2 → v1" if moved else "v3 → v2") in result.stdout
    rows = assert_consistent(home)
    assert [r["state"] for r in rows if r["action"] == "rollback"] == [DONE, DONE if moved else ABANDONED]
    assert champion_version(client=client, model=MODEL) == ("1" if moved else "2")


# ---------------------------------------------------------------- the audit table's migration


OLD_DECISIONS = """
CREATE TABLE [decisions] (
   [id] INTEGER PRIMARY KEY, [time] TEXT, [user] TEXT, [action] TEXT, [model] TEXT,
   [challenger_version] TEXT, [champion_before] TEXT, [champion_after] TEXT, [decision] TEXT, [reason] TEXT
)"""
OLD_CHECKS = """
CREATE TABLE [decision_checks] (
   [id] INTEGER PRIMARY KEY, [decision_id] INTEGER REFERENCES [decisions]([id]), [check_name] TEXT,
   [passed] INTEGER, [figure] FLOAT, [threshold] FLOAT, [detail] TEXT
)"""


ROLLBACK_2_TO_1 = AuditRecord(
    time=datetime(2026, 11, 2, tzinfo=UTC),
    user="bo",
    action="rollback",
    model="churn-model",
    challenger_version=None,
    champion_before="2",
    champion_after="1",
    decision="rolled_back",
    reason=None,
)


def test_an_audit_database_from_before_the_state_column_is_migrated_in_place(tmp_path: Path) -> None:
    db_path = tmp_path / "audit.db"
    con = sqlite3.connect(db_path)
    with con:
        con.execute(OLD_DECISIONS)
        con.execute(OLD_CHECKS)
        con.execute(
            "INSERT INTO decisions VALUES (1, '2026-11-01T10:00:00+00:00', 'ana', 'promote', 'churn-model', "
            "'1', NULL, '1', 'promoted', NULL)"
        )
        con.execute("INSERT INTO decision_checks VALUES (1, 1, 'model', 1, NULL, -0.01, 'no champion yet')")
    con.close()

    (old,) = list_decisions(db_path=db_path)
    assert (old["state"], old["resolution"], old["decision"]) == (DONE, None, "promoted")
    assert old["checks"][0]["check_name"] == "model"
    new_id = begin_decision(db_path=db_path, record=ROLLBACK_2_TO_1)
    assert [(r["id"], r["state"]) for r in list_decisions(db_path=db_path)] == [(new_id, PENDING), (1, DONE)]
    columns = sqlite_utils.Database(db_path).table("decisions").columns_dict
    assert list(columns)[-2:] == ["state", "resolution"]
    assert sqlite_utils.Database(db_path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_decision_settled_by_another_process_is_not_overwritten_and_the_writer_is_told(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "audit.db"
    audit_id = begin_decision(db_path=db_path, record=ROLLBACK_2_TO_1)
    assert finish_decision(db_path=db_path, decision_id=audit_id, state=ABANDONED, resolution="elsewhere")
    with pytest.raises(GateError, match="settled by another process"):
        mark_done(audit_db=db_path, audit_id=audit_id)
    (row,) = list_decisions(db_path=db_path)
    assert (row["state"], row["resolution"]) == (ABANDONED, "elsewhere")


def test_a_pending_row_gives_back_the_decision_it_was_written_from(tmp_path: Path) -> None:
    db_path = tmp_path / "audit.db"
    checks = [
        GateCheck("drift", False, 0.31, 0.2, "PSI blocks on sessions_30d"),
        GateCheck("model", True, math.nan, -0.01, "no champion yet"),  # stored as NULL
    ]
    versions = Versions(model="churn-model", challenger="1", challenger_run_id="run-1", champion=None)
    decision = decide(versions=versions, checks=checks, dry_run=False, force=True, reason=REASON)
    begin_decision(
        db_path=db_path, record=promotion_record(decision=decision, user="ana", now=datetime.now(UTC))
    )
    (row,) = pending_decisions(db_path=db_path)
    assert recorded_decision(record=as_record(row), run_id="run-1").to_dict() == decision.to_dict()
