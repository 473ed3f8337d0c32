"""The Airflow DAGs in `orchestration/airflow/dags`: they load, they are shaped as documented, they run.

Airflow lives in its own environment (`.venv-airflow`, created by `make airflow` and `make test`);
these tests drive it through `tests/airflow_driver.py` in a subprocess, against a temporary
AIRFLOW_HOME with a SQLite metadata database. Every DAG run of the file happens in one driver
process, because `dag.test()` starts Airflow's in-process API once per process (most of a minute
on a loaded machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from churnops.settings import REPO_ROOT

AIRFLOW_PYTHON = REPO_ROOT / ".venv-airflow" / "bin" / "python"
AIRFLOW_CLI = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
DAGS = REPO_ROOT / "orchestration" / "airflow" / "dags"
DRIVER = Path(__file__).with_name("airflow_driver.py")
CHURNOPS = Path(sys.executable).with_name("churnops")
PRELUDE = ': "${CHURNOPS_HOME:?set the Airflow Variable churnops_home (or CHURNOPS_HOME) to the workspace}"; '
MARKER = "CHURNOPS-DRIVER "

pytestmark = pytest.mark.skipif(
    not AIRFLOW_PYTHON.is_file(),
    reason=".venv-airflow is missing: `make airflow` (or `make test`) creates it",
)

# Answers each churnops command as a script stands in for the real executable: it records every
# argument vector (NUL-separated, one line per call) and exits as the scenario says.
FAKE_CHURNOPS = r"""#!/usr/bin/env bash
printf '%s\0' "$@" >> "$FAKE_RECORD"; printf '\n' >> "$FAKE_RECORD"
case "$1" in
  alerts|train) exit 0 ;;
  drift) echo "blocked: days_since_last_login"; exit 1 ;;
  promote) echo "refused: champion stays v1"; exit 1 ;;
  *) echo "error: no such command $1" >&2; exit 2 ;;
esac
"""


def _airflow_env(airflow_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        **extra,
    )
    return env


def _driver(*args: str, env: dict[str, str], timeout: float) -> Any:
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), str(DRIVER), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert done.returncode == 0 and lines, f"driver failed ({done.returncode}):\n{done.stderr[-6000:]}"
    return json.loads(lines[-1].removeprefix(MARKER))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    migrated = subprocess.run(
        [str(AIRFLOW_CLI), "db", "migrate"],
        env=_airflow_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stderr[-4000:]
    return home


@pytest.fixture(scope="module")
def described(airflow_home: Path) -> dict[str, Any]:
    return _driver("describe", str(DAGS), env=_airflow_env(airflow_home), timeout=600)


def test_the_dags_load_without_import_errors(described: dict[str, Any]) -> None:
    assert described["import_errors"] == {}
    assert sorted(described["dags"]) == ["churnops_data", "churnops_model", "churnops_refresh"]


@pytest.mark.parametrize(
    ("dag_id", "schedule", "run_timeout", "deadline", "upstream"),
    [
        ("churnops_refresh", "20 * * * *", 55 * 60, 45 * 60, {"materialize": [], "parity": ["materialize"]}),
        (
            "churnops_data",
            "0 */6 * * *",
            5 * 3600,
            4 * 3600,
            {
                "ingest": [],
                "features_build": ["ingest"],
                "contracts_check": ["features_build"],
                "quality": ["contracts_check"],
            },
        ),
        (
            "churnops_model",
            "30 3 * * *",
            6 * 3600,
            4 * 3600,
            {"train": [], "drift": ["train"], "promote": ["drift", "train"], "monitor": []},
        ),
    ],
)
def test_each_dag_has_its_schedule_order_and_limits(
    described: dict[str, Any],
    dag_id: str,
    schedule: str,
    run_timeout: int,
    deadline: int,
    upstream: dict[str, list[str]],
) -> None:
    dag = described["dags"][dag_id]
    assert dag["schedule"] == schedule
    assert (dag["catchup"], dag["max_active_runs"], dag["dagrun_timeout"]) == (False, 1, run_timeout)
    assert dag["deadlines"] == [
        {
            "interval": deadline,
            "callback": "churnops_dag_defaults.alert_deadline_missed",
            "kwargs": {"dag_id": dag_id, "within": str(timedelta(seconds=deadline))},
        }
    ]
    assert {task: t["upstream"] for task, t in dag["tasks"].items()} == upstream
    for task in dag["tasks"].values():
        assert (task["retries"], task["retry_delay"]) == (2, 300.0)
        assert task["on_failure_callback"] == ["alert_task_failed"]
        assert 0 < task["execution_timeout"] < run_timeout


def test_each_task_runs_its_churnops_command_on_the_configured_home(described: dict[str, Any]) -> None:
    commands = {
        (dag_id, task_id): task["bash_command"]
        for dag_id, dag in described["dags"].items()
        for task_id, task in dag["tasks"].items()
    }
    home = '--home "$CHURNOPS_HOME"'
    assert commands[("churnops_refresh", "materialize")] == f'{PRELUDE}"$CHURNOPS_BIN" materialize {home}'
    assert commands[("churnops_data", "features_build")] == f'{PRELUDE}"$CHURNOPS_BIN" features build {home}'
    assert commands[("churnops_data", "quality")] == (
        f'{PRELUDE}"$CHURNOPS_BIN" quality --json "$CHURNOPS_HOME/reports/quality.json" {home}'
    )
    assert commands[("churnops_model", "monitor")] == f'{PRELUDE}"$CHURNOPS_BIN" monitor {home}'
    assert f'"$CHURNOPS_BIN" promote {home} 2>&1' in commands[("churnops_model", "promote")]
    trigger = described["dags"]["churnops_model"]["tasks"]["promote"]["trigger_rule"]
    assert trigger == "all_done_min_one_success"


@pytest.fixture(scope="module")
def runs(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A demo home through the hourly and the daily DAG, then the daily DAG on a stand-in churnops.

    The 6-hourly DAG is left out of the runs to keep this file within a few minutes: its tasks are
    the same kind of step (checked by the tests above) and the commands have their own tests.
    """
    work = tmp_path_factory.mktemp("airflow-runs")
    home = work / "home"
    demo = subprocess.run(
        [str(CHURNOPS), "demo", "--home", str(home), "--customers", "300", "--days", "100", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    fake = work / "fake-churnops"
    fake.write_text(FAKE_CHURNOPS)
    fake.chmod(0o700)
    record = work / "calls"
    real = {"AIRFLOW_VAR_CHURNOPS_HOME": str(home), "AIRFLOW_VAR_CHURNOPS_BIN": str(CHURNOPS)}
    faked = {
        "AIRFLOW_VAR_CHURNOPS_HOME": str(work / "fake-home"),
        "AIRFLOW_VAR_CHURNOPS_BIN": str(fake),
        "FAKE_RECORD": str(record),
    }
    spec = [
        {"name": "refresh", "dag_id": "churnops_refresh", "env": real},
        {"name": "model", "dag_id": "churnops_model", "env": real},
        {"name": "fake_model", "dag_id": "churnops_model", "env": faked},
    ]
    runs_file = work / "runs.json"
    runs_file.write_text(json.dumps(spec))
    env = _airflow_env(airflow_home, CHURNOPS_DAG_RETRIES="0")
    states = _driver("run", str(DAGS), str(runs_file), env=env, timeout=1500)
    calls = [line.split("\0")[:-1] for line in record.read_text().splitlines()] if record.exists() else []
    return {"states": states, "calls": calls, "home": home, "fake_home": work / "fake-home"}


def test_the_hourly_refresh_runs_end_to_end(runs: dict[str, Any]) -> None:
    assert runs["states"]["refresh"] == {"materialize": "success", "parity": "success"}


def test_the_daily_dag_runs_end_to_end(runs: dict[str, Any]) -> None:
    # The home has never served a prediction: `monitor` has no log to read (exit 2), so its task
    # fails and alerts, which is what an operator should hear when nothing is being served.
    assert runs["states"]["model"] == {
        "train": "success",
        "drift": "success",
        "promote": "success",
        "monitor": "failed",
    }


def test_a_refused_promotion_succeeds_and_failures_fire_their_alerts(runs: dict[str, Any]) -> None:
    # The fake churnops: drift blocks (exit 1), the gate refuses (exit 1), `monitor` does not exist.
    assert runs["states"]["fake_model"] == {
        "train": "success",
        "drift": "failed",
        "promote": "success",
        "monitor": "failed",
    }
    home = str(runs["fake_home"])
    alerts = sorted(call for call in runs["calls"] if call[0] == "alerts")
    fired = [c for c in alerts if c[1] == "fire"]
    resolved = [c for c in alerts if c[1] == "resolve"]
    assert [c[:9] for c in fired] == [
        ["alerts", "fire", "--home", home, "--condition", f"dag_task_failed:churnops_model.{task}",
         "--severity", "critical", "--summary"]
        for task in ("drift", "monitor")
    ]  # fmt: skip
    for call, task in zip(fired, ("drift", "monitor"), strict=True):
        assert call[9].startswith(f"churnops_model.{task} failed after 1 attempt(s) in run ")
    assert [c[10:] for c in fired] == [
        ["--details", f"error: Bash command failed. The command returned a non-zero exit code {code}."]
        for code in (1, 2)
    ]
    assert [c[:6] for c in resolved] == [
        ["alerts", "resolve", "--home", home, "--condition", f"dag_task_failed:churnops_model.{task}"]
        for task in ("promote", "train")
    ]
    assert [(c[6], len(c)) for c in resolved] == [("--summary", 8), ("--summary", 8)]
    steps = [call for call in runs["calls"] if call[0] != "alerts"]
    assert sorted(steps) == sorted([[c, "--home", home] for c in ("train", "drift", "promote", "monitor")])
