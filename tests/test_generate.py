"""Tests for the synthetic source generator (`churnops.synthetic`), checked against the source contracts."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import beta as beta_fn

from churnops.contracts.source_contract import SOURCE_NAMES, load_source_contracts
from churnops.ingestion.validate import lake_schema
from churnops.synthetic.faults import FAULT_PLAN, UNKNOWN_ENUM_VALUES
from churnops.synthetic.generate import GenerateResult, generate
from churnops.synthetic.schemas import SOURCES, arrow_schema, make_table
from churnops.synthetic.usage import COURSE_IDS
from churnops.synthetic.world import build_population, resolve_window

START = datetime(2026, 3, 1, tzinfo=UTC)
SMALL = {"customers": 300, "days": 60, "seed": 7, "start": START}
DIRTY_RATE = 0.02
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO = "%Y-%m-%dT%H:%M:%SZ"
DAY = pd.Timedelta(days=1)

# What every file must follow is read from the source contracts, not restated here.
CONTRACTS = load_source_contracts()
EXPECTED_COLUMNS = {source: contract.column_names for source, contract in CONTRACTS.items()}
TS_COLUMNS = {
    source: [c.name for c in contract.columns if c.type == "timestamp"]
    for source, contract in CONTRACTS.items()
}
KEY_COLUMNS = {source: contract.primary_key[0] for source, contract in CONTRACTS.items()}
# A clean Parquet file holds exactly the lake table's types, so ingestion converts nothing.
PARQUET_TYPES = {source: lake_schema(contract).types for source, contract in CONTRACTS.items()}
# The identifier patterns of the keys a source mints, and of the customer references.
ID_PATTERNS = {
    source: contract.column(KEY_COLUMNS[source]).format
    for source, contract in CONTRACTS.items()
    if source != "churn_labels"
}
ENUMS = {
    (source, c.name): tuple(c.enum)
    for source, contract in CONTRACTS.items()
    for c in contract.columns
    if c.enum
}
# Where the generator draws from less than the contract allows: its course catalogue, and plan
# changes between the paid plans only.
GENERATED_VALUES = {
    ("usage_events", "course_id"): COURSE_IDS,
    ("billing", "previous_plan_type"): ("pro", "enterprise"),
}


def read_text(path: Path) -> pd.DataFrame:
    """A CSV exactly as written: every cell a string, a null an empty string."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_typed(result: GenerateResult) -> dict[str, pd.DataFrame]:
    """All five sources with times parsed to UTC (CSV or Parquet alike)."""
    frames = {}
    for source, path in result.files.items():
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        for col in TS_COLUMNS[source]:
            df[col] = pd.to_datetime(df[col], format=ISO, utc=True) if df[col].dtype == object else df[col]
        if source == "customers":
            df["signup_date"] = pd.to_datetime(df["signup_date"].astype(str), format="%Y-%m-%d", utc=True)
        frames[source] = df
    return frames


def renewal_share(days: int) -> float:
    """Share of annual contracts with a renewal where churn can happen, for a `days`-long window.

    Signup lies g = 30..400 whole days before the window (each equally likely); a contract renews
    on window days 365k - g (k >= 1) and its holder may leave only at the first renewal on or after
    day days // 4, if that renewal comes before day `days`.
    """
    gaps = range(30, 401)
    hits = 0
    for g in gaps:
        renewal = 365 - g
        while renewal < days // 4:
            renewal += 365
        hits += renewal < days
    return hits / len(gaps)


def expected_churn_rate(base: float, paid_ratio: float, days: int) -> float:
    """E[min(.95, base*(0.4 + 1.4(1-u)^1.6))] * E[plan factor] for u ~ Beta(2, 2.5), no cap hit.

    u is the seat utilization, which has engagement's Beta(2, 2.5) distribution (checked in
    `test_utilization_has_the_distribution_the_churn_rate_assumes`).

    Free customers keep the full probability; paid ones get 0.75 of it, and the 65% of them on
    annual contracts (all enterprise = 30% of paid, half of pro = 35%) only when a renewal falls
    in the churnable part of the window.
    """
    # E[(1-e)^1.6] = B(2, 2.5 + 1.6) / B(2, 2.5)
    factor = 0.4 + 1.4 * beta_fn(2.0, 4.1) / beta_fn(2.0, 2.5)
    annual = 0.30 + 0.70 * 0.5
    paid_factor = 0.75 * ((1.0 - annual) + annual * renewal_share(days))
    return base * factor * ((1.0 - paid_ratio) + paid_ratio * paid_factor)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate(out_dir=tmp_path_factory.mktemp("csv"), **SMALL)


@pytest.fixture(scope="module")
def small_parquet(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate(out_dir=tmp_path_factory.mktemp("parquet"), fmt="parquet", **SMALL)


@pytest.fixture(scope="module")
def dirty_csv(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate(out_dir=tmp_path_factory.mktemp("dirty_csv"), dirty_rate=DIRTY_RATE, **SMALL)


@pytest.fixture(scope="module")
def dirty_parquet(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate(
        out_dir=tmp_path_factory.mktemp("dirty_pq"), fmt="parquet", dirty_rate=DIRTY_RATE, **SMALL
    )


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    # Enough customers for tight tolerances on the rates the settings promise.
    result = generate(
        out_dir=tmp_path_factory.mktemp("big"), customers=4000, days=40, seed=11, start=START, fmt="parquet"
    )
    return read_typed(result)


@pytest.fixture(scope="module")
def small_frames(small_csv: GenerateResult) -> dict[str, pd.DataFrame]:
    return read_typed(small_csv)


# ---------------------------------------------------------------------------------------------
# Determinism and files
# ---------------------------------------------------------------------------------------------


def file_bytes(result: GenerateResult) -> dict[str, bytes]:
    out = {source: path.read_bytes() for source, path in result.files.items()}
    if result.manifest is not None:
        out["_manifest"] = result.manifest.read_bytes()
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("dirty_rate", [0.0, DIRTY_RATE])
def test_same_arguments_give_identical_bytes(tmp_path: Path, fmt: str, dirty_rate: float) -> None:
    a = generate(out_dir=tmp_path / "a", fmt=fmt, dirty_rate=dirty_rate, **SMALL)
    b = generate(out_dir=tmp_path / "b", fmt=fmt, dirty_rate=dirty_rate, **SMALL)
    assert file_bytes(a) == file_bytes(b)
    assert a.rows == b.rows


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_another_seed_gives_other_data(tmp_path: Path, fmt: str) -> None:
    a = generate(out_dir=tmp_path / "a", fmt=fmt, **SMALL)
    b = generate(out_dir=tmp_path / "b", fmt=fmt, **{**SMALL, "seed": 8})
    for source in SOURCES:
        assert a.files[source].read_bytes() != b.files[source].read_bytes(), source


def test_result_describes_what_was_written(small_csv: GenerateResult) -> None:
    assert small_csv.start == START
    assert small_csv.end == START + timedelta(days=60)
    assert small_csv.start.tzinfo is not None and small_csv.end.utcoffset() == timedelta(0)
    assert list(small_csv.files) == list(SOURCES)
    assert small_csv.manifest is None
    for source, path in small_csv.files.items():
        assert path == small_csv.out_dir / f"{source}.csv"
        assert small_csv.rows[source] == len(read_text(path))
    assert small_csv.rows["customers"] == 300
    # Written through temp files that were all renamed away.
    assert sorted(p.name for p in small_csv.out_dir.iterdir()) == sorted(f"{s}.csv" for s in SOURCES)


def test_result_is_frozen(small_csv: GenerateResult) -> None:
    with pytest.raises(AttributeError):
        small_csv.out_dir = Path("elsewhere")  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Schemas and text conventions
# ---------------------------------------------------------------------------------------------


def test_generator_schemas_are_the_contracts() -> None:
    assert SOURCES == SOURCE_NAMES
    for source, contract in CONTRACTS.items():
        assert arrow_schema(source) == lake_schema(contract), source


def test_fault_plan_damages_contract_columns() -> None:
    assert set(FAULT_PLAN) == set(SOURCES)
    for source, plan in FAULT_PLAN.items():
        for kind, column in plan:
            assert column is None or column in EXPECTED_COLUMNS[source], (source, kind, column)
            if kind == "null_key":
                assert column == KEY_COLUMNS[source]
            if kind == "unknown_enum":
                assert UNKNOWN_ENUM_VALUES[column] not in ENUMS[(source, column)]


def test_a_table_off_the_contract_is_refused() -> None:
    ids = pa.array(["CUST-000001"])
    when = pa.array([0], type=pa.timestamp("us", tz="UTC"))
    reason = pa.array(["price"])
    labels = {"customer_id": ids, "churn_date": when, "churn_reason": reason, "ingested_at": when}
    assert make_table("churn_labels", labels).column_names == EXPECTED_COLUMNS["churn_labels"]
    with pytest.raises(ValueError, match="differ from the contract"):
        make_table("churn_labels", {**labels, "extra": reason})
    with pytest.raises(ValueError, match="the contract says timestamp"):
        make_table("churn_labels", {**labels, "churn_date": pa.array(["2026-01-01"])})


@pytest.mark.parametrize("source", SOURCES)
def test_csv_columns_and_text_formats(small_csv: GenerateResult, source: str) -> None:
    path = small_csv.files[source]
    assert path.read_text().splitlines()[0] == ",".join(EXPECTED_COLUMNS[source])
    df = read_text(path)
    assert list(df.columns) == EXPECTED_COLUMNS[source]
    assert len(df) > 0
    for col in TS_COLUMNS[source]:
        assert df[col].str.match(TS_RE).all(), col
    if source == "customers":
        assert df["signup_date"].str.match(DATE_RE).all()
        assert set(df["is_active"]) <= {"true", "false"}
        assert df["seat_count"].str.match(r"^\d+$").all()
    floats = [c.name for c in CONTRACTS[source].columns if c.type == "float"]
    for col, decimals in {"watch_minutes": 2, "quiz_score": 1, "resolution_hours": 2, "amount": 2}.items():
        if col in df:
            floats.remove(col)
            filled = df.loc[df[col] != "", col]
            assert filled.str.match(rf"^\d+\.\d{{{decimals}}}$").all(), col
    if source == "support_tickets":
        filled = df.loc[df["satisfaction_score"] != "", "satisfaction_score"]
        assert filled.isin(["1", "2", "3", "4", "5"]).all()
    assert not floats, f"no decimals stated for the contract's float columns {floats}"


@pytest.mark.parametrize("source", SOURCES)
def test_parquet_schema(small_parquet: GenerateResult, source: str) -> None:
    schema = pq.read_schema(small_parquet.files[source])
    assert schema.names == EXPECTED_COLUMNS[source]
    assert schema.types == PARQUET_TYPES[source]


def test_parquet_and_csv_hold_the_same_data(small_csv: GenerateResult, small_parquet: GenerateResult) -> None:
    csv, parquet = read_typed(small_csv), read_typed(small_parquet)
    for source in SOURCES:
        a, b = csv[source], parquet[source]
        if source == "customers":
            b = b.assign(signup_date=pd.to_datetime(b["signup_date"].astype(str), utc=True))
        if source == "support_tickets":
            b = b.assign(satisfaction_score=b["satisfaction_score"].astype(float))
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=False, rtol=1e-12)


def test_csv_dtypes_read_back(small_csv: GenerateResult) -> None:
    c = pd.read_csv(small_csv.files["customers"])
    assert c["seat_count"].dtype == np.int64 and c["is_active"].dtype == bool
    e = pd.read_csv(small_csv.files["usage_events"])
    assert e["watch_minutes"].dtype == np.float64 and e["quiz_score"].dtype == np.float64
    b = pd.read_csv(small_csv.files["billing"])
    assert b["amount"].dtype == np.float64


# ---------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_keys_are_unique_and_well_formed(small_frames: dict[str, pd.DataFrame], source: str) -> None:
    df = small_frames[source]
    key = KEY_COLUMNS[source]
    assert df[key].notna().all() and df[key].is_unique
    assert df["customer_id"].str.match(ID_PATTERNS["customers"]).all()
    if source in ID_PATTERNS:
        assert df[key].str.match(ID_PATTERNS[source]).all()
    # Every reference points at a real customer.
    assert set(df["customer_id"]) <= set(small_frames["customers"]["customer_id"])


def test_ids_are_sequential(small_frames: dict[str, pd.DataFrame]) -> None:
    c = small_frames["customers"]["customer_id"]
    assert c.iloc[0] == "CUST-000001" and c.iloc[-1] == "CUST-000300"
    assert small_frames["usage_events"]["event_id"].iloc[0] == "EVT-0000000001"
    assert small_frames["support_tickets"]["ticket_id"].iloc[0] == "TCK-000001"
    assert small_frames["billing"]["invoice_id"].iloc[0] == "INV-0000001"


@pytest.mark.parametrize(("source", "col"), list(ENUMS))
def test_enums(small_frames: dict[str, pd.DataFrame], source: str, col: str) -> None:
    values = small_frames[source][col].dropna()
    assert set(values) <= set(ENUMS[(source, col)])


@pytest.mark.parametrize(("source", "col"), list(GENERATED_VALUES))
def test_narrower_generated_values(small_frames: dict[str, pd.DataFrame], source: str, col: str) -> None:
    values = small_frames[source][col].dropna()
    assert set(values) <= set(GENERATED_VALUES[(source, col)])
    column = CONTRACTS[source].column(col)
    allowed = [v for v in GENERATED_VALUES[(source, col)] if column.enum is None or v in column.enum]
    assert allowed == list(GENERATED_VALUES[(source, col)])
    if column.format:
        assert all(re.match(column.format, v) for v in GENERATED_VALUES[(source, col)])


@pytest.mark.parametrize("source", SOURCES)
def test_contract_nullability_and_ranges_hold(small_frames: dict[str, pd.DataFrame], source: str) -> None:
    df = small_frames[source]
    for column in CONTRACTS[source].columns:
        if not column.nullable:
            assert df[column.name].notna().all(), column.name
        values = df[column.name].dropna()
        if column.minimum is not None:
            assert (values >= column.minimum).all(), column.name
        if column.maximum is not None:
            assert (values <= column.maximum).all(), column.name


def test_nulls_follow_the_conventions(small_frames: dict[str, pd.DataFrame]) -> None:
    c = small_frames["customers"]
    assert c.drop(columns="industry").notna().all().all()
    assert 0.02 < c["industry"].isna().mean() < 0.16
    e = small_frames["usage_events"]
    assert (e["course_id"].isna() == (e["event_type"] == "login")).all()
    assert (e["watch_minutes"].notna() == (e["event_type"] == "video_watch")).all()
    assert (e["quiz_score"].notna() == (e["event_type"] == "quiz_attempt")).all()
    t = small_frames["support_tickets"]
    assert t.drop(columns=["resolution_hours", "satisfaction_score"]).notna().all().all()
    # Only resolved tickets get a survey answer.
    assert t.loc[t["resolution_hours"].isna(), "satisfaction_score"].isna().all()
    b = small_frames["billing"]
    assert b.drop(columns="previous_plan_type").notna().all().all()
    assert small_frames["churn_labels"].notna().all().all()


def test_value_ranges(small_frames: dict[str, pd.DataFrame]) -> None:
    c = small_frames["customers"]
    seat_bounds = {"basic": (1, 3), "pro": (2, 25), "enterprise": (20, 200)}
    for plan, (lo, hi) in seat_bounds.items():
        seats = c.loc[c["plan_type"] == plan, "seat_count"]
        assert seats.between(lo, hi).all(), plan
    e = small_frames["usage_events"]
    assert (e["watch_minutes"].dropna() >= 0).all()
    assert e["quiz_score"].dropna().between(0, 100).all()
    t = small_frames["support_tickets"]
    assert (t["resolution_hours"].dropna() >= 0).all()
    assert t["satisfaction_score"].dropna().between(1, 5).all()
    b = small_frames["billing"]
    assert b["amount"].between(0, 10_000).all()
    assert (b["currency"] == "USD").all()
    assert c["company_name"].str.match(r"^[A-Z][A-Za-z]+( [A-Z][A-Za-z]+)+$").all()


def test_times_lie_between_signup_and_window_end(small_csv: GenerateResult, small_frames) -> None:
    start, end = pd.Timestamp(small_csv.start), pd.Timestamp(small_csv.end)
    c = small_frames["customers"].set_index("customer_id")
    signup_gap = (start.normalize() - c["signup_date"]) / DAY
    assert signup_gap.between(30, 400).all()
    # Spread out: customers of many tenures, not one cohort.
    assert signup_gap.min() < 60 and signup_gap.max() > 370
    assert (c["ingested_at"] >= c["signup_date"]).all() and (c["ingested_at"] <= end).all()
    for source in ("usage_events", "support_tickets", "billing", "churn_labels"):
        df = small_frames[source]
        event_col = TS_COLUMNS[source][0]
        signup = c.loc[df["customer_id"], "signup_date"].to_numpy()
        assert (df[event_col].to_numpy() >= signup).all(), source
        assert (df[event_col] < end).all(), source
        assert (df["ingested_at"] >= df[event_col]).all(), source
        assert (df["ingested_at"] <= end).all(), source
        if source != "billing":
            assert (df[event_col] >= start).all(), source
    # Ordinary landing delay is minutes, not days.
    e = small_frames["usage_events"]
    assert ((e["ingested_at"] - e["event_timestamp"]) <= pd.Timedelta(minutes=15)).all()


def test_activity_stops_at_churn(small_frames: dict[str, pd.DataFrame]) -> None:
    churn = small_frames["churn_labels"].set_index("customer_id")["churn_date"]
    assert len(churn) > 0
    for source in ("usage_events", "support_tickets", "billing"):
        df = small_frames[source]
        when = df[TS_COLUMNS[source][0]]
        limit = df["customer_id"].map(churn)
        assert not (limit.notna() & (when >= limit)).any(), source


def test_churn_dates_fall_in_the_last_three_quarters(small_csv: GenerateResult, small_frames) -> None:
    churn = small_frames["churn_labels"]["churn_date"]
    earliest = pd.Timestamp(small_csv.start) + 15 * DAY  # day days/4 of a 60-day window
    assert (churn >= earliest).all() and (churn < pd.Timestamp(small_csv.end)).all()


def test_is_active_matches_churn_labels(small_frames: dict[str, pd.DataFrame]) -> None:
    c = small_frames["customers"]
    labelled = set(small_frames["churn_labels"]["customer_id"])
    assert small_frames["churn_labels"]["customer_id"].is_unique
    assert set(c.loc[~c["is_active"], "customer_id"]) == labelled


def test_billing_follows_plans_and_cadence(small_frames: dict[str, pd.DataFrame]) -> None:
    c = small_frames["customers"].set_index("customer_id")
    b = small_frames["billing"].sort_values(["customer_id", "invoice_date"])
    assert set(c.loc[b["customer_id"], "plan_type"]) <= {"pro", "enterprise"}
    # Every paid customer is billed from signup day, every 30 days.
    paid = c.index[c["plan_type"] != "basic"]
    assert set(b["customer_id"]) == set(paid)
    first = b.groupby("customer_id")["invoice_date"].min()
    assert (first.dt.normalize() == c.loc[first.index, "signup_date"]).all()
    gaps = b.groupby("customer_id")["invoice_date"].diff().dropna()
    assert (gaps == 30 * DAY).all()
    price = b["plan_type"].map({"pro": 15.0, "enterprise": 45.0})
    assert np.allclose(b["amount"], c.loc[b["customer_id"], "seat_count"].to_numpy() * price)


def test_plan_changes_are_consistent(big: dict[str, pd.DataFrame]) -> None:
    c = big["customers"].set_index("customer_id")
    b = big["billing"].sort_values(["customer_id", "invoice_date"])
    changes = b[b["previous_plan_type"].notna()]
    assert len(changes) > 0 and changes["customer_id"].is_unique
    assert (changes["plan_type"] != changes["previous_plan_type"]).all()
    assert (changes["plan_type"] == c.loc[changes["customer_id"], "plan_type"].to_numpy()).all()
    # Upgrades outnumber downgrades.
    assert (changes["plan_type"] == "enterprise").mean() > 0.5
    for cust, inv in b[b["customer_id"].isin(changes["customer_id"])].groupby("customer_id"):
        at = inv["previous_plan_type"].notna().to_numpy().argmax()
        assert at >= 1, cust
        assert (inv["plan_type"].iloc[:at] == inv["previous_plan_type"].iloc[at]).all()
        assert (inv["plan_type"].iloc[at:] == c.loc[cust, "plan_type"]).all()
    share = b["previous_plan_type"].notna().mean()
    assert 0.01 < share < 0.03


def test_invoices_bill_the_current_plan_unless_it_changed(big: dict[str, pd.DataFrame]) -> None:
    c = big["customers"].set_index("customer_id")
    b = big["billing"]
    changers = set(b.loc[b["previous_plan_type"].notna(), "customer_id"])
    steady = b[~b["customer_id"].isin(changers)]
    assert len(steady) > 0
    assert (steady["plan_type"].to_numpy() == c.loc[steady["customer_id"], "plan_type"].to_numpy()).all()


def test_enterprise_customers_leave_only_on_a_signup_anniversary(big: dict[str, pd.DataFrame]) -> None:
    """Enterprise contracts are annual: a churn date is a whole number of 365-day years after signup."""
    c = big["customers"].set_index("customer_id")
    labels = big["churn_labels"].set_index("customer_id")
    plan = c.loc[labels.index, "plan_type"]
    tenure = (labels["churn_date"].dt.floor("D") - c.loc[labels.index, "signup_date"]) / DAY
    enterprise = tenure[plan == "enterprise"]
    assert len(enterprise) > 0
    assert ((enterprise % 365 == 0) & (enterprise >= 365)).all()
    # Free customers pay month to month and leave on any day.
    basic = tenure[plan == "basic"]
    assert (basic % 365 != 0).mean() > 0.95


def test_month_to_month_churn_has_a_constant_hazard(tmp_path: Path) -> None:
    """Free customers still there leave at the same rate early and late in the churnable span."""
    days = 120
    result = generate(
        out_dir=tmp_path, customers=20_000, days=days, seed=5, start=START, paid_ratio=0.0, fmt="parquet"
    )
    c = pd.read_parquet(result.files["customers"])
    churn = pd.read_parquet(result.files["churn_labels"])["churn_date"]
    day = (churn - pd.Timestamp(START)) / DAY
    first_half = ((day >= 30) & (day < 75)).sum()
    second_half = ((day >= 75) & (day < 120)).sum()
    at_risk_first = len(c)
    at_risk_second = len(c) - first_half
    # Each customer's hazard is constant; as the riskiest leave first, the population's rate
    # falls over time. A uniform leaving day (equal counts per day from a shrinking risk set)
    # would make it climb.
    assert second_half / at_risk_second < first_half / at_risk_first


def test_churn_rate_and_paid_ratio_match_settings(big: dict[str, pd.DataFrame]) -> None:
    c = big["customers"]
    assert len(c) == 4000
    assert c["plan_type"].isin(["pro", "enterprise"]).mean() == pytest.approx(0.35, abs=0.001)
    enterprise = (c["plan_type"] == "enterprise").sum() / c["plan_type"].isin(["pro", "enterprise"]).sum()
    assert enterprise == pytest.approx(0.30, abs=0.04)
    expected = expected_churn_rate(0.35, 0.35, days=40)
    # 40 days: churn from day 10; renewals on days 10..39 need g in 326..355, 30 of 371 gaps.
    assert renewal_share(40) == pytest.approx(30 / 371)
    by_hand = 0.35 * 0.9858 * (1 - 0.35 + 0.35 * 0.75 * (0.35 + 0.65 * 30 / 371))
    assert expected == pytest.approx(by_hand, abs=1e-3)
    assert (~c["is_active"]).mean() == pytest.approx(expected, abs=0.03)
    assert len(big["churn_labels"]) == (~c["is_active"]).sum()


@pytest.mark.parametrize(("base", "paid"), [(0.2, 0.0), (0.6, 1.0)])
def test_churn_rate_follows_other_settings(tmp_path: Path, base: float, paid: float) -> None:
    result = generate(
        out_dir=tmp_path, customers=4000, days=5, seed=3, start=START, churn_base_rate=base, paid_ratio=paid
    )
    c = pd.read_csv(result.files["customers"])
    assert c["plan_type"].isin(["pro", "enterprise"]).mean() == pytest.approx(paid, abs=0.001)
    # base 0.6 can exceed the 0.95 cap only for e near 0, a negligible mass: the closed form holds.
    assert (~c["is_active"]).mean() == pytest.approx(expected_churn_rate(base, paid, days=5), abs=0.03)


def test_behaviour_rates(big: dict[str, pd.DataFrame]) -> None:
    c, start = big["customers"], pd.Timestamp(START)
    end = start + 40 * DAY
    churn = big["churn_labels"].set_index("customer_id")["churn_date"]
    stop = c["customer_id"].map(churn).fillna(end)
    customer_days = ((stop - start) / DAY).sum()
    assert len(big["support_tickets"]) / customer_days == pytest.approx(0.005, rel=0.15)
    status = big["billing"]["payment_status"].value_counts(normalize=True)
    assert status["failed"] == pytest.approx(0.07, abs=0.02)
    assert status["refunded"] == pytest.approx(0.01, abs=0.006)
    t = big["support_tickets"]
    # A tenth stay open by chance; tickets from the last days may also still be in progress at
    # the end, so look at the first 20 days (no resolution takes that long in practice).
    early = t[t["created_at"] < start + 20 * DAY]
    assert len(early) > 200
    assert early["resolution_hours"].isna().mean() == pytest.approx(0.10, abs=0.04)


def test_engagement_links_usage_tickets_and_churn(big: dict[str, pd.DataFrame]) -> None:
    """The hidden engagement score shows through: churners used the product less."""
    c = big["customers"].set_index("customer_id")
    start = pd.Timestamp(START)
    churn = big["churn_labels"].set_index("customer_id")["churn_date"]
    stop = c.index.to_series().map(churn).fillna(start + 40 * DAY)
    days_alive = (stop - start) / DAY
    e = big["usage_events"]
    per_day = e.groupby("customer_id").size().reindex(c.index, fill_value=0) / days_alive
    assert per_day[~c["is_active"]].mean() < 0.8 * per_day[c["is_active"]].mean()
    # Engaged users score better on quizzes and do more in a session. (An account's volume also
    # follows its seats and their utilization, so the per-session rate is the per-user measure.)
    quiz = e[e["event_type"] == "quiz_attempt"].groupby("customer_id")["quiz_score"].mean()
    logins = e[e["event_type"] == "login"].groupby("customer_id").size()
    learning = e[e["event_type"] != "login"].groupby("customer_id").size().reindex(logins.index, fill_value=0)
    assert quiz.corr((learning / logins).reindex(quiz.index)) > 0.3


def test_utilization_has_the_distribution_the_churn_rate_assumes() -> None:
    """Seat utilization is Beta(2, 2.5) like engagement, correlated with it but another number."""
    pop = build_population(
        customers=50_000,
        window=resolve_window(start=START, days=120),
        churn_base_rate=0.35,
        paid_ratio=0.35,
        rng=np.random.default_rng(3),
    )
    assert stats.kstest(pop.utilization, stats.beta(2.0, 2.5).cdf).pvalue > 0.01
    rho = stats.spearmanr(pop.engagement, pop.utilization).statistic
    assert 0.2 < rho < 0.4


def test_usage_follows_seats_and_low_utilization_churns(tmp_path: Path) -> None:
    """Volume grows with seats, sub-linearly; accounts using little of their seats churn more."""
    result = generate(
        out_dir=tmp_path, customers=4000, days=120, seed=21, start=START, paid_ratio=1.0, fmt="parquet"
    )
    c = pd.read_parquet(result.files["customers"]).set_index("customer_id")
    events = pd.read_parquet(result.files["usage_events"])
    churn = pd.read_parquet(result.files["churn_labels"]).set_index("customer_id")["churn_date"]
    start = pd.Timestamp(START)
    churn_day = c.index.to_series().map((churn - start) / DAY)
    # Usage in the first 30 days (churn starts on day 30); customers who leave before day 60 are
    # left out, so no fading churner's last weeks fall in the measured month.
    month = events[events["event_timestamp"] < start + 30 * DAY]
    logins = month[month["event_type"] == "login"].groupby("customer_id").size()
    days = month["event_timestamp"].dt.floor("D").groupby(month["customer_id"]).nunique()
    per_active_day = (logins / days).reindex(c.index, fill_value=0.0)

    enterprise = c[c["plan_type"] == "enterprise"]["seat_count"]
    few, many = enterprise <= enterprise.quantile(1 / 3), enterprise >= enterprise.quantile(2 / 3)
    volume_ratio = per_active_day[many.index[many]].mean() / per_active_day[few.index[few]].mean()
    seat_ratio = enterprise[many].mean() / enterprise[few].mean()
    assert 1.3 < volume_ratio < seat_ratio

    kept = ~(churn_day < 60)
    churned = churn_day[kept].notna().to_numpy()
    utilization = ((per_active_day[kept] - 1.0) / np.sqrt(c.loc[kept, "seat_count"])).to_numpy()
    tercile = pd.qcut(utilization, 3, labels=False)
    low, high = churned[tercile == 0].mean(), churned[tercile == 2].mean()
    assert low > 1.6 * high


# ---------------------------------------------------------------------------------------------
# Window
# ---------------------------------------------------------------------------------------------


def test_default_window_ends_at_the_current_hour(tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result = generate(out_dir=tmp_path, customers=20, days=3)
    after = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert result.end in (before, after)
    assert result.end.tzinfo is not None
    assert result.start == result.end - timedelta(days=3)
    events = pd.read_csv(result.files["usage_events"])
    assert pd.to_datetime(events["ingested_at"], format=ISO, utc=True).max() <= pd.Timestamp(result.end)


def test_date_start_means_midnight_utc(tmp_path: Path) -> None:
    result = generate(out_dir=tmp_path, customers=5, days=2, start=date(2025, 6, 30))
    assert result.start == datetime(2025, 6, 30, tzinfo=UTC)
    assert result.end == datetime(2025, 7, 2, tzinfo=UTC)


def test_naive_and_offset_starts_are_utc(tmp_path: Path) -> None:
    naive = generate(out_dir=tmp_path / "a", customers=5, days=1, start=datetime(2025, 6, 30, 12))
    assert naive.start == datetime(2025, 6, 30, 12, tzinfo=UTC)
    cet = timezone(timedelta(hours=2))
    shifted = generate(
        out_dir=tmp_path / "b", customers=5, days=1, start=datetime(2025, 6, 30, 14, tzinfo=cet)
    )
    assert shifted.start == naive.start and shifted.start.utcoffset() == timedelta(0)
    assert shifted.files["customers"].read_bytes() == naive.files["customers"].read_bytes()


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


def load_manifest(result: GenerateResult) -> dict:
    assert result.manifest is not None and result.manifest.name == "_manifest.json"
    return json.loads(result.manifest.read_text())


def is_iso(value: str, date_only: bool = False) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d" if date_only else ISO)
    except ValueError:
        return False
    return True


def check_fault(
    fault: dict, row: pd.Series, repeats_earlier: bool, customers: set[str], end: datetime
) -> None:
    """Assert that `row` (text cells) really has the fault its manifest entry names.

    `repeats_earlier` says whether an identical row appears earlier in the file.
    """
    source, kind, column = fault["source"], fault["kind"], fault["column"]
    key_col = KEY_COLUMNS[source]
    assert (row[key_col] or None) == fault["key"]
    if kind == "duplicate_row":
        assert column is None
        assert repeats_earlier
    elif kind == "null_key":
        assert column == key_col and row[key_col] == ""
    elif kind == "unknown_enum":
        assert row[column] not in ENUMS[(source, column)] and row[column] != ""
    elif kind == "negative_amount":
        assert column == "amount" and float(row[column]) < 0
    elif kind == "malformed_timestamp":
        assert not is_iso(row[column], date_only=column == "signup_date") and row[column] != ""
    elif kind == "unknown_customer":
        assert column == "customer_id" and row[column] not in customers
        assert re.match(ID_PATTERNS["customers"], row[column])
    elif kind == "late_arrival":
        event = datetime.strptime(row["event_timestamp"], ISO)
        ingested = datetime.strptime(row["ingested_at"], ISO)
        assert timedelta(days=2) <= ingested - event <= timedelta(days=10)
        assert ingested.replace(tzinfo=UTC) <= end
    elif kind == "future_timestamp":
        assert datetime.strptime(row[column], ISO).replace(tzinfo=UTC) > end
    else:
        raise AssertionError(f"unknown kind {kind}")


def test_manifest_header_and_shape(dirty_csv: GenerateResult) -> None:
    manifest = load_manifest(dirty_csv)
    assert list(manifest) == ["seed", "dirty_rate", "faults"]
    assert manifest["seed"] == SMALL["seed"] and manifest["dirty_rate"] == DIRTY_RATE
    for fault in manifest["faults"]:
        assert list(fault) == ["source", "kind", "row", "key", "column"]
        assert fault["source"] in SOURCES and isinstance(fault["row"], int) and fault["row"] >= 1
    # A row gets at most one fault.
    places = [(f["source"], f["row"]) for f in manifest["faults"]]
    assert len(places) == len(set(places))


def test_every_manifest_entry_has_its_fault(dirty_csv: GenerateResult) -> None:
    frames = {s: read_text(p) for s, p in dirty_csv.files.items()}
    faults = load_manifest(dirty_csv)["faults"]
    faulty_customer_rows = {f["row"] for f in faults if f["source"] == "customers"}
    customers = {
        cid
        for i, cid in enumerate(frames["customers"]["customer_id"], start=1)
        if i not in faulty_customer_rows
    }
    repeats = {s: df.duplicated(keep="first").to_numpy() for s, df in frames.items()}
    kinds = set()
    for fault in faults:
        idx = fault["row"] - 1
        row = frames[fault["source"]].iloc[idx]
        check_fault(fault, row, repeats[fault["source"]][idx], customers, dirty_csv.end)
        kinds.add(fault["kind"])
    assert kinds == {
        "duplicate_row",
        "null_key",
        "unknown_enum",
        "negative_amount",
        "malformed_timestamp",
        "unknown_customer",
        "late_arrival",
        "future_timestamp",
    }


def detect_faults(source: str, df: pd.DataFrame, customers: set[str], end: datetime) -> pd.DataFrame:
    """Flag, per row of a text frame and independently of the manifest, every fault kind it shows."""
    flags = pd.DataFrame(index=df.index)
    key = KEY_COLUMNS[source]
    flags["duplicate_row"] = df.duplicated(keep="first")
    flags["null_key"] = df[key] == ""
    vocabulary = {**ENUMS, **GENERATED_VALUES}
    enum_cols = [col for (src, col) in vocabulary if src == source]
    flags["unknown_enum"] = np.logical_or.reduce(
        [(df[col] != "") & ~df[col].isin(vocabulary[(source, col)]) for col in enum_cols]
    )
    flags["negative_amount"] = df["amount"].astype(float) < 0 if source == "billing" else False
    parsed = {
        col: pd.to_datetime(df[col], format=ISO, utc=True, errors="coerce") for col in TS_COLUMNS[source]
    }
    malformed = [parsed[col].isna() for col in parsed]
    if source == "customers":
        malformed.append(pd.to_datetime(df["signup_date"], format="%Y-%m-%d", errors="coerce").isna())
    flags["malformed_timestamp"] = np.logical_or.reduce(malformed)
    known = df["customer_id"].isin(customers) | (df["customer_id"] == "")
    flags["unknown_customer"] = ~known if source in ("usage_events", "support_tickets", "billing") else False
    event = parsed[TS_COLUMNS[source][0]]
    flags["future_timestamp"] = event > pd.Timestamp(end)
    lag = parsed["ingested_at"] - event
    flags["late_arrival"] = (lag > pd.Timedelta(minutes=15)) if source == "usage_events" else False
    return flags.fillna(False).astype(bool)


def test_faulty_rows_are_exactly_the_listed_ones(dirty_csv: GenerateResult) -> None:
    """Every listed row shows its one fault and nothing else; every unlisted row is clean."""
    frames = {s: read_text(p) for s, p in dirty_csv.files.items()}
    faults = pd.DataFrame(load_manifest(dirty_csv)["faults"])
    customer_flags = detect_faults("customers", frames["customers"], set(), dirty_csv.end)
    customers = set(frames["customers"].loc[~customer_flags.any(axis=1), "customer_id"])
    for source in SOURCES:
        flags = detect_faults(source, frames[source], customers, dirty_csv.end)
        listed = pd.Series("", index=flags.index)
        mine = faults[faults["source"] == source]
        listed.iloc[mine["row"].to_numpy() - 1] = mine["kind"].to_numpy()
        for i in flags.index:
            shown = set(flags.columns[flags.loc[i].to_numpy()])
            assert shown == ({listed[i]} if listed[i] else set()), (source, i + 1, shown, listed[i])


def test_fault_counts_follow_the_rate(dirty_csv: GenerateResult, small_csv: GenerateResult) -> None:
    faults = load_manifest(dirty_csv)["faults"]
    counts = pd.DataFrame(faults).groupby(["source", "kind"]).size()
    applicable = {
        "customers": 4,
        "usage_events": 7,
        "support_tickets": 6,
        "billing": 6,
        "churn_labels": 4,
    }
    for source, n_kinds in applicable.items():
        clean_rows = small_csv.rows[source]
        per_kind = counts.loc[source]
        assert len(per_kind) == n_kinds, source
        for kind, count in per_kind.items():
            assert abs(count - DIRTY_RATE * clean_rows) <= 1 + 0.05 * DIRTY_RATE * clean_rows, (source, kind)
        late = per_kind.get("late_arrival", 0)
        assert dirty_csv.rows[source] == clean_rows + per_kind.sum() - late


def test_valid_rows_of_dirty_output_are_the_clean_output(dirty_csv: GenerateResult, small_csv) -> None:
    """Dropping the faulty extra rows gives back the clean files; late arrivals differ only in ingested_at."""
    faults = pd.DataFrame(load_manifest(dirty_csv)["faults"])
    for source in SOURCES:
        dirty = read_text(dirty_csv.files[source])
        clean = read_text(small_csv.files[source])
        mine = faults[faults["source"] == source]
        extra = mine.loc[mine["kind"] != "late_arrival", "row"].to_numpy() - 1
        late = mine.loc[mine["kind"] == "late_arrival", "row"].to_numpy() - 1
        is_late = dirty.index.isin(late)
        kept = dirty.drop(index=extra)
        kept_late = is_late[~dirty.index.isin(extra)]
        kept = kept.reset_index(drop=True)
        pd.testing.assert_frame_equal(kept.drop(columns="ingested_at"), clean.drop(columns="ingested_at"))
        assert (kept["ingested_at"][~kept_late] == clean["ingested_at"][~kept_late]).all()
        assert (kept["ingested_at"][kept_late] > clean["ingested_at"][kept_late]).all()


def test_exact_repeats_are_exactly_the_duplicate_faults(dirty_csv: GenerateResult) -> None:
    """Each duplicate_row entry repeats an earlier row, and no other row repeats one."""
    faults = pd.DataFrame(load_manifest(dirty_csv)["faults"])
    for source in SOURCES:
        repeats = read_text(dirty_csv.files[source]).duplicated(keep="first")
        listed = faults.loc[(faults["source"] == source) & (faults["kind"] == "duplicate_row"), "row"]
        assert len(listed) > 0, source
        assert sorted(listed - 1) == list(np.flatnonzero(repeats.to_numpy())), source


def test_dirty_parquet_uses_string_times_and_same_faults(dirty_parquet: GenerateResult, dirty_csv) -> None:
    for source in SOURCES:
        schema = pq.read_schema(dirty_parquet.files[source])
        for col in [*TS_COLUMNS[source], *(["signup_date"] if source == "customers" else [])]:
            assert schema.field(col).type == pa.string(), (source, col)
    assert pq.read_schema(dirty_parquet.files["billing"]).field("amount").type == pa.float64()
    manifest_pq, manifest_csv = load_manifest(dirty_parquet), load_manifest(dirty_csv)
    assert manifest_pq == manifest_csv
    tables = {s: pq.read_table(p) for s, p in dirty_parquet.files.items()}
    for fault in manifest_pq["faults"]:
        table = tables[fault["source"]]
        key = table.column(KEY_COLUMNS[fault["source"]])[fault["row"] - 1].as_py()
        assert key == fault["key"]
        if fault["kind"] == "null_key":
            assert key is None
        if fault["kind"] == "negative_amount":
            assert table.column("amount")[fault["row"] - 1].as_py() < 0


def test_clean_run_removes_stale_manifest(tmp_path: Path) -> None:
    dirty = generate(out_dir=tmp_path, customers=30, days=10, start=START, dirty_rate=0.05)
    assert dirty.manifest is not None and dirty.manifest.exists()
    clean = generate(out_dir=tmp_path, customers=30, days=10, start=START)
    assert clean.manifest is None and not (tmp_path / "_manifest.json").exists()


def test_clean_data_has_no_faults(small_frames: dict[str, pd.DataFrame], small_csv: GenerateResult) -> None:
    for source in SOURCES:
        text = read_text(small_csv.files[source])
        assert not text.duplicated().any(), source
    assert (small_frames["billing"]["amount"] > 0).all()


# ---------------------------------------------------------------------------------------------
# Edges, arguments, speed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_empty_sources_are_written_with_their_schema(tmp_path: Path, fmt: str) -> None:
    result = generate(
        out_dir=tmp_path, customers=10, days=3, start=START, paid_ratio=0.0, churn_base_rate=0.0, fmt=fmt
    )
    assert result.rows["billing"] == 0 and result.rows["churn_labels"] == 0
    for source in ("billing", "churn_labels"):
        path = result.files[source]
        if fmt == "csv":
            assert path.read_text() == ",".join(EXPECTED_COLUMNS[source]) + "\n"
        else:
            assert pq.read_schema(path).types == PARQUET_TYPES[source]


def test_dirty_run_with_empty_sources(tmp_path: Path) -> None:
    result = generate(out_dir=tmp_path, customers=10, days=3, start=START, paid_ratio=0.0, dirty_rate=0.5)
    faults = load_manifest(result)["faults"]
    assert not [f for f in faults if f["source"] == "billing"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "customers must be >= 1"),
        ({"customers": 2.5}, "customers must be a whole number"),
        ({"customers": True}, "customers must be a whole number"),
        ({"days": 0}, "days must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"churn_base_rate": 1.5}, "churn_base_rate must be between 0 and 1"),
        ({"paid_ratio": -0.1}, "paid_ratio must be between 0 and 1"),
        ({"dirty_rate": float("nan")}, "dirty_rate must be between 0 and 1"),
        ({"dirty_rate": "0.1"}, "dirty_rate must be a number"),
        ({"fmt": "json"}, "fmt must be 'csv' or 'parquet'"),
        ({"start": "2026-01-01"}, "start must be a datetime, a date or None"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(out_dir=tmp_path / "out", **{"customers": 5, "days": 2, **kwargs})
    assert not (tmp_path / "out").exists()


def test_arguments_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        generate(tmp_path)  # type: ignore[misc]


def test_default_size(tmp_path: Path) -> None:
    # How fast it is belongs to bench/generate_bench.py, not to a test on a machine of unknown load.
    result = generate(out_dir=tmp_path, start=START)
    assert result.rows["customers"] == 2000 and result.rows["usage_events"] > 200_000


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    customers=st.integers(1, 40),
    days=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    base=st.floats(0, 1),
    paid=st.floats(0, 1),
    dirty=st.sampled_from([0.0, 0.1, 1.0]),
)
def test_invariants_hold_for_any_settings(
    tmp_path_factory: pytest.TempPathFactory, customers: int, days: int, seed: int, base, paid, dirty
) -> None:
    out = tmp_path_factory.mktemp("prop")
    result = generate(
        out_dir=out,
        customers=customers,
        days=days,
        seed=seed,
        start=START,
        churn_base_rate=base,
        paid_ratio=paid,
        dirty_rate=dirty,
    )
    faults = load_manifest(result)["faults"] if dirty else []
    for source, path in result.files.items():
        df = read_text(path)
        assert list(df.columns) == EXPECTED_COLUMNS[source]
        bad = {f["row"] - 1 for f in faults if f["source"] == source and f["kind"] != "late_arrival"}
        valid = df.drop(index=list(bad))
        assert valid[KEY_COLUMNS[source]].is_unique and (valid[KEY_COLUMNS[source]] != "").all()
        for col in TS_COLUMNS[source]:
            assert valid[col].str.match(TS_RE).all()
            assert (valid[col] <= result.end.strftime(ISO)).all()
