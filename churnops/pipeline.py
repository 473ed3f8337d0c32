"""The end-to-end pipeline behind `churnops demo`: every stage, in the order data flows.

Each step is a function of the workspace that does one stage's work through that
stage's public API and returns a one-line summary; `run_pipeline` only sequences them
and reports progress, so the stages stay testable on their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from churnops.settings import Workspace
from churnops.storage.layout import MEMORY_LIMIT_ENV


@dataclass(frozen=True)
class DemoOptions:
    """Sizes and switches for a demo run.

    Attributes:
        customers: Customers to generate.
        days: Days of history to generate.
        seed: Random seed for generation and training.
    """

    customers: int = 2000
    days: int = 120
    seed: int = 42


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline."""

    name: str
    run: Callable[[Workspace, DemoOptions], str]


@dataclass(frozen=True)
class StepResult:
    """What one step reported and how long it took."""

    name: str
    summary: str
    seconds: float


def step_generate(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.synthetic.generate import generate

    result = generate(out_dir=ws.landing, customers=opts.customers, days=opts.days, seed=opts.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items())
    return f"{rows} → {ws.landing}"


def step_ingest(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.ingestion.ingest import ingest

    report = ingest(
        landing_dir=ws.landing, lake_dir=ws.lake, quarantine_dir=ws.quarantine, log_db=ws.ingestion_log
    )
    if not report.ok:
        failed = "; ".join(f"{b.source}: {b.message}" for b in report.failed)
        raise RuntimeError(f"ingestion failed a batch-level contract rule ({failed})")
    sources = sorted({b.source for b in report.batches})
    totals = {name: report.totals(name) for name in sources}
    accepted = sum(t["accepted"] for t in totals.values())
    quarantined = sum(t["quarantined"] for t in totals.values())
    return f"{accepted:,} rows accepted, {quarantined:,} quarantined → {ws.lake}"


def step_features(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.build import build_features

    report = build_features(
        lake_dir=ws.lake,
        features_dir=ws.features,
        contract=load_feature_contract(),
        memory_limit=os.environ.get(MEMORY_LIMIT_ENV) or None,
        engine=ws.backends.engine,
    )
    return (
        f"{report.snapshots_computed:,} snapshots for {report.customers:,} customers "
        f"up to {report.until:%Y-%m-%d %H:%M} UTC → {ws.features}"
    )


def step_apply(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.features.store import apply, open_store

    store = open_store(home=ws.home)
    apply(store)
    return f"Feast project {store.project!r} applied ({ws.feature_store_yaml})"


def step_materialize(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.materialize import materialize
    from churnops.features.store import open_store

    report = materialize(
        store=open_store(home=ws.home),
        lake_dir=ws.lake,
        features_dir=ws.features,
        contract=load_feature_contract(),
        memory_limit=os.environ.get(MEMORY_LIMIT_ENV) or None,
    )
    return (
        f"{report.customers:,} customers loaded online as of {report.at:%Y-%m-%d %H:%M:%S} UTC "
        f"in {report.online_seconds:.1f} s"
    )


def step_parity(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.contracts.feature_contract import load_feature_contract
    from churnops.features.materialize import last_materialized
    from churnops.features.parity import check_parity
    from churnops.features.store import open_store

    contract = load_feature_contract()
    store = open_store(home=ws.home)
    at = last_materialized(store, contract)
    if at is None:
        raise RuntimeError("nothing was materialized: the materialize step wrote no refresh")
    report = check_parity(
        store=store,
        at=at,
        sample=contract.parity.sample_size,
        tolerance=contract.parity.tolerance,
        seed=opts.seed,
        features_dir=ws.features,
        contract=contract,
    )
    if not report.passed:
        raise RuntimeError(f"online and offline features disagree for {report.mismatches} values")
    return f"{report.sampled} customers: online = offline within {report.tolerance:.0%}"


def step_train(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.features.store import open_store
    from churnops.training.train import train

    result = train(
        store=open_store(home=ws.home),
        lake_dir=ws.lake,
        tracking_uri=ws.tracking_uri,
        artifact_location=str(ws.artifacts),
        seed=opts.seed,
    )
    test = result.metrics[result.chosen]["test"]
    return (
        f"{result.model_name} v{result.model_version} @challenger ({result.chosen}: "
        f"test ROC AUC {test['roc_auc']:.3f}, PR AUC {test['pr_auc']:.3f})"
    )


def step_promote(ws: Workspace, opts: DemoOptions) -> str:
    from churnops.monitoring.promotion import run_gate

    run = run_gate(
        lake_dir=ws.lake,
        features_dir=ws.features,
        audit_db=ws.audit_db,
        tracking_uri=ws.tracking_uri,
        tracking_db=ws.tracking_db,
    )
    decision = run.decision
    if decision.decision not in ("promoted", "unchanged"):
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in decision.failures)
        raise RuntimeError(f"the promotion gate refused the challenger: {reasons}")
    return f"gate: {decision.decision} (audit #{run.audit_id}); drift {run.drift.result.status}"


STEPS: list[Step] = [
    Step("generate synthetic sources", step_generate),
    Step("ingest against the contracts", step_ingest),
    Step("build point-in-time features", step_features),
    Step("apply Feast definitions", step_apply),
    Step("materialize to the online store", step_materialize),
    Step("check online/offline parity", step_parity),
    Step("train and register a challenger", step_train),
    Step("run the promotion gate", step_promote),
]


def run_pipeline(
    ws: Workspace,
    opts: DemoOptions,
    *,
    steps: Iterable[Step] = STEPS,
    on_start: Callable[[Step], None] = lambda step: None,
    on_done: Callable[[StepResult], None] = lambda result: None,
) -> list[StepResult]:
    """Run the steps in order, stopping at the first failure (its exception propagates).

    Args:
        ws: The workspace every step reads and writes.
        opts: Sizes and seed for the run.
        steps: The steps to run (default: the whole pipeline).
        on_start: Called before each step (progress display).
        on_done: Called after each step with its result.

    Returns:
        One result per step, in order.
    """
    results = []
    for step in steps:
        on_start(step)
        began = time.perf_counter()
        summary = step.run(ws, opts)
        result = StepResult(step.name, summary, time.perf_counter() - began)
        on_done(result)
        results.append(result)
    return results
