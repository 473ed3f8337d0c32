"""Model quality on the default generated data: LR baseline vs gradient boosting vs a constant score.

For each generator seed: generate the default world (2000 customers x 120 days, start pinned so the
figures are reproducible), ingest, build features, apply Feast, train with seed 42 into a fresh home,
and record the test-window metrics of every model plus stage timings. Then, on the first world's
split, time `fit_candidates` with one OpenMP thread (what training uses) against the library
default (all cores), medians of --repeats runs each. Writes `bench/results/training.md`.

Usage: .venv/bin/python bench/training_default.py [--seeds 42 7 2026 11 12 13 14 15] [--customers 2000]
       [--days 120] [--repeats 3] [--resamples 1000] [--out bench/results/training.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from churnops.contracts.feature_contract import load_feature_contract
from churnops.training import fit
from churnops.training.split import Split, SplitDates

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"
START = datetime(2026, 6, 1, tzinfo=UTC)


def one_world(*, seed: int, customers: int, days: int) -> dict[str, object]:
    from churnops.features.build import build_features
    from churnops.features.store import apply, open_store
    from churnops.ingestion.ingest import ingest
    from churnops.settings import open_workspace
    from churnops.synthetic.generate import generate
    from churnops.training.train import train

    with tempfile.TemporaryDirectory(prefix="churnops-bench-training-") as tmp:
        ws = open_workspace(Path(tmp))
        began = time.perf_counter()
        generated = generate(out_dir=ws.landing, customers=customers, days=days, seed=seed, start=START)
        ingest(
            landing_dir=ws.landing, lake_dir=ws.lake, quarantine_dir=ws.quarantine, log_db=ws.ingestion_log
        )
        build_features(
            lake_dir=ws.lake, features_dir=ws.features, contract=load_feature_contract(), until=generated.end
        )
        store = open_store(home=ws.home)
        apply(store)
        prepared = time.perf_counter()
        result = train(
            store=store,
            lake_dir=ws.lake,
            tracking_uri=ws.tracking_uri,
            artifact_location=str(ws.artifacts),
            seed=42,
        )
        trained = time.perf_counter()
        datasets = Path(
            MlflowClient(ws.tracking_uri).download_artifacts(
                result.parent_run_id, "datasets", str(Path(tmp) / "dl")
            )
        )
        windows = {w: pd.read_parquet(datasets / f"{w}.parquet") for w in ("train", "validation", "test")}
    return {
        "windows": windows,
        "seed": seed,
        "result": result,
        "prepare_s": prepared - began,
        "train_s": trained - prepared,
    }


def split_of(windows: dict[str, pd.DataFrame]) -> Split:
    """The out-of-time split a training run logged (its train, validation and test datasets)."""
    times = {name: frame["event_timestamp"] for name, frame in windows.items()}
    return Split(
        train=windows["train"],
        validation=windows["validation"],
        test=windows["test"],
        dates=SplitDates(
            times["train"].min(),
            times["train"].max(),
            times["validation"].min(),
            times["validation"].max(),
            times["test"].min(),
            times["test"].max(),
        ),
    )


def roc_difference(*, windows: dict[str, pd.DataFrame], resamples: int) -> tuple[float, float, float]:
    """HGB minus LR test ROC AUC, with a 95% interval from a paired bootstrap over customers.

    Rows of one customer (weekly observations) are not independent, so whole customers are
    resampled: both models are scored on the same resampled rows each time.

    Returns:
        The observed difference and the 2.5% and 97.5% bootstrap quantiles.
    """
    fitted = fit.fit_candidates(split=split_of(windows), contract=load_feature_contract(), seed=42)
    y = fitted.test_labels
    lr = fitted.candidates["logistic_regression"].test_scores
    hgb = fitted.candidates["hist_gradient_boosting"].test_scores
    customers = windows["test"]["customer_id"].to_numpy()
    unique, codes = np.unique(customers, return_inverse=True)
    rows_of = [np.flatnonzero(codes == k) for k in range(len(unique))]
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(resamples):
        rows = np.concatenate([rows_of[k] for k in rng.integers(0, len(unique), len(unique))])
        if y[rows].min() == y[rows].max():
            continue
        differences.append(roc_auc_score(y[rows], hgb[rows]) - roc_auc_score(y[rows], lr[rows]))
    observed = roc_auc_score(y, hgb) - roc_auc_score(y, lr)
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(observed), float(low), float(high)


def time_fits(*, windows: dict[str, pd.DataFrame], repeats: int) -> tuple[dict[str, float], bool]:
    """Median seconds of `fit_candidates` with one thread and with the library default.

    Returns:
        The medians by mode, and whether both modes gave identical test metrics.
    """
    split = split_of(windows)
    contract = load_feature_contract()
    medians: dict[str, float] = {}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for label, threads in (("1 thread", 1), ("default threads", None)):
        fit.THREADS = threads
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            fitted = fit.fit_candidates(split=split, contract=contract, seed=42)
            runs.append(time.perf_counter() - began)
        medians[label] = statistics.median(runs)
        metrics[label] = {name: c.test for name, c in fitted.candidates.items()}
    fit.THREADS = 1
    return medians, metrics["1 thread"] == metrics["default threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2026, 11, 12, 13, 14, 15])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per seed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file to write")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("FEAST_USAGE", "False")

    runs = [one_world(seed=s, customers=args.customers, days=args.days) for s in args.seeds]
    fits, identical = time_fits(windows=runs[0]["windows"], repeats=args.repeats)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        "# Training on the default generated data",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; shared with other "
        "engineers' jobs while measured, so timings are noisy.",
        "",
        f"Command: `.venv/bin/python bench/training_default.py --seeds {' '.join(map(str, args.seeds))} "
        f"--customers {args.customers} --days {args.days} --repeats {args.repeats} "
        f"--resamples {args.resamples}"
        f"{'' if args.out.resolve() == RESULTS else f' --out {args.out}'}` "
        f"(generator start pinned to {START:%Y-%m-%d}; training seed 42).",
        "",
        "Test-window metrics (the latest out-of-time window); chosen = best validation PR AUC.",
        "",
        f"HGB - LR: the test ROC AUC difference with a 95% interval from a paired bootstrap over test "
        f"customers ({args.resamples} resamples; a customer's weekly rows are resampled together).",
        "",
        "| generator seed | rows train/val/test | test churn rate | chosen | LR ROC AUC | HGB ROC AUC | "
        "HGB - LR [95% CI] | constant ROC AUC | LR PR AUC | HGB PR AUC | constant PR AUC | prepare s | "
        "train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = run["result"]
        lr, hgb = r.metrics["logistic_regression"]["test"], r.metrics["hist_gradient_boosting"]["test"]
        diff, low, high = roc_difference(windows=run["windows"], resamples=args.resamples)
        lines.append(
            f"| {run['seed']} | {r.rows['train']}/{r.rows['validation']}/{r.rows['test']} | "
            f"{r.positive_rates['test']:.3f} | {r.chosen} | {lr['roc_auc']:.4f} | {hgb['roc_auc']:.4f} | "
            f"{diff:+.4f} [{low:+.3f}, {high:+.3f}] | "
            f"{r.constant_test['roc_auc']:.4f} | {lr['pr_auc']:.4f} | {hgb['pr_auc']:.4f} | "
            f"{r.constant_test['pr_auc']:.4f} | {run['prepare_s']:.1f} | {run['train_s']:.1f} |"
        )
    lr_auc = [r["result"].metrics["logistic_regression"]["test"]["roc_auc"] for r in runs]
    hgb_auc = [r["result"].metrics["hist_gradient_boosting"]["test"]["roc_auc"] for r in runs]
    margins = [h - lr for h, lr in zip(hgb_auc, lr_auc, strict=True)]
    lines += [
        "",
        f"HGB beats LR on test ROC AUC on {sum(m > 0 for m in margins)} of {len(margins)} seeds; mean margin "
        f"{statistics.mean(margins):+.4f} (mean LR {statistics.mean(lr_auc):.4f}, "
        f"HGB {statistics.mean(hgb_auc):.4f}).",
        "",
        f"Median test ROC AUC: LR {statistics.median(lr_auc):.4f}, HGB {statistics.median(hgb_auc):.4f}, "
        "constant 0.5000. Median `train()` time (labels + Feast retrieval + both fits + MLflow logging and "
        f"registration): {statistics.median(r['train_s'] for r in runs):.1f} s.",
        "",
        f"`fit_candidates` on generator seed {args.seeds[0]}'s split (both models, calibration, permutation "
        f"importance), median of {args.repeats}: one OpenMP thread {fits['1 thread']:.1f} s, library default "
        f"threads {fits['default threads']:.1f} s (ratio {fits['default threads'] / fits['1 thread']:.1f}x); "
        f"test metrics identical in both modes: {'yes' if identical else 'NO'}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, args.out)
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
