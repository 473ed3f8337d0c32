"""Every system holding a feature agrees with the contract's one table of type facts.

For each feature of the contract: the offline table's Parquet column, the type each generated
SQL plan returns, the Feast field and the model input's column all have the types `TYPES` names.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_features_lake import CONTRACT, START, random_records, write_lake

from churnops.features import compute
from churnops.features.build import build_features
from churnops.features.definitions import build_definitions
from churnops.features.table import list_partitions, partition_path, read_table
from churnops.storage.duck import duckdb_connection
from churnops.storage.times import to_us
from churnops.training.models import model_input

DAYS = 12
UNTIL = START + timedelta(days=DAYS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dtypes")
    write_lake(root / "lake", random_records(customers=15, days=DAYS, seed=4))
    build_features(lake_dir=root / "lake", features_dir=root / "features", contract=CONTRACT, until=UNTIL)
    return root / "lake", root / "features"


def test_the_parquet_schema_has_the_tables_arrow_types(built: tuple[Path, Path]) -> None:
    _, features_dir = built
    day = list_partitions(features_dir, CONTRACT)[-1]
    schema = pq.read_schema(partition_path(features_dir, CONTRACT, day))
    for f in CONTRACT.features:
        assert schema.field(f.name).type == f.types.arrow_type, f.name


@pytest.mark.parametrize("plan", ["grid", "exact", "snapshot"])
def test_every_sql_plan_casts_to_the_tables_sql_types(built: tuple[Path, Path], plan: str) -> None:
    lake_dir, _ = built
    at = to_us(UNTIL) if plan == "grid" else to_us(UNTIL) - 3_600_000_000
    with duckdb_connection() as con:
        present = compute.register_sources(con, lake_dir=lake_dir, contract=CONTRACT)
        con.register("t", pa.table({"customer_id": ["c"], compute.KEY_TS: pa.array([at], pa.int64())}))
        con.execute(f"CREATE TEMP TABLE {compute.TARGETS} AS SELECT * FROM t")
        sql = {
            "grid": lambda: compute.grid_sql(CONTRACT, present, lower_us=0),
            "exact": lambda: compute.exact_sql(CONTRACT, present),
            "snapshot": lambda: compute.snapshot_sql(CONTRACT, present, at_us=at),
        }[plan]()
        relation = con.sql(sql)
        types = dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))
    for f in CONTRACT.features:
        assert types[f.name] == f.types.sql, f.name


def test_the_feast_fields_have_the_tables_feast_types(tmp_path: Path) -> None:
    definitions = build_definitions(contract=CONTRACT, features_dir=tmp_path)
    fields = {field.name: str(field.dtype) for field in definitions.view.features}
    for f in CONTRACT.features:
        assert fields[f.name] == f.types.feast, f.name
    assert definitions.entity.value_type.name == CONTRACT.entity.types.feast_value


def test_the_model_input_has_the_tables_frame_dtypes(built: tuple[Path, Path]) -> None:
    _, features_dir = built
    frame = model_input(frame=read_table(features_dir=features_dir), contract=CONTRACT)
    for f in CONTRACT.features:
        assert str(frame[f.name].dtype) == f.types.numpy, f.name
