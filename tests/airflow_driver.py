"""Runs inside `.venv-airflow` (never imported by the test suite): load or run the churnops DAGs.

    python airflow_driver.py describe DAGS_FOLDER
        prints the DagBag's import errors and each DAG's settings and tasks as JSON.
    python airflow_driver.py run DAGS_FOLDER RUNS_JSON
        runs DAGs once each with `dag.test()`, in the order of RUNS_JSON's list of
        `{"name", "dag_id", "env"}` (`env` is set while that run lasts: Airflow Variables as
        `AIRFLOW_VAR_<NAME>`, anything else the tasks read), and prints each run's task states.

One process runs them all: `dag.test()` starts Airflow's in-process API once, which takes most of
a minute on a loaded machine. The caller sets AIRFLOW_HOME (a temporary folder with a migrated
SQLite metadata database).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from airflow.dag_processing.dagbag import BundleDagBag


def _seconds(value: Any) -> float | None:
    return None if value is None else value.total_seconds()


def _bag(folder: str) -> BundleDagBag:
    # As the DAG processor and the task runner load a dags folder: as a bundle, on sys.path.
    return BundleDagBag(dag_folder=folder, bundle_path=Path(folder))


def describe(folder: str) -> dict[str, Any]:
    """The DagBag's import errors and each DAG's settings and tasks."""
    bag = _bag(folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
        dags[dag_id] = {
            "schedule": dag.schedule,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "dagrun_timeout": _seconds(dag.dagrun_timeout),
            "deadlines": [
                {"interval": _seconds(a.interval), "callback": a.callback.path, "kwargs": a.callback.kwargs}
                for a in alerts
                if a is not None
            ],
            "tasks": {
                t.task_id: {
                    "upstream": sorted(t.upstream_task_ids),
                    "execution_timeout": _seconds(t.execution_timeout),
                    "retries": t.retries,
                    "retry_delay": _seconds(t.retry_delay),
                    "trigger_rule": str(t.trigger_rule.value),
                    "bash_command": t.bash_command,
                    "on_failure_callback": [f.__name__ for f in t.on_failure_callback or []],
                }
                for t in dag.tasks
            },
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def run(folder: str, runs_file: str) -> dict[str, dict[str, str]]:
    """Run each DAG of the list once; each run's task states by run name."""
    bag = _bag(folder)
    states = {}
    for spec in json.loads(Path(runs_file).read_text()):
        saved = {name: os.environ.get(name) for name in spec["env"]}
        os.environ.update(spec["env"])
        try:
            states[spec["name"]] = _run_once(bag.get_dag(spec["dag_id"]))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return states


def _run_once(dag: Any) -> dict[str, str]:
    # `dag.test()` of Airflow 3.3 cannot finish a successful run of a DAG with a deadline alert
    # (it looks the alert up by its serialized form instead of its id); the scheduler can. The run
    # goes without it: `describe` checks the alerts.
    dag.deadline = None
    dag_run = dag.test()
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        return {ti.task_id: str(ti.state) for ti in rows}


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    result = describe(*rest) if command == "describe" else run(*rest)
    print("CHURNOPS-DRIVER " + json.dumps(result, sort_keys=True))
