"""Airflow DAG `churnops_refresh`, hourly: refresh the online store, then check its parity.

`materialize` computes every customer's snapshot as of now, appends it offline and loads it online,
which keeps served features within the contract's 2 h freshness bound; `parity` compares a sample
of online values with Feast's point-in-time offline values at that refresh time.
"""

from __future__ import annotations

from datetime import timedelta

from churnops_dag_defaults import churnops_dag, churnops_step

with churnops_dag(
    dag_id="churnops_refresh",
    schedule="20 * * * *",
    description="Hourly feature refresh (materialize) and online/offline parity",
    run_timeout=timedelta(minutes=55),
    deadline=timedelta(minutes=45),
):
    materialize = churnops_step(task_id="materialize", args="materialize", timeout=timedelta(minutes=40))
    parity = churnops_step(task_id="parity", args="parity", timeout=timedelta(minutes=10))
    materialize >> parity
