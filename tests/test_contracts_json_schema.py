"""The source contracts as JSON Schema: generated records validate; a broken one does not."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

from churnops.contracts.json_schema import DRAFT, contract_json_schema
from churnops.contracts.source_contract import SOURCE_NAMES, load_source_contracts
from churnops.synthetic.generate import generate

CONTRACTS = load_source_contracts()


def json_value(value: Any) -> Any:
    """A generated value as a producer would send it in JSON."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def generated_records(
    folder: Path, *, customers: int = 100, days: int = 20
) -> dict[str, list[dict[str, Any]]]:
    """Every generated record of each source, as JSON objects (nulls left out).

    The default size is the smallest at which this seed gives every source some rows.
    """
    generate(out_dir=folder, customers=customers, days=days, seed=11, start=date(2026, 10, 1), fmt="parquet")
    return {
        source: [
            {k: json_value(v) for k, v in row.items() if v is not None}
            for row in pq.read_table(folder / f"{source}.parquet").to_pylist()
        ]
        for source in SOURCE_NAMES
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return generated_records(tmp_path_factory.mktemp("generated"))


def _validator(source: str) -> Draft202012Validator:
    schema = contract_json_schema(CONTRACTS[source])
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_every_generated_record_validates(records: dict[str, list[dict[str, Any]]], source: str) -> None:
    validator = _validator(source)
    assert records[source], f"the generator wrote no {source} rows"
    for row in records[source]:
        errors = [e.message for e in validator.iter_errors(row)]
        assert errors == [], (row, errors)


def test_the_schema_says_what_the_contract_says() -> None:
    schema = contract_json_schema(CONTRACTS["billing"], schema_id="http://x/v1/schemas/billing")
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "http://x/v1/schemas/billing"
    assert (schema["x-contract-version"], schema["x-primary-key"]) == (1, ["invoice_id"])
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert (
        props["invoice_id"]["type"] == "string" and props["invoice_id"]["pattern"] == "^(?:^INV-[0-9]{7}$)$"
    )
    assert props["amount"]["type"] == "number" and props["amount"]["minimum"] == 0
    assert props["invoice_date"]["format"] == "date-time"
    assert contract_json_schema(CONTRACTS["customers"])["properties"]["signup_date"]["format"] == "date"
    assert props["ingested_at"]["format"] == "date-time"
    assert set(props["payment_status"]["enum"]) >= {"paid", "failed", "refunded"}
    nullable = [c.name for c in CONTRACTS["billing"].columns if c.nullable]
    assert all("null" in props[name]["type"] for name in nullable)
    assert schema["required"] == [c.name for c in CONTRACTS["billing"].columns if not c.nullable]


@pytest.mark.parametrize(
    ("change", "keyword"),
    [
        ({"event_type": "teleport"}, "enum"),
        ({"event_type": 3}, "type"),  # and "enum": 3 is not one of the names either
        ({"watch_minutes": "ten"}, "type"),
        ({"watch_minutes": 2000.0}, "maximum"),
        ({"event_id": "event-1"}, "pattern"),
        ({"event_timestamp": "yesterday"}, "format"),
        ({"event_timestamp": None}, "type"),
        ({"colour": "red"}, "additionalProperties"),
    ],
)
def test_a_broken_record_fails(
    records: dict[str, list[dict[str, Any]]], change: dict[str, Any], keyword: str
) -> None:
    row = {**records["usage_events"][0], **change}
    failed = [e.validator for e in _validator("usage_events").iter_errors(row)]
    assert keyword in failed and set(failed) <= {keyword, "enum"}


def test_a_record_without_a_required_column_fails(records: dict[str, list[dict[str, Any]]]) -> None:
    row = {k: v for k, v in records["usage_events"][0].items() if k != "customer_id"}
    assert [e.validator for e in _validator("usage_events").iter_errors(row)] == ["required"]
