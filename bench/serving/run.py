"""Benchmark the prediction service against `feast serve` on the same online store.

Builds a bench home (Feast SQLite online store with N customers, a calibrated gradient-boosting
champion and a logistic-regression challenger in MLflow), starts the service and `feast serve`
as subprocesses on loopback, and drives both with `loadgen.py`:

- single predictions, closed loop, at 1, 8 and 32 concurrent clients;
- single predictions paced at 200 and 500 requests/s (open loop, 10,000 requests each);
- batches of 100 customers, closed loop, at 1 and 4 concurrent clients.

`feast serve`'s `/get-online-features` (features only, no model) runs the same workloads in the
same script, interleaved run by run, as the floor. Results (medians of the runs) go to
`bench/results/serving.md`.

The champion is promoted through the gate's own transaction (an audited decision), as the service
serves nothing else. With `--champion-from HOME` it is the champion of that home (e.g. after
`churnops demo`: what users run), otherwise a gradient boosting fitted here on the bench's rows.

Usage: .venv/bin/python bench/serving/run.py [--customers 20000] [--runs 3] [--paced-requests 10000]
       [--rates 200 500] [--champion-from HOME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import RunResult, closed_loop, paced, prepare

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.settings import FEATURE_REPO, QUIET_ENV, REPO_ROOT, Workspace

PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent
SERVICE = "customer_profile_v1"
VIEW = "customer_profile_30d"
MODEL = "churn-model"
UNKNOWN_SHARE = 0.02  # customers the online store lacks: exercises the default path too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _features(contract: FeatureContract, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Plausible feature values: activity counts that covary, as churners are less active."""
    activity = rng.gamma(2.0, 1.0, n)
    frame = pd.DataFrame({"customer_id": [f"CUST-{i:06d}" for i in range(1, n + 1)]})
    for f in contract.features:
        if f.dtype == "string":
            frame[f.name] = rng.choice(["basic", "pro", "enterprise"], n, p=[0.6, 0.3, 0.1])
        elif f.dtype == "int64":
            hi = int(min(f.max or 1000, 1000))
            frame[f.name] = np.clip(rng.poisson(activity * hi / 20), 0, hi).astype("int64")
        else:
            hi = float(min(f.max or 1000, 1000))
            frame[f.name] = np.round(np.clip(activity * rng.random(n) * hi / 5, 0, hi), 3)
    return frame


def build_home(*, home: Path, customers: int, seed: int, champion_from: Path | None) -> str:
    """Apply the project's Feast repo in a new home, load the online store and register models.

    Args:
        home: An empty folder (the churnops home).
        customers: Customers in the online store.
        seed: Seed of the data and models.
        champion_from: A home whose champion becomes the bench's champion (None: fit one here).

    Returns:
        What the champion is, for the report.
    """
    from churnops.features.store import apply, open_store

    contract = load_feature_contract()
    store = open_store(home=home)
    apply(store)
    rng = np.random.default_rng(seed)
    rows = _features(contract, customers, rng)
    now = pd.Timestamp.now(tz="UTC").floor("h")
    stamp = pd.Series([now] * customers).astype("datetime64[us, UTC]")
    rows = rows.assign(snapshot_ts=stamp, event_timestamp=stamp, created_timestamp=stamp)
    store.write_to_online_store(VIEW, rows)
    return _register_models(home=home, frame=rows, contract=contract, seed=seed, champion_from=champion_from)


def _imported_champion(home: Path) -> tuple[object, str]:
    """The champion of another home: its model and a description."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    uri = Workspace(home).tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    location = client.get_model_version_download_uri(MODEL, version.version)
    model = mlflow.sklearn.load_model(location)
    trees = sum(
        m.estimator.estimator.n_iter_ for m in model.named_steps["classifier"].calibrated_classifiers_
    )
    what = (
        f"`{MODEL}@champion` v{version.version} of `--champion-from` (calibrated "
        f"HistGradientBoosting, {trees} trees)"
    )
    return model, what


def _promote(*, uri: str, home: Path, version: str) -> None:
    """Move `champion` through the gate's own transaction, so the audit table holds the decision."""
    from mlflow import MlflowClient

    from churnops.monitoring.gate import GateCheck, Versions, decide
    from churnops.monitoring.registry import apply_decision

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = Versions(
        model=MODEL,
        challenger=version,
        challenger_run_id=str(client.get_model_version(MODEL, version).run_id),
        champion=None,
    )
    check = GateCheck("model", True, 0.0, 0.0, "bench set-up")
    decision = decide(versions=versions, checks=[check], dry_run=False, force=False, reason=None)
    apply_decision(
        client=client,
        decision=decision,
        audit_db=Workspace(home).audit_db,
        user="bench",
        now=datetime.now(UTC),
    )


def _register_models(
    *, home: Path, frame: pd.DataFrame, contract: FeatureContract, seed: int, champion_from: Path | None
) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from churnops.training.models import (
        build_gradient_boosting,
        build_logistic_regression,
        fit_calibrated,
        model_input,
    )
    from churnops.training.tracking import trusted_types

    x = model_input(frame=frame, contract=contract)
    rng = np.random.default_rng(seed + 1)

    def z(column: str) -> pd.Series:
        return (x[column] - x[column].mean()) / x[column].std()

    logit = -0.5 - 1.2 * z("sessions_30d") - 0.6 * z("active_days_30d") + 0.5 * z("payment_failures_30d")
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    half = len(x) // 2
    ws = Workspace(home)
    uri = ws.tracking_uri
    ws.mlruns.mkdir()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving-bench", artifact_location=ws.artifacts.as_uri())
    models = []
    for build in (build_gradient_boosting, build_logistic_regression):
        model = fit_calibrated(
            pipeline=build(contract=contract, seed=seed),
            train_x=x.iloc[:half],
            train_y=y[:half],
            validation_x=x.iloc[half:],
            validation_y=y[half:],
        )
        signature = infer_signature(x.head(100), model.predict_proba(x.head(100))[:, 1])
        models.append((model, signature))
    trees = models[0][0].named_steps["classifier"].calibrated_classifiers_[0].estimator.estimator.n_iter_
    what = f"calibrated HistGradientBoosting fitted on the bench's rows ({trees} trees)"
    if champion_from is not None:
        model, what = _imported_champion(champion_from)
        models[0] = (model, infer_signature(x.head(100), model.predict_proba(x.head(100))[:, 1]))
    for model, signature in models:
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                registered_model_name=MODEL,
                pip_requirements=["scikit-learn"],
                skops_trusted_types=trusted_types(model),
            )
    _promote(uri=uri, home=home, version="1")
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL, "challenger", "2")
    return what


@dataclass
class Target:
    """A server under test and how to ask it for one or many customers."""

    name: str
    port: int
    single: Callable[[random.Random], bytes]
    batch: Callable[[random.Random], bytes]


def _targets(customers: int, service_port: int, feast_port: int) -> list[Target]:
    def pick(rng: random.Random) -> str:
        if rng.random() < UNKNOWN_SHARE:
            return f"CUST-{customers + rng.randint(1, 10**5):06d}"
        return f"CUST-{rng.randint(1, customers):06d}"

    def feast_body(ids: list[str]) -> dict:
        return {"feature_service": SERVICE, "entities": {"customer_id": ids}}

    return [
        Target(
            name="churnops serve",
            port=service_port,
            single=lambda rng: prepare("/predict", {"customer_id": pick(rng)}),
            batch=lambda rng: prepare("/predict/batch", {"customer_ids": [pick(rng) for _ in range(100)]}),
        ),
        Target(
            name="feast serve",
            port=feast_port,
            single=lambda rng: prepare("/get-online-features", feast_body([pick(rng)])),
            batch=lambda rng: prepare("/get-online-features", feast_body([pick(rng) for _ in range(100)])),
        ),
    ]


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url} exited with {process.returncode}; see {log}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready after {timeout}s; see {log}")


def _summary(results: list[RunResult]) -> dict[str, float]:
    return {
        "p50": float(np.median([r.percentile(50) for r in results])),
        "p95": float(np.median([r.percentile(95) for r in results])),
        "p99": float(np.median([r.percentile(99) for r in results])),
        "rps": float(np.median([r.throughput for r in results])),
        "errors": float(sum(r.errors for r in results)),
        "requests": float(sum(len(r.latencies_ms) for r in results)),
    }


async def _run_all(args: argparse.Namespace, targets: list[Target]) -> dict[str, dict[str, dict[str, float]]]:
    scenarios: list[tuple[str, Callable[[Target, int], object]]] = []
    for c in (1, 8, 32):
        scenarios.append(
            (
                f"single, {c} concurrent",
                lambda t, run, c=c: closed_loop(
                    port=t.port, make_request=t.single, concurrency=c, requests=args.closed_requests, seed=run
                ),
            )
        )
    for rate in args.rates:
        scenarios.append(
            (
                f"single, paced {rate:g}/s x {args.paced_requests}",
                lambda t, run, rate=rate: paced(
                    port=t.port,
                    make_request=t.single,
                    rate=rate,
                    requests=args.paced_requests,
                    connections=32,
                    seed=run,
                ),
            )
        )
    for c in (1, 4):
        scenarios.append(
            (
                f"batch of 100, {c} concurrent",
                lambda t, run, c=c: closed_loop(
                    port=t.port, make_request=t.batch, concurrency=c, requests=args.batch_requests, seed=run
                ),
            )
        )
    for t in targets:  # warm-up: caches, registry, first-request imports
        await closed_loop(port=t.port, make_request=t.single, concurrency=4, requests=500, seed=99)
        await closed_loop(port=t.port, make_request=t.batch, concurrency=1, requests=20, seed=99)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, scenario in scenarios:
        runs: dict[str, list[RunResult]] = {t.name: [] for t in targets}
        for run in range(args.runs):
            for t in targets:  # interleaved, so background load hits both alike
                runs[t.name].append(await scenario(t, run))  # type: ignore[misc]
        table[name] = {t: _summary(r) for t, r in runs.items()}
        print(name, {t: {k: round(v, 2) for k, v in s.items()} for t, s in table[name].items()}, flush=True)
    return table


def _machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}\n- load average when the run started: {load} "
        "(the machine is shared; client, service and `feast serve` all run on it)"
    )


def _report(
    args: argparse.Namespace, table: dict, machine: str, command: str, seconds: float, champion: str
) -> str:
    ours, floor = "churnops serve", "feast serve"
    lines = [
        "# Serving benchmark: churnops prediction service vs `feast serve`",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min. Command (repository root):",
        "",
        f"    {command}",
        "",
        machine,
        f"- online store: Feast SQLite, {args.customers:,} customers, {UNKNOWN_SHARE:.0%} of requests for "
        f"unknown customers (default path); champion = {champion}, challenger = "
        "calibrated logistic regression, shadow mode on (challenger scored in the log writer thread)",
        "- service: `churnops serve --home <bench home>` (1 uvicorn process, uvloop, httptools, no access "
        "log, shadow on); `feast -c feature_repo serve -w 1 --no-access-log --max-requests 0` with the same "
        "`CHURNOPS_HOME`, so both read the project's `feature_repo/` and the same SQLite online store",
        "- endpoints: churnops `POST /predict` (single) and `POST /predict/batch` (100 ids): online read + "
        "champion scoring (`serving/scoring.py`: encoders and calibration on plain arrays, the trees in "
        "treelite) + prediction log; feast "
        "`POST /get-online-features` with the "
        "`customer_profile_v1` service: online read only (the floor)",
        "- client: `bench/serving/loadgen.py` (asyncio keep-alive HTTP/1.1 over loopback); closed loop = "
        "each client sends when its last response arrives; paced = open loop, latency from each request's "
        "due time (queueing included); every non-200 response counts as an error",
        f"- figures: medians over {args.runs} interleaved runs (p50/p95/p99 in ms, throughput in successful "
        "requests/s); errors summed over all runs",
        "",
        "| workload | server | p50 ms | p95 ms | p99 ms | req/s | errors / requests | p50 / p95 vs feast |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, rows in table.items():
        for server in (ours, floor):
            s = rows[server]
            ratio = (
                f"{s['p50'] / rows[floor]['p50']:.2f}x / {s['p95'] / rows[floor]['p95']:.2f}x"
                if server == ours
                else "1"
            )
            lines.append(
                f"| {scenario} | {server} | {s['p50']:.2f} | {s['p95']:.2f} | {s['p99']:.2f} | "
                f"{s['rps']:.0f} | {s['errors']:.0f} / {s['requests']:.0f} | {ratio} |"
            )
    rate = args.rates[0]
    paced_row = table[f"single, paced {rate:g}/s x {args.paced_requests}"]
    p95 = paced_row[ours]["p95"]
    ratio95 = p95 / paced_row[floor]["p95"]
    lines += [
        "",
        "## Targets",
        "",
        f"- p95 ≤ 10 ms at {rate:g} requests/s: **{p95:.2f} ms** — {'met' if p95 <= 10 else 'NOT met'}",
        f"- 0 errors over {args.paced_requests:,} paced requests (each run): "
        f"**{paced_row[ours]['errors']:.0f} errors in {paced_row[ours]['requests']:.0f} requests** — "
        f"{'met' if paced_row[ours]['errors'] == 0 else 'NOT met'}",
        f"- ≤ 2x `feast serve` latency (paced p95): **{ratio95:.2f}x** — "
        f"{'met' if ratio95 <= 2 else 'NOT met'}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the arguments, build the home, start both servers, run the workloads, write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--closed-requests", type=int, default=3000)
    parser.add_argument("--paced-requests", type=int, default=10_000)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[200.0, 500.0], help="paced rates; targets at the first"
    )
    parser.add_argument("--champion-from", type=Path, default=None, help="a home whose @champion is served")
    parser.add_argument("--batch-requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "serving.md")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/serving/run.py", *sys.argv[1:]])
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="churnops-serving-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        print(f"building the bench home in {home}", flush=True)
        champion = build_home(
            home=home, customers=args.customers, seed=args.seed, champion_from=args.champion_from
        )
        service_port, feast_port = _free_port(), _free_port()
        service_log, feast_log = home / "service.log", home / "feast.log"
        env = {**os.environ, "CHURNOPS_HOME": str(home)}
        with service_log.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [VENV_BIN / "churnops", "serve", "--home", home, "--port", str(service_port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env=env,
                )
            )
        with feast_log.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [
                        VENV_BIN / "feast",
                        "-c",
                        FEATURE_REPO,
                        "serve",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(feast_port),
                        "-w",
                        "1",
                        "--no-access-log",
                        "--max-requests",
                        "0",
                        "--max-requests-jitter",
                        "0",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env=env,
                )
            )
        _wait_ready(f"http://127.0.0.1:{service_port}/ready", processes[0], service_log)
        _wait_ready(f"http://127.0.0.1:{feast_port}/health", processes[1], feast_log)
        machine = _machine()
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        table = asyncio.run(_run_all(args, _targets(args.customers, service_port, feast_port)))
        report = _report(args, table, machine, command, time.monotonic() - started, champion)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".md.tmp")
        tmp.write_text(report)
        os.replace(tmp, args.out)
        print(report)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
