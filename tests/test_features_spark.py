"""The Spark engine: the contract's SQL on Spark gives the DuckDB table, bit for bit.

One lake of 200 customers x 60 days (`random_records`: events on the window's edges, invoice
ties, null values, records ingested up to two days late). DuckDB builds the table, then late
records arrive and DuckDB rebuilds incrementally; Spark (`churnops features build --engine
spark`) builds the same lake from scratch. Every file, row and value must be identical (floats
included: sums are exact). Feast's Spark offline store must return the DuckDB store's training
set. One `local[2]` session serves the module; without Java the module is skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp
from test_features_lake import CONTRACT, add_to_lake, random_records, typed, write_lake
from typer.testing import CliRunner

from churnops.cli import app
from churnops.features import compute
from churnops.features.build import build_features
from churnops.features.spark_engine import NotPortableError, check_portable, to_spark_sql
from churnops.features.store import FEATURE_REPO, apply, open_store
from churnops.features.table import (
    CREATED_TIMESTAMP,
    list_partitions,
    partition_path,
    read_table,
    table_dir,
    table_schema,
)
from churnops.features.training_set import get_training_set
from churnops.storage.lake import read_source

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

if shutil.which("java") is None:
    pytest.skip("the Spark engine needs Java 17+ and no `java` is on PATH", allow_module_level=True)
pytest.importorskip("pyspark", reason="the Spark engine needs pyspark (the dev extra installs it)")


START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 60
UNTIL = START + timedelta(days=DAYS)
SPARK_YAML = FEATURE_REPO / "examples" / "feature_store.spark.yaml"


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("churnops-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _late_records(lake: Path) -> None:
    """Records ingested after the first build whose event times it had already covered."""
    customers = read_source(lake, "customers").sort_values("customer_id")["customer_id"].tolist()
    late_at = UNTIL + timedelta(days=2)
    usage = typed(
        usage=pd.DataFrame(
            {
                "event_id": [f"EVT-LATE-{i}" for i in range(4)],
                "customer_id": [customers[3], customers[3], customers[17], customers[40]],
                "event_timestamp": [
                    START + timedelta(days=20, hours=5),
                    START + timedelta(days=33),  # exactly on a boundary
                    START + timedelta(days=45, minutes=7),
                    UNTIL - timedelta(seconds=1),
                ],
                "event_type": ["video_watch", "quiz_attempt", "login", "video_watch"],
                "course_id": ["COURSE-001"] * 4,
                "watch_minutes": [0.1, None, None, 12.345678901],
                "quiz_score": [None, 66.7, None, None],
                "ingested_at": [late_at] * 4,
            }
        )
    )["usage_events"]
    billing = typed(
        billing=pd.DataFrame(
            {
                "invoice_id": ["INV-LATE-1"],
                "customer_id": [customers[8]],
                "invoice_date": [START + timedelta(days=25, hours=1)],
                "amount": [0.3],
                "currency": ["USD"],
                "payment_status": ["paid"],
                "plan_type": ["enterprise"],
                "previous_plan_type": ["pro"],
                "ingested_at": [late_at],
            }
        )
    )["billing"]
    for source, frame in (("usage_events", usage), ("billing", billing)):
        existing = read_source(lake, source)
        add_to_lake(lake, source, frame.astype(existing.dtypes.to_dict()), existing)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> tuple[Path, Path]:
    """The Spark-built home (its table under data/features) and the DuckDB-built features folder."""
    root = tmp_path_factory.mktemp("spark")
    home = root / "home"
    data = home / "data"
    write_lake(data / "lake", random_records(customers=200, days=DAYS, seed=9, start=START))
    duck = root / "duck"
    build_features(lake_dir=data / "lake", features_dir=duck, contract=CONTRACT, until=UNTIL)
    _late_records(data / "lake")
    again = build_features(lake_dir=data / "lake", features_dir=duck, contract=CONTRACT, until=UNTIL)
    assert (again.full, again.late_records) == (False, 5)
    result = CliRunner().invoke(
        app, ["features", "build", "--engine", "spark", "--home", str(home), "--until", UNTIL.isoformat()]
    )
    assert result.exit_code == 0, result.output
    assert "with spark" in result.output and "(full, 0 late records, " in " ".join(result.output.split())
    return home, duck


def test_spark_writes_the_duckdb_table_file_for_file_and_value_for_value(built: tuple[Path, Path]) -> None:
    home, duck = built
    spark_dir = home / "data" / "features"
    days = list_partitions(duck, CONTRACT)
    assert days == list_partitions(spark_dir, CONTRACT) and len(days) > DAYS
    # Nothing but the day files and the build state: no Spark markers, no leftovers.
    extra = {p.name for p in table_dir(spark_dir, CONTRACT).iterdir() if not p.name.startswith("date=")}
    assert extra == {"_build_state.json"}
    assert not [p for p in spark_dir.iterdir() if p.name.startswith(".")]
    schema = table_schema(CONTRACT)
    for day in days:
        ours = pq.read_table(partition_path(spark_dir, CONTRACT, day))
        theirs = pq.read_table(partition_path(duck, CONTRACT, day))
        assert [(f.name, f.type) for f in ours.schema] == [(f.name, f.type) for f in schema]
        ours, theirs = ours.drop_columns([CREATED_TIMESTAMP]), theirs.drop_columns([CREATED_TIMESTAMP])
        # Same rows in the same order, every value equal (floats compared as exact values).
        assert ours.cast(theirs.schema).equals(theirs), day


def test_the_spark_table_reads_like_the_duckdb_table(built: tuple[Path, Path]) -> None:
    home, duck = built
    ours = read_table(features_dir=home / "data" / "features").drop(columns=[CREATED_TIMESTAMP])
    theirs = read_table(features_dir=duck).drop(columns=[CREATED_TIMESTAMP])
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert (ours["orders_30d"] >= ours["distinct_order_days_30d"]).all()


def test_a_later_duckdb_build_continues_from_the_spark_build(built: tuple[Path, Path]) -> None:
    home, _ = built
    data = home / "data"
    lake, features = data / "lake", data / "features"
    report = build_features(lake_dir=lake, features_dir=features, contract=CONTRACT, until=UNTIL)
    assert (report.full, report.snapshots_computed, report.partitions_written) == (False, 0, 0)


def test_the_spark_offline_store_gives_the_duckdb_training_set(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = built
    monkeypatch.delenv("CHURNOPS_FEATURE_STORE_YAML", raising=False)
    table = read_table(features_dir=home / "data" / "features")
    ids = sorted(table["customer_id"].unique())
    times = [UNTIL - timedelta(days=i % 50, hours=(i * 5) % 24, minutes=i) for i in range(60)]
    entities = pd.DataFrame(
        {
            "customer_id": [ids[(i * 7) % len(ids)] for i in range(60)] + ["CUST-999999", ids[0], ids[1]],
            # Unknown customer; a snapshot past the ttl; a row exactly on a boundary.
            "event_timestamp": [*times, UNTIL, UNTIL + timedelta(days=3), UNTIL - timedelta(days=4)],
        }
    )
    duck_store = open_store(home=home)
    apply(duck_store)
    expected = get_training_set(store=duck_store, entities=entities)
    spark_store = open_store(home=home, fs_yaml=SPARK_YAML)
    apply(spark_store)
    assert type(spark_store.get_data_source("customer_profile_v1_source")).__name__ == "SparkSource"
    got = get_training_set(store=spark_store, entities=entities)
    assert len(got) == len(entities)
    flag = CONTRACT.entity.join.default_flag
    assert got[flag].tolist()[-3:] == [True, True, False]
    assert not got[flag].iloc[:-3].all()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_the_guard_refuses_what_spark_would_misread() -> None:
    with pytest.raises(NotPortableError, match="ASOF JOIN"):
        check_portable("SELECT * FROM t ASOF LEFT JOIN u ON t.k = u.k AND t.s >= u.s")
    with pytest.raises(NotPortableError, match="QUALIFY"):
        check_portable("SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY k ORDER BY s) = 1")
    with pytest.raises(NotPortableError, match="GROUP BY ALL"):
        to_spark_sql("SELECT k, count(*) FROM t GROUP BY ALL")
    with pytest.raises(NotPortableError, match=r"function my_udf\(\)"):
        to_spark_sql("SELECT my_udf(k) FROM t")


def test_every_generated_query_passes_the_guard_and_a_bad_contract_filter_does_not() -> None:
    present = {s.name for s in CONTRACT.sources}
    for sql in (
        compute.grid_sql(CONTRACT, present, lower_us=0),
        compute.exact_sql(CONTRACT, present),
        compute.snapshot_sql(CONTRACT, present, at_us=0),
        compute.entity_sql(CONTRACT),
    ):
        tree = sqlglot.parse_one(to_spark_sql(sql), read="spark")
        assert not [j for j in tree.find_all(exp.Join) if j.args.get("method")]
        assert not list(tree.find_all(exp.Qualify)) and not list(tree.find_all(exp.Anonymous))
    features = [
        f.model_copy(update={"filter": "regexp_full(event_type, 'log')"}) if f.name == "sessions_30d" else f
        for f in CONTRACT.features
    ]
    bad = CONTRACT.model_copy(update={"features": features})
    with pytest.raises(NotPortableError, match=r"regexp_full\(\)"):
        to_spark_sql(compute.grid_sql(bad, present, lower_us=0))


def test_an_unknown_engine_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["features", "build", "--engine", "flink", "--home", str(tmp_path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--engine='flink' is not a feature engine: use one of duckdb, spark" in message
