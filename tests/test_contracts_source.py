"""The source contracts load, say what other stages need, and refuse broken files clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from churnops.contracts.errors import ContractError
from churnops.contracts.source_contract import (
    SOURCE_NAMES,
    SOURCES_DIR,
    load_source_contract,
    load_source_contracts,
)


def test_five_contracts_load_in_ingestion_order() -> None:
    contracts = load_source_contracts()
    assert list(contracts) == ["customers", "usage_events", "support_tickets", "billing", "churn_labels"]
    assert tuple(contracts) == SOURCE_NAMES
    for name, contract in contracts.items():
        assert contract.name == name
        assert contract.version == 1
        assert contract.owner.email.endswith("@churnops.dev")
        assert contract.consumers
        assert contract.schema_.ingested_at == "ingested_at"
        assert contract.column("ingested_at").type == "timestamp"
        assert not contract.column(contract.partition_column).nullable


def test_contract_columns_match_the_landing_schemas() -> None:
    contracts = load_source_contracts()
    assert contracts["customers"].column_names == [
        "customer_id", "company_name", "signup_date", "plan_type", "seat_count", "industry", "country",
        "marketing_source", "is_active", "ingested_at",
    ]  # fmt: skip
    assert contracts["usage_events"].column_names == [
        "event_id", "customer_id", "event_timestamp", "event_type", "course_id", "watch_minutes",
        "quiz_score", "ingested_at",
    ]  # fmt: skip
    assert contracts["billing"].column("amount").minimum == 0
    assert contracts["billing"].column("payment_status").enum == ["paid", "failed", "refunded"]
    assert contracts["support_tickets"].column("satisfaction_score").type == "int"
    assert {n: c.primary_key for n, c in contracts.items()} == {
        "customers": ["customer_id"],
        "usage_events": ["event_id"],
        "support_tickets": ["ticket_id"],
        "billing": ["invoice_id"],
        "churn_labels": ["customer_id"],
    }


def test_only_customers_holds_pii() -> None:
    contracts = load_source_contracts()
    assert {n: c.pii_columns for n, c in contracts.items()} == {
        "customers": ["company_name"],
        "usage_events": [],
        "support_tickets": [],
        "billing": [],
        "churn_labels": [],
    }


def _broken_copy(tmp_path: Path, old: str, new: str, name: str = "customers") -> Path:
    folder = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, folder)
    path = folder / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return folder


def test_a_typo_key_is_refused_with_file_key_path_and_expectation(tmp_path: Path) -> None:
    folder = _broken_copy(
        tmp_path, "      nullable: false\n      pii: true", "      nulable: false\n      pii: true"
    )
    with pytest.raises(ContractError) as err:
        load_source_contracts(directory=folder)
    message = str(err.value)
    assert str(folder / "customers.yaml") in message
    assert "schema.columns.1.nulable" in message
    assert "Extra inputs are not permitted" in message


def test_a_wrong_type_is_refused_naming_the_key(tmp_path: Path) -> None:
    folder = _broken_copy(tmp_path, "max_delay: 26h", "max_delay: soon", name="usage_events")
    with pytest.raises(ContractError) as err:
        load_source_contract("usage_events", path=folder / "usage_events.yaml")
    message = str(err.value)
    assert "quality.freshness.max_delay" in message
    assert "expected a duration like '30d'" in message
    assert "'soon'" in message


def test_a_check_on_an_unknown_column_is_refused(tmp_path: Path) -> None:
    old = "    column: amount\n    threshold: 0.95\n  - type: range"
    folder = _broken_copy(tmp_path, old, old.replace("amount", "amont"), name="billing")
    with pytest.raises(ContractError, match=r"testing.1: 'amont' is not a column of schema.columns"):
        load_source_contract("billing", path=folder / "billing.yaml")


def test_an_unknown_check_type_is_refused(tmp_path: Path) -> None:
    old = "  - type: not_null\n    column: churn_date"
    folder = _broken_copy(tmp_path, old, old.replace("not_null", "not_nul"), name="churn_labels")
    with pytest.raises(ContractError) as err:
        load_source_contract("churn_labels", path=folder / "churn_labels.yaml")
    assert "testing.1" in str(err.value)
    assert "not_null" in str(err.value) and "custom" in str(err.value)


def test_a_contract_for_another_source_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    folder = _broken_copy(tmp_path, "name: billing", "name: invoices", name="billing")
    with pytest.raises(ContractError, match=r"name: expected 'billing', got 'invoices'"):
        load_source_contract("billing", path=folder / "billing.yaml")
    with pytest.raises(ContractError, match=r"does not exist: expected a YAML file for source 'nope'"):
        load_source_contract("nope", path=tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ContractError, match=r"is not valid YAML"):
        load_source_contract("bad", path=tmp_path / "bad.yaml")


def test_an_edited_contract_is_read_again(tmp_path: Path) -> None:
    folder = _broken_copy(tmp_path, "version: 1", "version: 1")
    path = folder / "customers.yaml"
    assert load_source_contract("customers", path=path).version == 1
    path.write_text(
        path.read_text(encoding="utf-8").replace("version: 1", "version: 22", 1), encoding="utf-8"
    )
    assert load_source_contract("customers", path=path).version == 22


def _col(raw: dict, name: str) -> dict:
    return next(c for c in raw["schema"]["columns"] if c["name"] == name)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda raw: raw["schema"]["columns"].append(dict(_col(raw, "amount"))),
            "schema.columns: duplicated names ['amount']",
        ),
        (
            lambda raw: raw["schema"].update(primary_key=["nope"]),
            "schema.primary_key: 'nope' is not a column",
        ),
        (
            lambda raw: _col(raw, "invoice_id").update(nullable=True),
            "schema.primary_key: key column 'invoice_id' must be nullable: false",
        ),
        (
            lambda raw: raw["schema"].update(event_time="amount"),
            "schema.event_time: 'amount' must be a date or timestamp column",
        ),
        (
            lambda raw: (
                raw["schema"].update(ingested_at="invoice_date")
                or _col(raw, "invoice_date").update(type="date")
            ),
            "schema.ingested_at: 'invoice_date' must be a timestamp column",
        ),
        (
            lambda raw: raw["quality"].update(completeness={"nope": 90}),
            "quality.completeness: 'nope' is not a column",
        ),
        (
            lambda raw: raw["quality"]["uniqueness"].update(columns=["nope"]),
            "quality.uniqueness.columns: 'nope' is not a column",
        ),
        (
            lambda raw: raw["quality"]["freshness"].update(column="currency"),
            "quality.freshness.column: 'currency' must be a date or timestamp column",
        ),
        (
            lambda raw: raw["delivery"]["partitioning"].update(column="nope"),
            "delivery.partitioning.column: 'nope' is not a column",
        ),
        (
            lambda raw: _col(raw, "ingested_at").update(nullable=True),
            "schema.ingested_at: column 'ingested_at' must be nullable: false",
        ),
        (
            lambda raw: _col(raw, "invoice_date").update(nullable=True),
            "delivery.partitioning.column: column 'invoice_date' must be nullable: false",
        ),
        (
            lambda raw: _col(raw, "customer_id").update(references="billing.invoice_id"),
            "column 'customer_id': references must point at another source",
        ),
        (
            lambda raw: raw["testing"][3].update(column="amount"),
            "testing.3: column 'amount' has no enum in schema.columns",
        ),
        (
            lambda raw: raw["testing"][2].update(column="currency"),
            "testing.2: column 'currency' has no minimum or maximum",
        ),
        (
            lambda raw: raw["testing"].append({"type": "unique", "columns": ["invoice_id"], "threshold": 1}),
            "testing.6: the primary key's uniqueness belongs in quality.uniqueness",
        ),
        (
            lambda raw: raw["testing"].append({"type": "unique", "columns": ["nope"], "threshold": 1}),
            "testing.6: 'nope' is not a column",
        ),
        (
            lambda raw: raw["quality"].update(completeness={"amount": 90}),
            "columns ['amount'] are in both quality.completeness and a not_null check: keep one",
        ),
        (
            lambda raw: raw["testing"].append(dict(raw["testing"][5])),
            "testing: duplicated check names ['failed_payment_share']",
        ),
    ],
)
def test_each_cross_check_is_refused_with_its_message(tmp_path: Path, edit, message: str) -> None:
    raw = yaml.safe_load((SOURCES_DIR / "billing.yaml").read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "billing.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ContractError) as err:
        load_source_contract("billing", path=path)
    assert message in str(err.value)
