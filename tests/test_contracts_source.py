"""The source contracts load, say what other stages need, and refuse broken files clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
