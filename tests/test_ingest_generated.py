"""`churnops generate --dirty-rate 0.02`, then `churnops ingest`: every fault is caught, no row lost."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.log import read_log
from churnops.storage.lake import read_source

RULE_OF_KIND = {
    "null_key": "null_key",
    "unknown_enum": "accepted_values",
    "negative_amount": "range",
    "malformed_timestamp": "type",
    "unknown_customer": "unknown_customer",
    "future_timestamp": "future_timestamp",
}
CONTRACTS = load_source_contracts()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("dirty-home")
    runner = CliRunner()
    generated = runner.invoke(
        app,
        ["generate", "--home", str(home), "--customers", "200", "--days", "45", "--start", "2026-01-01",
         "--seed", "11", "--dirty-rate", "0.02"],
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    ingested = runner.invoke(app, ["ingest", "--home", str(home)])
    assert ingested.exit_code == 0, ingested.output
    data = home / "data"
    manifest = json.loads((data / "landing" / "_manifest.json").read_text(encoding="utf-8"))
    log = {row["source"]: row for row in read_log(data / "ingestion_log.db")}
    quarantine = {
        source: pq.read_table(row["quarantine_file"]).to_pandas()
        if row["quarantine_file"]
        else pd.DataFrame()
        for source, row in log.items()
    }
    return {
        "data": data,
        "manifest": manifest,
        "log": log,
        "quarantine": quarantine,
        "output": ingested.output,
    }


def _faults(run: dict[str, Any], *kinds: str) -> list[dict[str, Any]]:
    return [f for f in run["manifest"]["faults"] if f["kind"] in kinds]


def test_the_generator_injected_every_kind(run: dict[str, Any]) -> None:
    assert {f["kind"] for f in run["manifest"]["faults"]} == {*RULE_OF_KIND, "duplicate_row", "late_arrival"}
    assert all(row["status"] == "ok" and row["mode"] == "backfill" for row in run["log"].values())
    assert "backfill, freshness not enforced" in run["output"]


def test_quarantine_holds_exactly_the_broken_rows_with_the_right_rule(run: dict[str, Any]) -> None:
    expected = {
        (f["source"], f["row"]): (RULE_OF_KIND[f["kind"]], f["column"]) for f in _faults(run, *RULE_OF_KIND)
    }
    found = {}
    for source, table in run["quarantine"].items():
        for row in table.itertuples():
            found[(source, row._2)] = (row._4, row._3)
    assert found == expected
    for source, table in run["quarantine"].items():
        assert (table["_file"] == str(run["data"] / "landing" / f"{source}.csv")).all()


def test_no_row_is_lost(run: dict[str, Any]) -> None:
    landing = run["data"] / "landing"
    for source, contract in CONTRACTS.items():
        raw = pacsv.read_csv(
            landing / f"{source}.csv",
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(contract.column_names, "string")),
        ).to_pandas()
        log = run["log"][source]
        assert log["received"] == len(raw)
        assert log["received"] == log["accepted"] + log["quarantined"] + log["duplicates"]
        quarantined_rows = set(run["quarantine"][source]["_row"]) if log["quarantined"] else set()
        assert len(quarantined_rows) == log["quarantined"]
        kept = raw.drop(index=[r - 1 for r in quarantined_rows])
        key = contract.primary_key[0]
        lake = read_source(run["data"] / "lake", source)
        assert len(lake) == log["accepted"]
        assert sorted(lake[key]) == sorted(set(kept[key]))
        assert (
            log["duplicates"]
            == len(kept) - kept[key].nunique()
            == len(_faults_of(run, source, "duplicate_row"))
        )


def _faults_of(run: dict[str, Any], source: str, kind: str) -> list[dict[str, Any]]:
    return [f for f in run["manifest"]["faults"] if f["source"] == source and f["kind"] == kind]


def test_late_arrivals_land_and_are_counted(run: dict[str, Any]) -> None:
    late = _faults(run, "late_arrival")
    assert late
    lateness = pd.Timedelta(load_feature_contract().time.allowed_lateness)
    for source in {f["source"] for f in late}:
        contract = CONTRACTS[source]
        keys = {f["key"] for f in late if f["source"] == source}
        lake = read_source(run["data"] / "lake", source).set_index(contract.primary_key[0])
        delay = lake["ingested_at"] - lake[contract.schema_.event_time]
        assert set(lake.index[delay > lateness]) == keys
        assert run["log"][source]["late"] == len(keys)
    assert Counter(f["source"] for f in late) == {
        s: row["late"] for s, row in run["log"].items() if row["late"]
    }


def test_company_names_stay_in_the_customers_table(run: dict[str, Any]) -> None:
    lake = run["data"] / "lake"
    names = set(read_source(lake, "customers")["company_name"])
    assert names
    for source, table in run["quarantine"].items():
        if len(table):
            assert not names & set(table.to_numpy().ravel().tolist()), source
    for source in CONTRACTS:
        if source != "customers":
            assert "company_name" not in read_source(lake, source).columns


def test_contracts_check_passes_on_the_ingested_lake(run: dict[str, Any]) -> None:
    home = run["data"].parent
    result = CliRunner().invoke(app, ["contracts", "check", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] is True
    freshness = [r for r in report["results"] if r["rule"] == "freshness"]
    assert len(freshness) == 5 and all(r["skipped"] for r in freshness)


def test_ingest_again_skips_every_file(run: dict[str, Path]) -> None:
    home = Path(run["data"]).parent
    lake = Path(run["data"]) / "lake"
    before = {p: p.read_bytes() for p in sorted(lake.rglob("*.parquet"))}
    result = CliRunner().invoke(app, ["ingest", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped: this exact file") == 5
    assert {p: p.read_bytes() for p in sorted(lake.rglob("*.parquet"))} == before
