"""The CLI: garbage input ends in one paragraph and exit 1, never a traceback; contracts check exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.commands.common import console, err_console
from churnops.contracts.source_contract import load_source_contract

CUSTOMER_COLUMNS = load_source_contract("customers").column_names
HEADER = ",".join(CUSTOMER_COLUMNS).encode() + b"\n"
GOOD_ROW = ["CUST-000001", "Acme", "2026-01-15", "pro", "3", "education", "US", "organic", "true",
            "2026-02-01T10:00:00Z"]  # fmt: skip


def _landing(home: Path) -> Path:
    landing = home / "data" / "landing"
    landing.mkdir(parents=True)
    return landing


def _run(*args: str) -> tuple[int, str]:
    # Wide enough that Rich never wraps a path or a header in the middle. The consoles are created
    # once per process, so their width is pinned here rather than through $COLUMNS.
    saved = [(c, c._width) for c in (console, err_console)]
    for c, _ in saved:
        c.width = 400
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    finally:
        for c, width in saved:
            c._width = width
    return result.exit_code, result.output


def _good_customers(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CUSTOMER_COLUMNS)
        writer.writerow(GOOD_ROW)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("customers.csv", b"", "is empty"),
        ("customers.csv", b"\n\n  \n", "is empty"),
        ("customers.csv", bytes(range(256)) * 4, "is binary, not CSV text"),
        ("customers.csv", b"PAR1\x00\x01garbage", "is binary, not CSV text"),
        ("customers.csv", ",".join(GOOD_ROW).encode() + b"\n", "has no header line"),
        ("customers.csv", ";".join(CUSTOMER_COLUMNS).encode() + b"\n" + ";".join(GOOD_ROW).encode(),
         "is separated by ';', not commas"),
        ("customers.csv", "\t".join(CUSTOMER_COLUMNS).encode() + b"\n", "is separated by '\\t', not commas"),
        ("customers.csv", HEADER + b"a,b\n", "malformed rows (data row 1 has 2 fields, the header has 10)"),
        ("customers.csv", HEADER + b"CUST-1,\xff\xfe,x\n", "is not UTF-8 text"),
        ("customers.csv", (",".join(CUSTOMER_COLUMNS) + ",customer_id\n").encode(), "more than once"),
        ("customers.parquet", b"this is not parquet", "is not a Parquet file"),
    ],
)  # fmt: skip
def test_garbage_files_end_in_one_paragraph_and_exit_1(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    landing = _landing(tmp_path)
    (landing / name).write_bytes(content)
    code, output = _run("ingest", "--home", str(tmp_path))
    assert code == 1
    assert "Traceback" not in output
    paragraph = " ".join(output.split())
    assert paragraph.startswith("error: landing file")
    assert str(landing / name) in paragraph.replace(" ", "") or name in paragraph
    assert says in paragraph
    assert "expected a customers delivery" in paragraph
    assert output.strip().count("\n\n") == 0
    # Garbage is refused before anything is written.
    assert not (tmp_path / "data" / "lake").exists()


def test_a_garbage_file_stops_the_run_before_good_files_are_ingested(tmp_path: Path) -> None:
    landing = _landing(tmp_path)
    _good_customers(landing / "customers.csv")
    (landing / "billing.csv").write_bytes(b"")
    code, output = _run("ingest", "--home", str(tmp_path))
    assert code == 1 and "billing.csv is empty" in " ".join(output.split())
    assert not (tmp_path / "data" / "lake").exists()


def test_no_error_quotes_a_pii_value(tmp_path: Path) -> None:
    landing = _landing(tmp_path)
    row = [*GOOD_ROW[:1], "Secret Holdings Ltd", *GOOD_ROW[2:]]
    for content in (",".join(row), ";".join(row), ",".join(row[:4])):
        (landing / "customers.csv").write_text(content + "\n", encoding="utf-8")
        code, output = _run("ingest", "--home", str(tmp_path))
        flat = " ".join(output.split())
        assert code == 1 and "landing file" in flat
        assert "Secret Holdings" not in output
        assert "[redacted: pii]" in flat
    # A source with no PII column is still quoted as it is.
    (landing / "customers.csv").unlink()
    (landing / "billing.csv").write_text("INV-1,CUST-000001,2026-01-01\n", encoding="utf-8")
    code, output = _run("ingest", "--home", str(tmp_path))
    assert code == 1 and "'INV-1,CUST-000001,2026-01-01'" in " ".join(output.split())


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_header_only_file_is_an_empty_source_with_or_without_a_final_line_break(
    tmp_path: Path, ending: bytes
) -> None:
    landing = _landing(tmp_path)
    (landing / "customers.csv").write_bytes(HEADER.rstrip(b"\n") + ending)
    code, output = _run("ingest", "--home", str(tmp_path), "--only", "customers", "--backfill")
    assert code == 0, output
    assert "Traceback" not in output and "malformed" not in output


def test_no_landing_files_and_unknown_sources_are_clear_errors(tmp_path: Path) -> None:
    code, output = _run("ingest", "--home", str(tmp_path))
    assert code == 1 and "does not exist" in output and "churnops generate" in " ".join(output.split())
    _landing(tmp_path)
    code, output = _run("ingest", "--home", str(tmp_path))
    assert code == 1 and "has no file for customers" in " ".join(output.split())
    code, output = _run("ingest", "--home", str(tmp_path), "--only", "orders")
    assert code == 1 and "unknown source(s) orders" in " ".join(output.split())


def test_ingest_prints_a_table_and_a_failed_batch_exits_1(tmp_path: Path) -> None:
    landing = _landing(tmp_path)
    _good_customers(landing / "customers.csv")
    code, output = _run("ingest", "--home", str(tmp_path), "--only", "customers", "--backfill")
    assert code == 0, output
    assert "customers" in output and "received" in output and "ok" in output
    assert "backfill, freshness not enforced (requested (--backfill))" in " ".join(output.split())
    # The same customer file, stale and forced live: freshness fails the batch.
    other = tmp_path / "other"
    other.mkdir()
    with (other / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CUSTOMER_COLUMNS)
        writer.writerow([*GOOD_ROW[:2], "2019-06-01", *GOOD_ROW[3:-1], "2020-01-01T00:00:00Z"])
    code, output = _run("ingest", "--home", str(tmp_path), "--source", str(other), "--live")
    flat = " ".join(output.split())
    assert code == 1 and "Traceback" not in output
    assert "failed" in flat and "freshness ingested_at" in flat and "beyond the limit of 26h" in flat


def test_contracts_check_exit_codes_and_json(tmp_path: Path) -> None:
    landing = _landing(tmp_path)
    _good_customers(landing / "customers.csv")
    assert _run("ingest", "--home", str(tmp_path), "--backfill")[0] == 0
    code, output = _run("contracts", "check", "--home", str(tmp_path), "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["passed"] is True
    assert {r["source"] for r in report["results"]} == {
        "customers", "usage_events", "support_tickets", "billing", "churn_labels",
    }  # fmt: skip
    code, output = _run("contracts", "check", "--home", str(tmp_path), "--source", "customers")
    assert code == 0 and "completeness" in output and "skipped" in output
    # A live batch makes freshness count: the lake's newest customer row is years old.
    other = tmp_path / "other"
    other.mkdir()
    with (other / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CUSTOMER_COLUMNS)
        writer.writerow(["CUST-000002", GOOD_ROW[1], "2019-06-01", *GOOD_ROW[3:-1], "2020-01-01T00:00:00Z"])
    assert _run("ingest", "--home", str(tmp_path), "--source", str(other), "--backfill")[0] == 0
    state = tmp_path / "data" / "lake" / "customers" / "_load_state.json"
    state.write_text(json.dumps({"mode": "live", "batch": "manual"}), encoding="utf-8")
    code, output = _run("contracts", "check", "--home", str(tmp_path), "--source", "customers", "--json")
    assert code == 1
    (freshness,) = [r for r in json.loads(output)["results"] if r["rule"] == "freshness"]
    assert freshness["passed"] is False and freshness["threshold"] == 26.0
    code, output = _run("contracts", "check", "--home", str(tmp_path), "--source", "nope")
    assert code == 1 and "unknown source 'nope'" in output
