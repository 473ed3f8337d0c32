"""The feature contract loads, and a broken one is refused with the file, key path and expectation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from churnops.contracts import ContractError
from churnops.contracts.feature_contract import DEFAULT_FEATURE_CONTRACT, load_feature_contract


def _broken(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(DEFAULT_FEATURE_CONTRACT.read_text())
    edit(raw)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_contract_loads() -> None:
    contract = load_feature_contract()
    assert (contract.name, contract.version) == ("customer_profile", 1)
    assert contract.time.lookback == timedelta(days=30)
    assert contract.time.ttl == timedelta(days=1)
    assert contract.drift.warn == 0.1 and contract.drift.block == 0.2
    assert contract.entity.join_key == "customer_id"
    assert contract.categorical_features == ["plan_type"]
    non_zero = {"plan_type", "days_since_last_event"}
    assert all(v == 0 for k, v in contract.defaults.items() if k not in non_zero)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda raw: raw["drift"].update(wran=0.1), "drift.wran"),
        (lambda raw: raw["time"].update(lookback="thirty days"), "time.lookback"),
        (lambda raw: raw["drift"].update(warn=0.3), "drift.warn (0.3) must be below drift.block"),
        (lambda raw: raw["features"][0].update(dtype="integer"), "features.0.dtype"),
        (lambda raw: raw["features"][0].update(source="orders"), "source 'orders' is not listed"),
        (lambda raw: raw.pop("parity"), "parity: Field required"),
    ],
)
def test_broken_contract_is_refused_with_key_path(tmp_path: Path, edit, expected: str) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(ContractError) as info:
        load_feature_contract(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="does not exist"):
        load_feature_contract(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("overview: [unclosed")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_feature_contract(bad)
