"""The feature contract's data-quality rules, each broken on purpose on a clean table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_monitoring_drift import feature_frame
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.monitoring.quality import QualityInputError, check_feature_table, check_training_set

runner = CliRunner()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CONTRACT = load_feature_contract()


def table(rows: int = 400) -> pd.DataFrame:
    frame = feature_frame(rows, seed=3)
    frame["snapshot_ts"] = pd.Timestamp(NOW - timedelta(minutes=30))
    return frame


def outcomes(report, rule: str) -> dict[str, str]:
    return {c.target: c.outcome for c in report.checks if c.rule == rule}


def check(report, rule: str, target: str):
    return next(c for c in report.checks if c.rule == rule and c.target == target)


def test_clean_table_passes_with_only_flags() -> None:
    report = check_feature_table(frame=table(), contract=CONTRACT, now=NOW)
    assert report.passed
    assert {c.outcome for c in report.checks} <= {"pass", "flag"}
    assert set(outcomes(report, "null_rate")) == set(CONTRACT.feature_names)
    assert check(report, "freshness", "snapshot_ts").figure == pytest.approx(0.5)


def test_each_rule_fails_on_its_fault() -> None:
    frame = table()
    frame.loc[0:9, "tenure_days"] = np.nan  # 10/400 = 2.5% > 1%
    frame.loc[5, "active_days_30d"] = 32  # max 31
    frame.loc[6, "plan_type"] = "gold"
    frame.loc[7, ["orders_30d", "distinct_order_days_30d"]] = [1, 2]
    frame.loc[8, "customer_id"] = frame.loc[9, "customer_id"]
    report = check_feature_table(frame=frame, contract=CONTRACT, now=NOW)
    assert not report.passed
    failed = {(c.rule, c.target) for c in report.failures}
    assert failed == {
        ("null_rate", "tenure_days"),
        ("range", "active_days_30d"),
        ("range", "plan_type"),
        ("consistency", "orders_vs_order_days"),
        ("unique_key", "customer_id+snapshot_ts"),
    }
    assert check(report, "null_rate", "tenure_days").figure == pytest.approx(10 / 400)
    assert "first at row 5: 32" in check(report, "range", "active_days_30d").message
    assert check(report, "consistency", "orders_vs_order_days").figure == 1.0
    assert "first at row 9" in check(report, "unique_key", "customer_id+snapshot_ts").message


def test_outliers_are_flagged_not_failed() -> None:
    frame = table(1000)
    frame.loc[0, "watch_minutes_30d"] = 99_000.0
    report = check_feature_table(frame=frame, contract=CONTRACT, now=NOW)
    outlier = check(report, "outliers", "watch_minutes_30d")
    cut = float(frame["watch_minutes_30d"].quantile(0.999))
    assert outlier.outcome == "flag" and outlier.threshold == pytest.approx(cut)
    assert outlier.figure == float((frame["watch_minutes_30d"] > cut).sum())
    assert report.passed


def test_freshness_uses_each_customers_latest_snapshot() -> None:
    frame = table(10)
    old = frame.copy()
    old["snapshot_ts"] = pd.Timestamp(NOW - timedelta(days=1))
    history = pd.concat([old, frame], ignore_index=True)  # an old day per customer does not matter
    assert check(
        check_feature_table(frame=history, contract=CONTRACT, now=NOW), "freshness", "snapshot_ts"
    ).outcome == ("pass")
    stale = frame.copy()
    stale.loc[3, "snapshot_ts"] = pd.Timestamp(NOW - timedelta(hours=3))
    result = check(check_feature_table(frame=stale, contract=CONTRACT, now=NOW), "freshness", "snapshot_ts")
    assert (result.outcome, result.figure, result.threshold) == ("fail", pytest.approx(3.0), 2.0)


def test_freshness_leaves_out_customers_the_population_ended() -> None:
    frame = table(10)
    churned = frame.loc[3, CONTRACT.entity.join_key]
    frame.loc[3, "snapshot_ts"] = pd.Timestamp(NOW - timedelta(days=40))
    kept = check(
        check_feature_table(frame=frame, contract=CONTRACT, now=NOW, ended=frozenset({churned})),
        "freshness",
        "snapshot_ts",
    )
    assert kept.outcome == "pass"
    other = check(
        check_feature_table(frame=frame, contract=CONTRACT, now=NOW, ended=frozenset({"CUST-999999"})),
        "freshness",
        "snapshot_ts",
    )
    assert (other.outcome, other.figure) == ("fail", pytest.approx(40 * 24.0))


def test_training_set_join_rules() -> None:
    frame = table(200).drop(columns="snapshot_ts")
    frame["event_timestamp"] = pd.Timestamp(NOW)
    frame["profile_defaulted"] = [True] * 5 + [False] * 195  # 97.5% matched < 98%
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)  # 203 rows / 200 keys = 1.015
    report = check_training_set(frame=frame, contract=CONTRACT)
    match = check(report, "join_match_rate", "customer_id")
    fanout = check(report, "join_fanout", "customer_id")
    assert (match.outcome, match.figure) == ("fail", pytest.approx(1 - 8 / 203))
    assert (fanout.outcome, fanout.figure) == ("fail", pytest.approx(203 / 200))
    ok = check_training_set(frame=frame.iloc[5:200], contract=CONTRACT, entity_rows=195)
    assert ok.passed
    no_flag = check_training_set(
        frame=frame.drop(columns=["profile_defaulted", "event_timestamp"]), contract=CONTRACT
    )
    assert outcomes(no_flag, "join_match_rate") == {"customer_id": "skip"}
    assert outcomes(no_flag, "join_fanout") == {"customer_id": "skip"}


def test_unusable_input() -> None:
    with pytest.raises(QualityInputError, match="has no rows"):
        check_feature_table(frame=table().iloc[:0], contract=CONTRACT, now=NOW)
    with pytest.raises(QualityInputError, match=r"lacks the column\(s\) \['snapshot_ts'\]"):
        check_feature_table(frame=table().drop(columns="snapshot_ts"), contract=CONTRACT, now=NOW)


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    clean = tmp_path / "clean.parquet"
    fresh = table()
    fresh["snapshot_ts"] = pd.Timestamp(datetime.now(UTC) - timedelta(minutes=5))
    fresh.to_parquet(clean)
    out = tmp_path / "quality.json"
    ok = runner.invoke(app, ["quality", "--home", str(tmp_path), "--table", str(clean), "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["passed"] is True
    broken = tmp_path / "broken.parquet"
    fresh.assign(seat_count=-1).to_parquet(broken)
    bad = runner.invoke(app, ["quality", "--home", str(tmp_path), "--table", str(broken), "--json", str(out)])
    assert bad.exit_code == 1
    document = json.loads(out.read_text())
    failed = [c for c in document["reports"][0]["checks"] if c["outcome"] == "fail"]
    assert [(c["rule"], c["target"], c["figure"]) for c in failed] == [("range", "seat_count", 400.0)]
    missing = runner.invoke(app, ["quality", "--home", str(tmp_path), "--table", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2
