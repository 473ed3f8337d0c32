"""Airflow DAG `churnops_data`, every 6 hours: ingest, rebuild the snapshots, check contracts, quality.

`quality` writes its results to `<home>/reports/quality.json`, which `churnops metrics` and the
service's `/metrics` export as gauges.
"""

from __future__ import annotations

from datetime import timedelta

from churnops_dag_defaults import churnops_dag, churnops_step

with churnops_dag(
    dag_id="churnops_data",
    schedule="0 */6 * * *",
    description="Ingest landing files, build features, check the contracts and the feature quality",
    run_timeout=timedelta(hours=5),
    deadline=timedelta(hours=4),
):
    ingest = churnops_step(task_id="ingest", args="ingest", timeout=timedelta(hours=1))
    build = churnops_step(task_id="features_build", args="features build", timeout=timedelta(minutes=90))
    contracts = churnops_step(
        task_id="contracts_check", args="contracts check", timeout=timedelta(minutes=15)
    )
    quality = churnops_step(
        task_id="quality",
        args='quality --json "$CHURNOPS_HOME/reports/quality.json"',
        timeout=timedelta(minutes=20),
    )
    ingest >> build >> contracts >> quality
