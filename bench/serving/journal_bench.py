"""What the write-ahead journal costs a request: `PredictionLog.submit` with and without it.

`submit` runs on the event loop before the response is sent. It used to only queue the entry;
it now also builds the entry's log rows, encodes them as one JSON line and appends it to the
journal with one `write()` (no `fsync`). This times both on the contract's real feature columns,
for one-row entries (a lone `/predict`) and 100-row entries (a batch), in a temporary folder.

Usage: .venv/bin/python bench/serving/journal_bench.py [--calls 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from churnops.contracts.feature_contract import load_feature_contract
from churnops.serving.models import LoadedModel
from churnops.serving.prediction_log import LogEntry, PredictionLog


def _log(folder: Path) -> PredictionLog:
    contract = load_feature_contract()
    flag = contract.entity.join.default_flag
    dtypes = {f.name: {"string": "object"}.get(f.dtype, f.dtype) for f in contract.features}
    return PredictionLog(
        folder=folder,
        feature_columns=[*contract.feature_names, flag],
        feature_dtypes={**dtypes, flag: "int64"},
        flush_interval_s=0.5,
        batch_rows=2000,
        max_queue=10**8,
    )


def _entry(rows: int) -> LogEntry:
    contract = load_feature_contract()
    now = datetime.now(UTC)
    features = {name: [value] * rows for name, value in contract.defaults.items()}
    features[contract.entity.join.default_flag] = [0] * rows
    return LogEntry(
        request_ids=["0123456789abcdef0123456789abcdef"] * rows,
        items=list(range(rows)),
        predicted_at=now,
        customer_ids=[f"CUST-{i:06d}" for i in range(rows)],
        features=features,
        statuses=["present"] * rows,
        snapshot_ts=[now] * rows,
        champion=LoadedModel(name="churn-model", version="1", model=None, input_columns=()),
        probabilities=[0.123456789] * rows,
        risk_bands=["low"] * rows,
    )


def _time(calls: int, call: object) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()  # type: ignore[operator]
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    """Print the median µs per `submit`, journaled and queue-only, for 1- and 100-row entries."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = _log(Path(tmp))
        for rows, calls in ((1, args.calls), (100, args.calls // 50)):
            entry = _entry(rows)
            queued = [_time(calls, lambda e=entry: log._queue.put_nowait(e)) for _ in range(args.repeats)]
            journaled = [_time(calls, lambda e=entry: log.submit(e)) for _ in range(args.repeats)]
            print(
                f"{rows:>3}-row entry: queue only {statistics.median(queued):7.1f} µs, journaled submit "
                f"{statistics.median(journaled):7.1f} µs (median of {args.repeats} x {calls})"
            )


if __name__ == "__main__":
    main()
