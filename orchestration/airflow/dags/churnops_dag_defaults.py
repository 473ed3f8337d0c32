"""What every churnops DAG shares: where churnops lives, how a step runs, what a failure raises.

The DAGs run the churnops command line and never import churnops: the scheduler lives in its own
environment (`.venv-airflow`), whose SQLAlchemy and FastAPI releases Feast and MLflow refuse.

Runtime settings, read when a task runs (an Airflow Variable wins over the environment variable):

| Airflow Variable     | environment variable  | meaning                                            |
|----------------------|-----------------------|----------------------------------------------------|
| `churnops_home`      | `CHURNOPS_HOME`       | the workspace every step reads and writes          |
| `churnops_bin`       | `CHURNOPS_BIN`        | the churnops executable (default: `churnops`)      |
| `churnops_lock_wait` | `CHURNOPS_LOCK_WAIT`  | seconds a writer queues behind another (900)       |

Deploy-time settings, read when the DAG files are parsed: `CHURNOPS_DAG_RETRIES` (default 2) and
`CHURNOPS_DAG_RETRY_DELAY_MINUTES` (default 5).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Variable
from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

log = logging.getLogger(__name__)

HOME_VARIABLE = "churnops_home"
BIN_VARIABLE = "churnops_bin"
LOCK_WAIT_VARIABLE = "churnops_lock_wait"
DEFAULT_LOCK_WAIT_SECONDS = 900
ALERT_TIMEOUT_SECONDS = 120
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

# Every step stops at once with a clear message when no workspace is configured: churnops would
# otherwise fall back to its own default home, which is never the one a deployment means.
_PRELUDE = (
    ': "${CHURNOPS_HOME:?set the Airflow Variable churnops_home (or CHURNOPS_HOME) to the workspace}"; '
)
# `churnops promote` exits 1 when the gate refuses the challenger and prints `refused: champion
# stays ...`; any other exit 1 (a crash, an error paragraph) still fails the task.
_REFUSAL_IS_AN_OUTCOME = """
out=$(mktemp) && trap 'rm -f "$out"' EXIT
"$CHURNOPS_BIN" {args} 2>&1 | tee "$out"
rc=${{PIPESTATUS[0]}}
if [ "$rc" -eq 1 ] && grep -q '^refused: ' "$out"; then
  echo "the gate refused the challenger: champion unchanged (a normal outcome)"
  exit 0
fi
exit "$rc"
"""


def churnops_home() -> str:
    """The workspace: Variable `churnops_home`, else `$CHURNOPS_HOME`, else empty (the step refuses).

    Returns:
        The workspace folder.
    """
    return str(Variable.get(HOME_VARIABLE, default=os.environ.get("CHURNOPS_HOME", "")))


def churnops_bin() -> str:
    """The churnops executable: Variable `churnops_bin`, else `$CHURNOPS_BIN`, else `churnops`.

    Returns:
        A path or a command name found on the worker's PATH.
    """
    return str(Variable.get(BIN_VARIABLE, default=os.environ.get("CHURNOPS_BIN", "churnops")))


def churnops_lock_wait() -> str:
    """Seconds a writing step waits for the workspace lock held by another step.

    Returns:
        Variable `churnops_lock_wait`, else `$CHURNOPS_LOCK_WAIT`, else 900.
    """
    fallback = os.environ.get("CHURNOPS_LOCK_WAIT", str(DEFAULT_LOCK_WAIT_SECONDS))
    return str(Variable.get(LOCK_WAIT_VARIABLE, default=fallback))


def alert_command(*, action: str, condition: str, summary: str, details: str | None = None) -> list[str]:
    """The `churnops alerts` command line that fires or resolves one condition.

    Args:
        action: `fire` or `resolve`.
        condition: The alert's condition, e.g. `dag_task_failed:churnops_refresh.parity`.
        summary: One line for the people on call.
        details: More context (fired alerts only).

    Returns:
        The argument vector.
    """
    command = [churnops_bin(), "alerts", action, "--home", churnops_home(), "--condition", condition]
    if action == "fire":
        command += ["--severity", "critical"]
    command += ["--summary", summary]
    if action == "fire" and details:
        command += ["--details", details]
    return command


def run_alert(command: Sequence[str]) -> bool:
    """Run an alerts command; a failure is logged, never raised (a callback must not fail the run).

    Args:
        command: The argument vector from `alert_command`.

    Returns:
        True when the command exited 0.
    """
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=ALERT_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("alert command %s could not run: %s", list(command), exc)
        return False
    if done.returncode != 0:
        log.warning(
            "alert command %s exited %s: %s", list(command), done.returncode, (done.stderr or "").strip()
        )
        return False
    return True


def task_condition(context: Any) -> tuple[str, str, str]:
    """The alert condition of the task a callback reports on.

    Args:
        context: The task's Airflow context.

    Returns:
        `(condition, dag_id, task_id)`.
    """
    ti = context["ti"]
    return f"dag_task_failed:{ti.dag_id}.{ti.task_id}", ti.dag_id, ti.task_id


def alert_task_failed(context: Any) -> None:
    """Fire `dag_task_failed:<dag_id>.<task_id>` once a task has failed for good (no retry left).

    Args:
        context: The task's Airflow context.
    """
    condition, dag_id, task_id = task_condition(context)
    ti = context["ti"]
    summary = f"{dag_id}.{task_id} failed after {ti.try_number} attempt(s) in run {context['run_id']}"
    details = f"error: {context.get('exception')}"
    run_alert(alert_command(action="fire", condition=condition, summary=summary, details=details))


def resolve_task_alert(context: Any) -> None:
    """Resolve `dag_task_failed:<dag_id>.<task_id>` when the task succeeds.

    Args:
        context: The task's Airflow context.
    """
    condition, dag_id, task_id = task_condition(context)
    summary = f"{dag_id}.{task_id} succeeded in run {context['run_id']}"
    run_alert(alert_command(action="resolve", condition=condition, summary=summary))


def alert_deadline_missed(*, context: dict[str, Any], dag_id: str, within: str) -> None:
    """Fire `dag_deadline_missed:<dag_id>` when a run has not finished in time.

    Args:
        context: What the scheduler passes to deadline callbacks (the run, the deadline).
        dag_id: The DAG.
        within: The allowed duration, as text.
    """
    run_id = (context.get("dag_run") or {}).get("run_id", "?")
    summary = f"{dag_id} run {run_id} has not finished within {within} of being queued"
    run_alert(alert_command(action="fire", condition=f"dag_deadline_missed:{dag_id}", summary=summary))


def default_args() -> dict[str, Any]:
    """Task defaults: retries with a delay, the alert callbacks.

    Returns:
        The DAG's `default_args`.
    """
    return {
        "owner": "ml-team",
        "retries": int(os.environ.get("CHURNOPS_DAG_RETRIES", "2")),
        "retry_delay": timedelta(minutes=int(os.environ.get("CHURNOPS_DAG_RETRY_DELAY_MINUTES", "5"))),
        "on_failure_callback": alert_task_failed,
        "on_success_callback": resolve_task_alert,
    }


def churnops_dag(
    *, dag_id: str, schedule: str, description: str, run_timeout: timedelta, deadline: timedelta
) -> DAG:
    """A churnops DAG: one run at a time, no catch-up, a run timeout and a deadline alert.

    Args:
        dag_id: The DAG's id.
        schedule: Its cron expression or preset.
        description: One line for the UI.
        run_timeout: A run still going after this fails (`dagrun_timeout`).
        deadline: A run not finished this long after being queued fires `dag_deadline_missed`.

    Returns:
        The DAG, to be used as a context manager.
    """
    user_macros: dict[str, Callable[[], str]] = {
        "churnops_home": churnops_home,
        "churnops_bin": churnops_bin,
        "churnops_lock_wait": churnops_lock_wait,
    }
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=run_timeout,
        deadline=DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=deadline,
            callback=SyncCallback(alert_deadline_missed, kwargs={"dag_id": dag_id, "within": str(deadline)}),
        ),
        default_args=default_args(),
        user_defined_macros=user_macros,
        tags=["churnops"],
    )


def churnops_step(
    *, task_id: str, args: str, timeout: timedelta, refusal_is_an_outcome: bool = False, **kwargs: Any
) -> BashOperator:
    """A task that runs `churnops <args> --home $CHURNOPS_HOME` on the configured workspace.

    Args:
        task_id: The task's id.
        args: The command and its options, without `--home` (added here).
        timeout: The task's `execution_timeout`.
        refusal_is_an_outcome: Treat `promote`'s refusal (exit 1 with `refused: ...`) as success.
        **kwargs: Further BashOperator arguments (e.g. `trigger_rule`).

    Returns:
        The operator.
    """
    full = f'{args} --home "$CHURNOPS_HOME"'
    body = _REFUSAL_IS_AN_OUTCOME.format(args=full) if refusal_is_an_outcome else f'"$CHURNOPS_BIN" {full}'
    return BashOperator(
        task_id=task_id,
        bash_command=_PRELUDE + body,
        env={
            "CHURNOPS_HOME": "{{ churnops_home() }}",
            "CHURNOPS_BIN": "{{ churnops_bin() }}",
            "CHURNOPS_LOCK_WAIT": "{{ churnops_lock_wait() }}",
            # Rich tables in task logs: wide enough that names are not cut.
            "COLUMNS": "160",
        },
        append_env=True,
        execution_timeout=timeout,
        **kwargs,
    )
