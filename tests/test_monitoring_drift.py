"""PSI drift with Evidently under controlled shifts, checked against a PSI written from the formula."""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.monitoring.drift import (
    DriftInputError,
    DriftRun,
    compute_drift,
    select_active,
    write_drift_json,
)

runner = CliRunner()
ROWS = 3000  # below ~1000 rows, sampling noise alone pushes count features past PSI 0.1


def feature_frame(
    rows: int, seed: int, *, watch_scale: float = 1.0, plan_p: tuple[float, float, float] = (0.65, 0.25, 0.10)
) -> pd.DataFrame:
    """Every contract feature drawn from fixed distributions; `watch_scale` / `plan_p` shift two."""
    rng = np.random.default_rng(seed)
    attempts = rng.poisson(3, rows)
    orders = rng.choice([0, 1, 2], rows, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(
        {
            "customer_id": [f"CUST-{i:06d}" for i in range(rows)],
            "sessions_30d": rng.poisson(12, rows),
            "active_days_30d": np.minimum(31, rng.binomial(30, 0.4, rows)),
            "events_30d": rng.poisson(60, rows),
            "watch_minutes_30d": np.round(rng.gamma(2.0, 60.0, rows) * watch_scale, 1),
            "quiz_attempts_30d": attempts,
            "quiz_avg_score_30d": np.where(attempts > 0, np.round(rng.uniform(40, 100, rows), 1), 0.0),
            "orders_30d": orders,
            "distinct_order_days_30d": orders,
            "avg_order_value_30d": np.where(orders > 0, np.round(rng.normal(300, 50, rows).clip(0), 2), 0.0),
            "payment_failures_30d": rng.poisson(0.2, rows),
            "support_tickets_30d": rng.poisson(1.0, rows),
            "days_since_last_event": np.minimum(90, rng.geometric(0.3, rows) - 1),
            "tenure_days": rng.integers(30, 1500, rows),
            "plan_type": rng.choice(["basic", "pro", "enterprise"], rows, p=list(plan_p)),
            "seat_count": rng.integers(1, 200, rows),
        }
    )


def independent_psi(reference: pd.Series, current: pd.Series, *, numeric: bool) -> float:
    """PSI from its formula, with the binning Evidently documents (see monitoring/drift.py)."""
    ref = reference.dropna().to_numpy()
    cur = current.dropna().to_numpy()
    if numeric and len(set(ref.tolist())) > 20:
        both = np.concatenate([ref, cur]).astype(float)
        low, high = both.min(), both.max()
        # Sturges: bin width = range / (log2(n) + 1), bins = ceil(range / width), equal width.
        width = (high - low) / (math.log2(len(both)) + 1)
        bins = math.ceil((high - low) / width)
        edges = [low + (high - low) * i / bins for i in range(bins + 1)]

        def shares(values: np.ndarray) -> list[float]:
            counts = [0] * bins
            for v in values.astype(float):
                # [edge_i, edge_i+1) except the last bin, which also holds the maximum.
                i = min(bisect.bisect_right(edges, v) - 1, bins - 1)
                counts[i] += 1
            return [c / len(values) for c in counts]

        ref_shares, cur_shares = shares(ref), shares(cur)
    else:
        keys = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)
        ref_counts, cur_counts = Counter(ref.tolist()), Counter(cur.tolist())
        ref_shares = [ref_counts[k] / len(ref) for k in keys]
        cur_shares = [cur_counts[k] / len(cur) for k in keys]

    def floor(shares: list[float]) -> list[float]:
        smallest = min(s for s in shares if s > 0)
        filler = smallest / 1e6 if smallest <= 1e-4 else 1e-4
        return [s if s > 0 else filler for s in shares]

    ref_shares, cur_shares = floor(ref_shares), floor(cur_shares)
    return sum((r - c) * math.log(r / c) for r, c in zip(ref_shares, cur_shares, strict=True))


@pytest.fixture(scope="module")
def contract() -> FeatureContract:
    return load_feature_contract()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return feature_frame(ROWS, seed=1)


def statuses(run: DriftRun) -> dict[str, str]:
    return {f.feature: f.status for f in run.result.features}


def assert_matches_formula(run: DriftRun, reference: pd.DataFrame, current: pd.DataFrame, contract) -> None:
    for f in run.result.features:
        expected = independent_psi(reference[f.feature], current[f.feature], numeric=f.kind == "numeric")
        assert f.psi == pytest.approx(expected, rel=1e-9, abs=1e-12), f.feature
        expected_status = "block" if expected >= 0.2 else "warn" if expected >= 0.1 else "ok"
        assert f.status == expected_status, f.feature


def test_unchanged_sample_passes(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2)
    run = compute_drift(reference=reference, current=current, contract=contract)
    assert run.result.status == "ok"
    assert set(statuses(run).values()) == {"ok"}
    excluded = {x.feature for x in contract.drift.exclude}
    monitored = [n for n in contract.feature_names if n not in excluded]
    assert [f.feature for f in run.result.features] == monitored
    assert run.result.reference_rows == ROWS and run.result.current_rows == ROWS
    assert_matches_formula(run, reference, current, contract)


def test_moderate_shift_in_one_feature_warns(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2, watch_scale=1.3)
    run = compute_drift(reference=reference, current=current, contract=contract)
    assert run.result.status == "warn"
    assert run.result.warning == ["watch_minutes_30d"] and run.result.blocking == []
    assert 0.1 <= dict((f.feature, f.psi) for f in run.result.features)["watch_minutes_30d"] < 0.2
    assert_matches_formula(run, reference, current, contract)


def test_large_shift_blocks(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2, watch_scale=2.0)
    run = compute_drift(reference=reference, current=current, contract=contract)
    assert run.result.status == "block"
    assert run.result.blocking == ["watch_minutes_30d"] and run.result.warning == []
    assert_matches_formula(run, reference, current, contract)


def test_plan_mix_shift_is_caught(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2, plan_p=(0.3, 0.4, 0.3))
    run = compute_drift(reference=reference, current=current, contract=contract)
    plan = next(f for f in run.result.features if f.feature == "plan_type")
    assert plan.kind == "categorical"
    assert run.result.blocking == ["plan_type"]
    assert_matches_formula(run, reference, current, contract)


def test_new_category_uses_the_empty_bin_floor(contract) -> None:
    # Hand-computed: basic/pro 0.5/0.5 → 0.4/0.4 plus 20% 'unknown', absent from the reference
    # (its reference share is floored at 0.0001). Every other feature is identical on both sides.
    base = feature_frame(100, seed=5)
    current = base.copy()
    current["plan_type"] = ["basic"] * 40 + ["pro"] * 40 + ["unknown"] * 20
    reference = base.copy()
    reference["plan_type"] = ["basic"] * 50 + ["pro"] * 50
    expected = 2 * (0.5 - 0.4) * math.log(0.5 / 0.4) + (1e-4 - 0.2) * math.log(1e-4 / 0.2)
    run = compute_drift(reference=reference, current=current, contract=contract)
    psi = {f.feature: f.psi for f in run.result.features}
    assert psi["plan_type"] == pytest.approx(expected, rel=1e-12)
    assert all(v == pytest.approx(0.0, abs=1e-12) for k, v in psi.items() if k != "plan_type")


def test_nulls_are_dropped_before_binning(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2)
    current.loc[: ROWS // 2, "seat_count"] = np.nan
    run = compute_drift(reference=reference, current=current, contract=contract)
    seats = next(f for f in run.result.features if f.feature == "seat_count")
    assert seats.current_values == int(current["seat_count"].notna().sum())
    assert seats.psi == pytest.approx(
        independent_psi(reference["seat_count"], current["seat_count"], numeric=True), rel=1e-9
    )


def test_excluded_features_are_not_monitored(contract, reference) -> None:
    # The contract excludes tenure_days (it grows with the calendar): even a huge shift is ignored.
    assert [x.feature for x in contract.drift.exclude] == ["tenure_days"]
    current = reference.copy()
    current["tenure_days"] = current["tenure_days"] + 10_000
    run = compute_drift(reference=reference, current=current, contract=contract)
    assert "tenure_days" not in {f.feature for f in run.result.features}
    assert run.result.status == "ok"


def test_bad_input_is_named(contract, reference) -> None:
    with pytest.raises(DriftInputError, match=r"cur\.parquet lacks the feature column\(s\) \['seat_count'\]"):
        compute_drift(
            reference=reference,
            current=reference.drop(columns="seat_count"),
            contract=contract,
            current_label="cur.parquet",
        )
    with pytest.raises(DriftInputError, match="reference has no rows"):
        compute_drift(reference=reference.iloc[:0], current=reference, contract=contract)
    text = reference.astype({"events_30d": object})
    text.loc[7, "events_30d"] = "many"
    with pytest.raises(DriftInputError, match=r"column 'events_30d', row 7: expected a number, got 'many'"):
        compute_drift(reference=reference, current=text, contract=contract)
    empty = reference.copy()
    empty["plan_type"] = None
    with pytest.raises(DriftInputError, match="'plan_type': every value is null"):
        compute_drift(reference=reference, current=empty, contract=contract)


def test_json_summary(tmp_path: Path, contract, reference) -> None:
    current = feature_frame(ROWS, seed=2, watch_scale=1.3)
    run = compute_drift(reference=reference, current=current, contract=contract)
    path = write_drift_json(result=run.result, path=tmp_path / "out" / "drift.json")
    summary = json.loads(path.read_text())
    assert summary["status"] == "warn"
    assert summary["thresholds"] == {"warn": 0.1, "block": 0.2}
    assert summary["rows"] == {"reference": ROWS, "current": ROWS}
    assert summary["warning"] == ["watch_minutes_30d"]
    by_feature = {f["feature"]: f for f in summary["features"]}
    assert by_feature["watch_minutes_30d"]["psi"] == next(
        f.psi for f in run.result.features if f.feature == "watch_minutes_30d"
    )
    assert list(tmp_path.joinpath("out").iterdir()) == [path]


def test_select_active_uses_latest_customer_record() -> None:
    latest = pd.DataFrame({"customer_id": ["A", "B", "C"], "x": [1, 2, 3]})
    customers = pd.DataFrame(
        {
            "customer_id": ["A", "B", "B", "C"],
            "is_active": [True, True, False, True],
            "ingested_at": pd.to_datetime(["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-01"], utc=True),
        }
    )
    kept = select_active(latest=latest, customers=customers, join_key="customer_id")
    assert kept["customer_id"].tolist() == ["A", "C"]


def test_cli_exit_codes_and_outputs(tmp_path: Path, reference) -> None:
    ref = tmp_path / "ref.parquet"
    reference.to_parquet(ref)
    cases = {"same": (feature_frame(ROWS, 2), 0), "warn": (feature_frame(ROWS, 2, watch_scale=1.3), 0)}
    cases["block"] = (feature_frame(ROWS, 2, plan_p=(0.3, 0.4, 0.3)), 1)
    for name, (frame, code) in cases.items():
        cur = tmp_path / f"{name}.parquet"
        frame.to_parquet(cur)
        html, out = tmp_path / f"{name}.html", tmp_path / f"{name}.json"
        args = ["drift", "--home", str(tmp_path), "--reference", str(ref), "--current", str(cur)]
        result = runner.invoke(app, [*args, "--html", str(html), "--json", str(out)])
        assert result.exit_code == code, result.output
        assert json.loads(out.read_text())["status"] == {"same": "ok", "warn": "warn", "block": "block"}[name]
        assert "<html" in html.read_text()[:2000].lower()
    assert (
        "watch_minutes_30d"
        in runner.invoke(app, [*args[:-2], "--current", str(tmp_path / "warn.parquet")]).output
    )

    broken = tmp_path / "broken.parquet"
    reference.drop(columns="plan_type").to_parquet(broken)
    result = runner.invoke(
        app, ["drift", "--home", str(tmp_path), "--reference", str(ref), "--current", str(broken)]
    )
    assert result.exit_code == 2
    assert "lacks the feature column(s) ['plan_type']" in result.output
    missing = runner.invoke(
        app,
        [
            "drift",
            "--home",
            str(tmp_path),
            "--reference",
            str(ref),
            "--current",
            str(tmp_path / "no.parquet"),
        ],
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    no_store = runner.invoke(app, ["drift", "--home", str(tmp_path / "empty"), "--current", str(ref)])
    assert no_store.exit_code == 2 and "no MLflow store" in no_store.output


def test_one_evidently_test_per_feature_graded_by_the_worst_threshold(contract, reference) -> None:
    current = feature_frame(ROWS, seed=2, watch_scale=2.0, plan_p=(0.55, 0.30, 0.15))
    run = compute_drift(reference=reference, current=current, contract=contract)
    tests = run.snapshot.dict()["tests"]
    monitored = [f.feature for f in run.result.features]
    assert len(tests) == len(monitored)
    by_status = Counter(str(t["status"]).rsplit(".", 1)[-1] for t in tests)
    assert by_status == Counter(
        {"FAIL": len(run.result.blocking), "WARNING": len(run.result.warning)}
        | {"SUCCESS": len(monitored) - len(run.result.blocking) - len(run.result.warning)}
    )
    assert "watch_minutes_30d" in run.result.blocking


def test_report_starts_with_the_summary_and_compares_distributions_only(
    tmp_path: Path, contract, reference
) -> None:
    from churnops.monitoring.drift import summary_rows, write_drift_html

    current = feature_frame(ROWS, seed=2, watch_scale=2.0)
    run = compute_drift(reference=reference, current=current, contract=contract)
    rows = summary_rows(run.result)
    # Blocking first; each row is feature, PSI, status, the threshold behind the status.
    psi = {f.feature: f.psi for f in run.result.features}
    assert rows[0] == ["watch_minutes_30d", f"{psi['watch_minutes_30d']:.4f}", "block", "0.2"]
    assert {r[2] for r in rows[1:]} <= {"ok", "warn"}
    assert all(r[3] == ("0.2" if r[2] == "block" else "0.1") for r in rows)
    html = write_drift_html(run=run, path=tmp_path / "drift.html").read_text()
    assert html.index("PSI drift summary") < html.index("watch_minutes_30d")
    assert "DATA DISTRIBUTION" in html
    assert "DATA DRIFT" not in html and "Index binned" not in html
    summary = run.result.to_dict()["summary"]
    assert [s["feature"] for s in summary] == [f.feature for f in run.result.features]
    assert summary[[s["feature"] for s in summary].index("watch_minutes_30d")] == {
        "feature": "watch_minutes_30d",
        "psi": psi["watch_minutes_30d"],
        "status": "block",
        "threshold": 0.2,
    }
