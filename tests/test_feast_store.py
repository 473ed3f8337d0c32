"""Feast: definitions from the contract, point-in-time training sets, materialize, online, parity."""

from __future__ import annotations

import math
import random
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from test_features_lake import CONTRACT, START, oracle, random_records, write_lake
from typer.testing import CliRunner

from churnops.cli import app

if TYPE_CHECKING:
    from feast import FeatureStore
from churnops.features.build import build_features
from churnops.features.materialize import materialize
from churnops.features.naming import service_name, view_name
from churnops.features.online import read_online, write_online
from churnops.features.parity import check_parity
from churnops.features.store import apply, open_store
from churnops.features.table import read_table
from churnops.features.training_set import get_training_set

DAYS = 40
UNTIL = START + timedelta(days=DAYS)
FLAG = CONTRACT.entity.join.default_flag
Home = tuple[Path, "FeatureStore", dict[str, pd.DataFrame]]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureStore, dict[str, pd.DataFrame]]:
    home = tmp_path_factory.mktemp("home")
    frames = random_records(customers=80, days=DAYS, seed=21)
    write_lake(home / "data" / "lake", frames)
    build_features(
        lake_dir=home / "data" / "lake",
        features_dir=home / "data" / "features",
        contract=CONTRACT,
        until=UNTIL,
    )
    store = open_store(home=home)
    apply(store)
    return home, store, frames


def _floor_day(t: pd.Timestamp) -> pd.Timestamp:
    return t.floor("1D")


def test_the_feast_definitions_match_the_contract(home: Home) -> None:
    _, store, _ = home
    view = store.get_feature_view(view_name(CONTRACT))
    assert view.name == "customer_profile_30d"
    assert view.ttl == CONTRACT.time.ttl
    types = {"int64": "Int64", "float64": "Float64", "string": "String", "bool": "Bool"}
    assert [(f.name, str(f.dtype)) for f in view.features] == [("snapshot_ts", "UnixTimestamp")] + [
        (f.name, types[f.dtype]) for f in CONTRACT.features
    ]
    assert view.entities == [CONTRACT.entity.name]
    assert store.get_entity(CONTRACT.entity.name).join_key == CONTRACT.entity.join_key
    assert view.tags["contract_version"] == str(CONTRACT.version)
    assert view.owner and view.description
    service = store.get_feature_service(service_name(CONTRACT))
    assert service.name == f"customer_profile_v{CONTRACT.version}"
    assert [p.name for p in service.feature_view_projections] == [view.name]


def test_the_training_set_equals_the_oracle_at_the_latest_boundary(home: Home) -> None:
    _, store, frames = home
    rng = random.Random(3)
    ids = frames["customers"]["customer_id"].tolist()
    signups = dict(zip(ids, frames["customers"]["signup_date"], strict=True))
    rows = []
    for _ in range(250):
        t = pd.Timestamp(START - timedelta(days=3)) + pd.Timedelta(seconds=rng.randrange((DAYS + 3) * 86_400))
        rows.append((rng.choice(ids), t))
    entities = pd.DataFrame(rows, columns=["customer_id", "event_timestamp"])
    entities["label"] = range(len(entities))
    result = get_training_set(store=store, entities=entities)
    assert len(result) == len(entities)
    assert result["label"].tolist() == entities["label"].tolist()
    for _, row in result.iterrows():
        s = _floor_day(row["event_timestamp"])
        if s.date() < signups[row["customer_id"]]:
            assert row[FLAG] and pd.isna(row["snapshot_ts"])
            continue
        assert not row[FLAG] and row["snapshot_ts"] == s
        expected = oracle(frames, row["customer_id"], s.to_pydatetime())
        for name, value in expected.items():
            got = row[name]
            assert math.isclose(got, value, rel_tol=1e-9) if isinstance(value, float) else got == value, (
                f"{row['customer_id']}@{row['event_timestamp']} {name}: {got!r} != {value!r}"
            )


def test_rows_without_a_recent_snapshot_get_defaults_and_the_flag(home: Home) -> None:
    _, store, _ = home
    table = read_table(features_dir=home[0] / "data" / "features")
    active = table[table["events_30d"] > 0].iloc[0]
    customer = active["customer_id"]
    entities = pd.DataFrame(
        {
            "customer_id": [customer, "CUST-UNKNOWN", customer, customer, customer],
            "event_timestamp": [
                active["snapshot_ts"] + pd.Timedelta(hours=5),  # a normal row
                pd.Timestamp(UNTIL),  # nobody knows this customer
                pd.Timestamp(UNTIL) + pd.Timedelta(days=40),  # long after the last snapshot
                pd.Timestamp(UNTIL) + pd.Timedelta(days=1, hours=2),  # last snapshot older than the ttl
                active["snapshot_ts"] + pd.Timedelta(hours=5),  # a duplicate row stays a row
            ],
        },
        index=[10, 11, 12, 13, 14],
    )
    result = get_training_set(store=store, entities=entities)
    assert list(result.index) == [10, 11, 12, 13, 14]
    assert result[FLAG].tolist() == [False, True, True, True, False]
    for i in (11, 12, 13):
        row = result.loc[i]
        assert pd.isna(row["snapshot_ts"])
        assert {f.name: row[f.name] for f in CONTRACT.features} == CONTRACT.defaults
    assert result.loc[10, "events_30d"] == active["events_30d"] > 0
    assert result[CONTRACT.numeric_features].notna().all().all()
    assert (
        str(result["sessions_30d"].dtype) == "int64" and str(result["watch_minutes_30d"].dtype) == "float64"
    )


def test_a_customer_with_data_only_outside_the_window_gets_zeros_not_old_values(home: Home) -> None:
    _, store, frames = home
    table = read_table(features_dir=home[0] / "data" / "features")
    # A snapshot whose window is empty although the customer had events before it.
    quiet = table[(table["events_30d"] == 0) & (table["days_since_last_event"] == 90)]
    had_events = set(frames["usage_events"]["customer_id"])
    quiet = quiet[quiet["customer_id"].isin(had_events)]
    if quiet.empty:
        pytest.skip("the generated data has no customer who went quiet for 90 days")
    row = quiet.iloc[0]
    result = get_training_set(
        store=store,
        entities=pd.DataFrame({"customer_id": [row["customer_id"]], "event_timestamp": [row["snapshot_ts"]]}),
    )
    assert not result[FLAG].iloc[0]
    assert result["events_30d"].iloc[0] == 0 and result["watch_minutes_30d"].iloc[0] == 0.0


def test_bad_entity_frames_are_refused_with_a_clear_error(home: Home) -> None:
    _, store, _ = home
    with pytest.raises(ValueError, match="missing column"):
        get_training_set(store=store, entities=pd.DataFrame({"customer_id": ["C"]}))
    with pytest.raises(ValueError, match="event_timestamp is empty in row 1"):
        get_training_set(
            store=store, entities=pd.DataFrame({"customer_id": ["C", "D"], "event_timestamp": [UNTIL, None]})
        )


def _online_rows(home: Path) -> list[tuple]:
    con = sqlite3.connect(home / "data" / "feast" / "online.db")
    try:
        return con.execute(
            "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            "FROM churnops_customer_profile_30d ORDER BY entity_key, feature_name"
        ).fetchall()
    finally:
        con.close()


def test_materialize_loads_what_feast_reads_back_and_parity_holds(home: Home) -> None:
    path, store, _ = home
    at = UNTIL + timedelta(days=1, hours=7, minutes=3, seconds=5, microseconds=42)
    report = materialize(
        store=store,
        lake_dir=path / "data" / "lake",
        features_dir=path / "data" / "features",
        contract=CONTRACT,
        at=at,
    )
    assert report.at == at.replace(microsecond=0)
    assert report.build.until == UNTIL + timedelta(days=1)
    offline = read_table(features_dir=path / "data" / "features", start=report.at, end=report.at)
    assert len(offline) == report.customers > 0
    online = read_online(store=store, customer_ids=offline["customer_id"].tolist())
    assert (online["snapshot_ts"] == report.at).all()
    for name in CONTRACT.feature_names:
        assert online[name].tolist() == offline[name].tolist(), name
    parity = check_parity(store=store, at=report.at, sample=40, tolerance=CONTRACT.parity.tolerance)
    assert parity.passed and parity.sampled == 40 and parity.worst.empty

    # Feast's own writer, on the same rows, leaves exactly the same bytes.
    ours = _online_rows(path)
    view = store.get_feature_view(view_name(CONTRACT))
    store.write_to_online_store(view.name, offline)
    assert _online_rows(path) == ours

    # A tampered online value is caught and reported.
    tampered = offline.head(1).copy()
    customer = tampered["customer_id"].iloc[0]
    tampered["events_30d"] = tampered["events_30d"] + 100
    import pyarrow as pa

    from churnops.features.table import table_schema

    write_online(store=store, view=view, rows=pa.Table.from_pandas(tampered, schema=table_schema(CONTRACT)))
    bad = check_parity(
        store=store, at=report.at, sample=report.customers, tolerance=CONTRACT.parity.tolerance
    )
    assert not bad.passed and bad.mismatches == 1
    assert bad.worst[["customer_id", "feature"]].values.tolist() == [[customer, "events_30d"]]

    runner = CliRunner()
    result = runner.invoke(app, ["parity", "--home", str(path)])
    assert result.exit_code == 1, result.output
    assert "events_30d" in result.output and "FAILED" in result.output
    result = runner.invoke(app, ["materialize", "--home", str(path), "--at", report.at.isoformat()])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["parity", "--home", str(path)])
    assert result.exit_code == 0 and "passed" in result.output, result.output


def test_training_set_command_writes_the_rows_in_order(home: Home, tmp_path: Path) -> None:
    path, _, _ = home
    entities = pd.DataFrame(
        {"customer_id": ["CUST-000002", "CUST-NOPE", "CUST-000001"], "event_timestamp": [str(UNTIL)] * 3}
    )
    entities.to_csv(tmp_path / "entities.csv", index=False)
    result = CliRunner().invoke(
        app,
        [
            "training-set",
            "--home",
            str(path),
            "--entities",
            str(tmp_path / "entities.csv"),
            "--out",
            str(tmp_path / "ts.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(tmp_path / "ts.parquet")
    assert out["customer_id"].tolist() == entities["customer_id"].tolist()
    assert out[FLAG].tolist() == [False, True, False]
    result = CliRunner().invoke(
        app,
        ["training-set", "--home", str(path), "--entities", str(tmp_path / "nope.csv"), "--out", "x.parquet"],
    )
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
