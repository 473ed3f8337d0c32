"""Scoring cost in one process: the compiled path (`serving.scoring`) against `predict_proba`.

Fits both candidates as `churnops train` does (calibrated gradient boosting, calibrated logistic
regression) on synthetic feature rows, then times, for 1, 100 and 1,000 rows, the fitted
pipeline's `predict_proba` on a DataFrame (what serving did before) and the compiled path on
plain lists (what serving does now), interleaved, medians of --repeats calls. Both run on one
thread (OpenMP and BLAS pools limited to 1), as in the service. Writes `bench/results/scoring.md`.

Usage: .venv/bin/python bench/serving/scoring_bench.py [--repeats 300] [--rows 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _features

from churnops.contracts.feature_contract import load_feature_contract
from churnops.serving.features import probe_frame
from churnops.serving.scoring import compile_pipeline
from churnops.training.models import (
    build_gradient_boosting,
    build_logistic_regression,
    fit_calibrated,
    model_input,
)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "scoring.md"
SIZES = (1, 100, 1000)


def _median_ms(calls: list[float]) -> float:
    return statistics.median(calls) * 1e3


def main() -> None:
    """Fit the candidates, time both scoring paths, write the results file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows to fit on")
    args = parser.parse_args()
    contract = load_feature_contract()
    rng = np.random.default_rng(42)
    x = model_input(frame=_features(contract, args.rows, rng), contract=contract)

    def z(column: str) -> pd.Series:
        return (x[column] - x[column].mean()) / x[column].std()

    logit = -0.5 - 1.2 * z("sessions_30d") + 0.5 * z("payment_failures_30d") + (x["plan_type"] == "basic")
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    half = len(x) // 2
    lines = []
    with threadpool_limits(1):
        for name, build in (
            ("calibrated HistGradientBoosting", build_gradient_boosting),
            ("calibrated LogisticRegression", build_logistic_regression),
        ):
            model = fit_calibrated(
                pipeline=build(contract=contract, seed=42),
                train_x=x.iloc[:half],
                train_y=y[:half],
                validation_x=x.iloc[half:],
                validation_y=y[half:],
            )
            compiled = compile_pipeline(model, probe=probe_frame(contract))
            for n in SIZES:
                frame = x.iloc[:n].reset_index(drop=True)
                lists = {c: frame[c].tolist() for c in frame.columns}
                slow: list[float] = []
                fast: list[float] = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    expected = model.predict_proba(frame)[:, 1]
                    slow.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    got = compiled.predict(lists, n)
                    fast.append(time.perf_counter() - t)
                difference = float(np.abs(got - expected).max())
                lines.append(
                    f"| {name} | {n:,} | {_median_ms(slow):.3f} | {_median_ms(fast):.3f} | "
                    f"{_median_ms(slow) / _median_ms(fast):.1f}x | {difference:.1e} |"
                )
                print(lines[-1], flush=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    command = shlex.join([".venv/bin/python", "bench/serving/scoring_bench.py", *sys.argv[1:]])
    report = "\n".join(
        [
            "# Scoring: compiled path vs `predict_proba`",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command (repository root):",
            "",
            f"    {command}",
            "",
            f"- machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; load average "
            f"at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
            f"- models fitted as `churnops train` fits them, on {args.rows:,} synthetic rows of the "
            "contract's features; one thread for OpenMP and BLAS, as in the service",
            "- `predict_proba`: the fitted pipeline on a DataFrame; compiled: `serving.scoring` on plain "
            f"lists of values (what the service passes); medians of {args.repeats} interleaved calls",
            "- max |difference|: largest absolute difference between the two paths' probabilities",
            "",
            "| model | rows | `predict_proba` ms | compiled ms | speed-up | max difference |",
            "|---|---:|---:|---:|---:|---:|",
            *lines,
            "",
        ]
    )
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(report)
    os.replace(tmp, RESULTS)
    print(report)


if __name__ == "__main__":
    main()
