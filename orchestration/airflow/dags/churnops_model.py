"""Airflow DAG `churnops_model`, daily: train, drift, the promotion gate; monitor what was served.

The gate's refusal is a normal outcome (the task succeeds, the champion stays). A drift block fails
`drift` (and alerts), yet `promote` still runs so the gate records its refusal in the audit; it does
not run when `train` failed. `monitor` checks the served predictions independently of training.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TriggerRule
from churnops_dag_defaults import churnops_dag, churnops_step

with churnops_dag(
    dag_id="churnops_model",
    schedule="30 3 * * *",
    description="Train, drift, gated promotion, and monitoring of served predictions",
    run_timeout=timedelta(hours=6),
    deadline=timedelta(hours=4),
):
    train = churnops_step(task_id="train", args="train", timeout=timedelta(hours=2))
    drift = churnops_step(task_id="drift", args="drift", timeout=timedelta(minutes=30))
    promote = churnops_step(
        task_id="promote",
        args="promote",
        timeout=timedelta(minutes=30),
        refusal_is_an_outcome=True,
        trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,
    )
    monitor = churnops_step(task_id="monitor", args="monitor", timeout=timedelta(minutes=30))
    train >> drift >> promote
    train >> promote
