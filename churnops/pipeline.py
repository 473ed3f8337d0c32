"""The end-to-end pipeline behind `churnops demo`: every stage, in the order data flows.

Each step is a function of the workspace that does one stage's work through that
stage's public API and returns a one-line summary; `run_pipeline` only sequences them
and reports progress, so the stages stay testable on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from churnops.settings import Workspace


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
    from ingestion.generate import generate

    result = generate(out_dir=ws.landing, customers=opts.customers, days=opts.days, seed=opts.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items())
    return f"{rows} → {ws.landing}"


STEPS: list[Step] = [
    Step("generate synthetic sources", step_generate),
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
