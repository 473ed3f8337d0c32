"""Scoring cost of the champion `churnops train` produces: `predict_proba`, per-tree replay, treelite.

Loads `churn-model@champion` from a home's MLflow registry (run `churnops demo` first: the
default data's champion) and the real rows of its run's test window (`datasets/test.parquet`),
then times, on one thread (OpenMP and BLAS pools limited to 1, as in the service):

- `predict_proba`: the fitted pipeline on a DataFrame;
- per-tree: the scoring path serving used before treelite — the same encoders and calibration
  on plain arrays, the trees through scikit-learn's compiled predictor called once per tree
  (reproduced here, as serving no longer ships it);
- treelite: `serving.scoring.compile_pipeline`, what the service runs now (the trees in treelite's
  own predictor, one call for all of them).

One row: p50 and p99 of --repeats calls, each on the next test row; batches of 100 and 1,000
rows: medians. The three paths run interleaved, call by call, so background load hits them alike.
Every row of the test window is also scored by all three paths to give each path's largest
difference from `predict_proba`. Writes `bench/results/scoring.md`.

Usage: .venv/bin/python bench/serving/scoring_bench.py [--home DIR] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from threadpoolctl import threadpool_limits

from churnops.contracts.feature_contract import load_feature_contract
from churnops.serving import scoring
from churnops.serving.features import probe_frame
from churnops.settings import QUIET_ENV, REPO_ROOT, Workspace
from churnops.training.models import model_input
from churnops.training.names import CHAMPION, REGISTERED_MODEL

RESULTS = REPO_ROOT / "bench" / "results" / "scoring.md"
BATCHES = (100, 1000)

Scorer = Callable[[Any, int], np.ndarray]


def _per_tree_decision(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The gradient boosting's margin as serving computed it before treelite: one call per tree."""
    known_bitsets, feature_map = model._bin_mapper.make_known_categories_bitsets()
    predictors = [iteration[0] for iteration in model._predictors]
    baseline = model._baseline_prediction[0]
    categorical = np.flatnonzero(model.is_categorical_)
    numerical = np.flatnonzero(~model.is_categorical_)
    encoder = None if model._preprocessor is None else model._preprocessor.named_transformers_["encoder"]
    known = [] if encoder is None else [np.asarray(c, dtype=np.float64) for c in encoder.categories_]

    def encode(x: np.ndarray) -> np.ndarray:
        if encoder is None:
            return x
        codes = np.full((x.shape[0], len(categorical)), np.nan)
        for j, (column, values) in enumerate(zip(categorical, known, strict=True)):
            at = np.minimum(np.searchsorted(values, x[:, column]), len(values) - 1)
            found = values[at] == x[:, column]
            codes[found, j] = at[found]
        return np.hstack([codes, x[:, numerical]])

    def decision(x: np.ndarray) -> np.ndarray:
        x = encode(x)
        raw = np.zeros(x.shape[0])
        raw += baseline
        for predictor in predictors:
            raw += predictor.predict(x, known_bitsets, feature_map, 1)
        return raw

    return decision


def per_tree_path(model: Any) -> Scorer:
    """Serving's scoring path before treelite, for a calibrated gradient-boosting pipeline."""
    transform = scoring._preprocessor(model.named_steps["preprocess"])
    members = []
    for member in model.named_steps["classifier"].calibrated_classifiers_:
        (calibrator,) = member.calibrators
        members.append((_per_tree_decision(member.estimator.estimator), calibrator.a_, calibrator.b_))

    def predict(data: Any, n: int) -> np.ndarray:
        x = transform(data, n)
        total = np.zeros(n)
        for decision, a, b in members:
            total += expit(-(a * decision(x) + b))
        return total / len(members)

    return predict


def _champion(home: Path) -> tuple[Any, str, pd.DataFrame]:
    import mlflow.sklearn
    from mlflow import MlflowClient

    uri = Workspace(home).tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION)
    location = client.get_model_version_download_uri(REGISTERED_MODEL, version.version)
    model = mlflow.sklearn.load_model(location)
    with tempfile.TemporaryDirectory() as tmp:
        test = pd.read_parquet(client.download_artifacts(version.run_id, "datasets/test.parquet", tmp))
    return model, str(version.version), test


def _time(path: Scorer, data: Any, n: int) -> float:
    start = time.perf_counter()
    path(data, n)
    return (time.perf_counter() - start) * 1e3


def _measure(paths: dict[str, Scorer], frame: pd.DataFrame, repeats: int) -> dict[str, dict[str, float]]:
    """Single-row p50/p99 and batch medians (ms) of each path, interleaved call by call."""
    lists = [{c: frame[c].iloc[[i]].tolist() for c in frame.columns} for i in range(len(frame))]
    single: dict[str, list[float]] = {name: [] for name in paths}
    for k in range(repeats):
        row = k % len(frame)
        for name, path in paths.items():
            data = frame.iloc[[row]] if name == "predict_proba" else lists[row]
            single[name].append(_time(path, data, 1))
    figures = {
        name: {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
        for name, t in single.items()
    }
    for size in BATCHES:
        block = frame.iloc[:size].reset_index(drop=True)
        block_lists = {c: block[c].tolist() for c in block.columns}
        calls: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(max(20, repeats // 20)):
            for name, path in paths.items():
                calls[name].append(_time(path, block if name == "predict_proba" else block_lists, size))
        for name, t in calls.items():
            figures[name][f"batch{size}"] = float(np.median(t))
    return figures


def _differences(paths: dict[str, Scorer], frame: pd.DataFrame, model: Any) -> dict[str, float]:
    expected = model.predict_proba(frame)[:, 1]
    lists = {c: frame[c].tolist() for c in frame.columns}
    return {name: float(np.abs(path(lists, len(frame)) - expected).max()) for name, path in paths.items()}


def _difference(differences: dict[str, float], name: str) -> str:
    return f"{differences[name]:.1e}" if name in differences else "(reference)"


def _report(
    *,
    figures: dict,
    differences: dict,
    trees: int,
    version: str,
    rows: int,
    repeats: int,
    rss_mb: float,
    home: Path,
) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    command = shlex.join([".venv/bin/python", "bench/serving/scoring_bench.py", *sys.argv[1:]])
    base = figures["predict_proba"]
    lines = [
        "# Scoring: `predict_proba`, per-tree replay and treelite on the demo champion",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Commands (repository root):",
        "",
        f"    .venv/bin/churnops demo --home {home}",
        f"    {command}",
        "",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; load average at "
        f"the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} (shared machine)",
        f"- model: `churn-model@champion` v{version} as `churnops demo` trains it on the default data "
        f"(2,000 customers x 120 days): calibrated HistGradientBoosting, {trees} trees, categorical "
        "splits on `plan_type`",
        f"- rows: the {rows:,} real rows of its run's test window (`datasets/test.parquet`); one thread "
        "for OpenMP and BLAS, as in the service; peak RSS of the whole bench process "
        f"{rss_mb:.0f} MB",
        "- `predict_proba`: the fitted pipeline on a one-row DataFrame; per-tree: serving's path before "
        "treelite (plain arrays, scikit-learn's tree predictor once per tree); treelite: "
        "`serving/scoring.py` now (plain arrays, every tree in one treelite GTIL call)",
        f"- one row: p50 / p99 of {repeats:,} calls, interleaved across the paths; batches: medians of "
        f"{max(20, repeats // 20)} calls",
        "",
        "| path | 1 row p50 ms | 1 row p99 ms | 100 rows ms | 1,000 rows ms | p50 vs `predict_proba` "
        "| max \\|diff\\| vs `predict_proba` |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"predict_proba": "`predict_proba`", "per_tree": "per-tree", "treelite": "treelite"}
    for name, label in labels.items():
        f = figures[name]
        lines.append(
            f"| {label} | {f['p50']:.3f} | {f['p99']:.3f} | {f['batch100']:.3f} | {f['batch1000']:.3f} | "
            f"{base['p50'] / f['p50']:.1f}x | {_difference(differences, name)} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Load the champion and its test rows, time the three paths, write the results file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=REPO_ROOT, help="a home `churnops demo` ran in")
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    contract = load_feature_contract()
    model, version, test = _champion(args.home.resolve())
    frame = model_input(frame=test, contract=contract)
    compiled = scoring.compile_pipeline(model, probe=probe_frame(contract))
    if compiled.engine != scoring.TREELITE:
        raise SystemExit(f"the champion is not scored by treelite ({compiled.engine}): nothing to compare")
    trees = sum(
        member.estimator.estimator.n_iter_
        for member in model.named_steps["classifier"].calibrated_classifiers_
    )
    paths: dict[str, Scorer] = {
        "predict_proba": lambda data, _n: model.predict_proba(data)[:, 1],
        "per_tree": per_tree_path(model),
        "treelite": compiled.predict,
    }
    with threadpool_limits(1):
        differences = _differences({k: v for k, v in paths.items() if k != "predict_proba"}, frame, model)
        figures = _measure(paths, frame, args.repeats)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = _report(
        figures=figures,
        differences=differences,
        trees=trees,
        version=version,
        rows=len(frame),
        repeats=args.repeats,
        rss_mb=rss_mb,
        home=args.home,
    )
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(report)
    os.replace(tmp, RESULTS)
    print(report)


if __name__ == "__main__":
    main()
