"""The one table of type facts: every contract type a feature uses has them, and they resolve."""

from __future__ import annotations

from typing import get_args

import pandas as pd
import pyarrow as pa
import pytest

from churnops.contracts.dtypes import TYPES
from churnops.contracts.feature_contract import Dtype, load_feature_contract


def test_every_stored_contract_type_has_facts() -> None:
    # `timestamp` is a contract type no feature uses and no stage stores; all others have facts.
    assert set(TYPES) == set(get_args(Dtype)) - {"timestamp"}


@pytest.mark.parametrize(
    ("dtype", "arrow", "frame"),
    [
        ("int64", pa.int64(), "int64"),
        ("float64", pa.float64(), "float64"),
        ("string", pa.string(), "object"),
        ("bool", pa.bool_(), "bool"),
    ],
)
def test_the_names_resolve_to_the_libraries_types(dtype: str, arrow: pa.DataType, frame: str) -> None:
    facts = TYPES[dtype]
    assert facts.arrow_type == arrow
    assert pd.Series([], dtype=facts.numpy).dtype == frame
    assert pa.array([], arrow).to_pandas().dtype == frame


def test_features_and_the_entity_read_their_types_from_the_table() -> None:
    contract = load_feature_contract()
    assert contract.entity.types is TYPES[contract.entity.dtype]
    assert all(f.types is TYPES[f.dtype] for f in contract.features)
