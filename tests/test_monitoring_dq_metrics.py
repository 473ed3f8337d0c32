"""Data-quality gauges: after an ingest of generated data with known faults, each gauge carries the
figures of that ingest, recomputed here from the ingestion log and the quarantine files; the same
figures reach `churnops metrics --textfile` and the service's `/metrics`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.log import read_log
from churnops.monitoring.dq_metrics import DataQualityCollector, latest_batches
from churnops.monitoring.quality import QualityCheck, QualityReport, write_quality_json
from churnops.serving.app import create_app
from churnops.serving.settings import ServingSettings

CONTRACTS = load_source_contracts()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("dq-home")
    runner = CliRunner()
    generated = runner.invoke(
        app,
        ["generate", "--home", str(home), "--customers", "80", "--days", "20", "--start", "2026-01-01",
         "--seed", "5", "--dirty-rate", "0.05"],
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    ingested = runner.invoke(app, ["ingest", "--home", str(home)])
    # At this fault rate the small support_tickets file fails its batch checks (exit 1): its
    # figures are those of a batch that reached nothing, and it has no delivery to be fresh from.
    assert ingested.exit_code == 1 and "support_tickets (support_tickets.csv)" in ingested.output
    return home


@pytest.fixture(scope="module")
def now(home: Path) -> datetime:
    """An hour after the ingest finished: every source is within its freshness bound."""
    finished = max(row["finished_at"] for row in read_log(home / "data" / "ingestion_log.db"))
    return datetime.fromisoformat(finished) + timedelta(hours=1)


@pytest.fixture(scope="module")
def expected(home: Path, now: datetime) -> dict[str, dict[str, float]]:
    """Every source's figures, from its log row and quarantine file (one batch per source here)."""
    figures = {}
    for row in read_log(home / "data" / "ingestion_log.db"):
        received = row["received"]
        rules = (
            pd.read_parquet(row["quarantine_file"])["_rule"]
            if row["quarantine_file"]
            else pd.Series([], dtype=str)
        )
        incomplete = int(rules.isin(["missing_column", "null_key", "not_null"]).sum())
        inconsistent = int((rules.str.startswith("unknown_") | (rules == "future_timestamp")).sum())
        delivered = datetime.fromisoformat(row["finished_at"]) if row["status"] == "ok" else None
        hours = math.inf if delivered is None else (now - delivered).total_seconds() / 3600
        limit = CONTRACTS[row["source"]].quality.freshness.max_delay.total_seconds() / 3600
        scores = {
            "completeness_percent": 100 * (received - incomplete) / received,
            "validity_percent": 100 * row["accepted"] / received,
            "uniqueness_percent": 100 * (received - row["duplicates"]) / received,
            "consistency_percent": 100 * (received - inconsistent) / received,
        }
        figures[row["source"]] = {
            **scores,
            "freshness_hours": hours,
            "freshness_max_hours": limit,
            "duplicate_ratio": row["duplicates"] / received,
            "quarantine_ratio": row["quarantined"] / received,
            "score_percent": (sum(scores.values()) + (100 if hours <= limit else 0)) / 5,
        }
    return figures


def _scrape(home: Path, now: datetime) -> Samples:
    registry = CollectorRegistry()
    registry.register(DataQualityCollector(home=home, clock=lambda: now))
    return _samples(generate_latest(registry).decode())


def test_the_generated_faults_reach_every_dimension(
    home: Path, expected: dict[str, dict[str, float]]
) -> None:
    assert set(expected) == set(CONTRACTS)
    statuses = {row["source"]: row["status"] for row in read_log(home / "data" / "ingestion_log.db")}
    assert statuses == {**dict.fromkeys(CONTRACTS, "ok"), "support_tickets": "failed"}
    assert expected["support_tickets"]["validity_percent"] == 0
    assert expected["support_tickets"]["freshness_hours"] == math.inf
    assert min(f["completeness_percent"] for f in expected.values()) < 100
    assert min(f["consistency_percent"] for f in expected.values()) < 100
    assert max(f["duplicate_ratio"] for f in expected.values()) > 0
    assert max(f["quarantine_ratio"] for f in expected.values()) > 0


def test_each_source_gauge_is_the_last_ingest_figure(
    home: Path, now: datetime, expected: dict[str, dict[str, float]]
) -> None:
    samples = _scrape(home, now)
    for source, figures in expected.items():
        for name, value in figures.items():
            got = samples[(f"churnops_dq_source_{name}", (("source", source),))]
            assert got == pytest.approx(value, rel=1e-12), (source, name)
    log = {row["source"]: row for row in read_log(home / "data" / "ingestion_log.db")}
    for source, row in log.items():
        for kind in ("received", "accepted", "quarantined", "duplicates"):
            labels = (("rows", kind), ("source", source))
            assert samples[("churnops_dq_source_last_batch_rows", labels)] == row[kind]
    assert samples[("churnops_dq_collect_errors", (("part", "sources"),))] == 0


def test_a_fresh_source_past_its_freshness_bound_loses_a_fifth_of_its_score(
    home: Path, now: datetime, expected: dict[str, dict[str, float]]
) -> None:
    late = now + timedelta(days=30)
    samples = _scrape(home, late)
    for source, figures in expected.items():
        assert samples[("churnops_dq_source_score_percent", (("source", source),))] == pytest.approx(
            (figures["score_percent"] * 5 - (100 if figures["freshness_hours"] < math.inf else 0)) / 5
        )
        hours = samples[("churnops_dq_source_freshness_hours", (("source", source),))]
        assert hours == pytest.approx(figures["freshness_hours"] + 30 * 24)


def test_the_textfile_parses_and_holds_the_same_figures(home: Path, tmp_path: Path) -> None:
    textfile = tmp_path / "collector" / "churnops.prom"
    result = CliRunner().invoke(app, ["metrics", "--home", str(home), "--textfile", str(textfile)])
    assert result.exit_code == 0, result.output
    written = _samples(textfile.read_text())
    # The command reads the clock itself: every figure but the age equals a scrape now.
    scraped = _scrape(home, datetime.now(UTC))
    age = "churnops_dq_source_freshness_hours"
    assert {k: v for k, v in written.items() if k[0] != age} == {
        k: v for k, v in scraped.items() if k[0] != age
    }
    assert not list(textfile.parent.glob(".*"))  # no temporary left behind
    printed = CliRunner().invoke(app, ["metrics", "--home", str(home)])
    assert "churnops_dq_source_validity_percent" in printed.output


def test_the_latest_ok_batch_sets_freshness_and_the_latest_settled_one_the_figures() -> None:
    rows = [
        {"id": "a/1", "source": "a", "status": "ok", "finished_at": "2026-01-01T00:00:00+00:00"},
        {"id": "a/2", "source": "a", "status": "failed", "finished_at": "2026-01-02T00:00:00+00:00"},
        {"id": "a/3", "source": "a", "status": "interrupted", "finished_at": "2026-01-03T00:00:00+00:00"},
        {"id": "b/1", "source": "b", "status": "failed", "finished_at": "2026-01-01T00:00:00+00:00"},
        {"id": "c/1", "source": "c", "status": "running", "finished_at": None},
    ]
    latest = latest_batches(rows)
    assert {s: (last["id"], ok and ok["id"]) for s, (last, ok) in latest.items()} == {
        "a": ("a/2", "a/1"),
        "b": ("b/1", None),
    }


def test_features_age_and_quality_results_are_exported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    contract = load_feature_contract()
    table = home / "data" / "features" / f"{contract.name}_v{contract.version}"
    newest = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    frame = pd.DataFrame({"snapshot_ts": pd.to_datetime([newest - timedelta(days=1), newest], utc=True)})
    (table / "date=2026-03-01").mkdir(parents=True)
    frame.to_parquet(table / "date=2026-03-01" / "data.parquet")
    checks = (
        QualityCheck("null_rate", "logins_30d", 0.25, 0.05, "fail", "25% null"),
        QualityCheck("range", "logins_30d", 0.0, 0.0, "pass", "in range"),
        QualityCheck("outliers", "logins_30d", 3.0, 9.0, "flag", "3 above"),
        QualityCheck("join_fanout", "customer_id", math.nan, 1.0, "skip", "unknown"),
    )
    write_quality_json(
        reports=[QualityReport(scope="feature_table", rows=10, checks=checks)],
        path=home / "reports" / "quality.json",
    )
    samples = _scrape(home, datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    assert samples[("churnops_dq_feature_snapshot_age_hours", (("table", table.name),))] == 2.5
    assert samples[("churnops_dq_feature_checks_failed", (("scope", "feature_table"),))] == 1
    passed = {k[1]: v for k, v in samples.items() if k[0] == "churnops_dq_feature_check_passed"}
    assert passed == {
        (("rule", "null_rate"), ("scope", "feature_table"), ("target", "logins_30d")): 0,
        (("rule", "outliers"), ("scope", "feature_table"), ("target", "logins_30d")): 1,
        (("rule", "range"), ("scope", "feature_table"), ("target", "logins_30d")): 1,
    }
    null_rate = (("rule", "null_rate"), ("scope", "feature_table"), ("target", "logins_30d"))
    assert samples[("churnops_dq_feature_check_figure", null_rate)] == 0.25
    # No ingestion log yet: no source gauges, and nothing counted as an error.
    assert not [k for k in samples if k[0].startswith("churnops_dq_source_")]
    assert samples[("churnops_dq_collect_errors", (("part", "features"),))] == 0


def test_an_unreadable_part_is_reported_and_the_rest_still_exported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "reports").mkdir(parents=True)
    (home / "reports" / "quality.json").write_text("{not json")
    (home / "data").mkdir()
    (home / "data" / "ingestion_log.db").write_text("not a database")
    samples = _scrape(home, datetime(2026, 3, 1, tzinfo=UTC))
    assert samples[("churnops_dq_collect_errors", (("part", "sources"),))] == 1
    assert samples[("churnops_dq_collect_errors", (("part", "features"),))] == 1


def test_the_service_exports_them_on_metrics(home: Path, tmp_path: Path) -> None:
    settings = ServingSettings(
        predictions_dir=tmp_path / "predictions", audit_db=tmp_path / "audit.db", data_quality_home=home
    )
    service = create_app(tracking_uri="sqlite:///unused.db", settings=settings, store_factory=_never)
    # No lifespan: /metrics answers from the registry alone, before any model or store is opened.
    response = TestClient(service).get("/metrics")
    assert response.status_code == 200
    served = {k: v for k, v in _samples(response.text).items() if k[0].startswith("churnops_dq_")}
    age = "churnops_dq_source_freshness_hours"
    scraped = _scrape(home, datetime.now(UTC))
    assert {k: v for k, v in served.items() if k[0] != age} == {
        k: v for k, v in scraped.items() if k[0] != age
    }
    assert {k for k in served if k[0] == age} == {k for k in scraped if k[0] == age}


def _never() -> Any:
    raise AssertionError("the store is opened at start-up only")
