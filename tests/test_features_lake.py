"""Hand-made lakes for the feature tests, and a brute-force oracle written apart from the SQL.

`random_records` draws typed source frames with the awkward cases on purpose: events at exactly
00:00:00 (the window's edges), null scores and minutes, invoice ties, customers without any
activity, records ingested days after their event time. `oracle` computes a customer's features
at one snapshot time in plain Python from those records, reading the contract's definitions.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.contracts.feature_contract import FeatureContract, load_feature_contract
from churnops.storage.lake import partition_days, write_partition

START = datetime(2026, 3, 1, tzinfo=UTC)
CONTRACT = load_feature_contract()
TIMESTAMP_COLUMNS = {
    "customers": "signup_date",
    "usage_events": "event_timestamp",
    "support_tickets": "created_at",
    "billing": "invoice_date",
}


def _ts(values: list[datetime]) -> pd.Series:
    return pd.Series(pd.to_datetime(values, utc=True)).astype("datetime64[us, UTC]")


def _moment(rng: np.random.Generator, start: datetime, days: int) -> datetime:
    day = start + timedelta(days=int(rng.integers(0, days)))
    if rng.random() < 0.08:
        return day  # exactly on a boundary: the window's edges
    return day + timedelta(seconds=int(rng.integers(1, 86_400)), microseconds=int(rng.integers(0, 1000)))


def random_records(
    *, customers: int, days: int, seed: int, start: datetime = START, ingest_delay_days: int = 2
) -> dict[str, pd.DataFrame]:
    """Typed frames for every source the contract reads (lake dtypes, timestamps in us UTC).

    Args:
        customers: How many customers.
        days: The span of activity, from `start`.
        seed: The random seed.
        start: The first day.
        ingest_delay_days: The largest delay between an event and its ingestion.

    Returns:
        Frames by source name.
    """
    rng = np.random.default_rng(seed)
    ids = [f"CUST-{i:06d}" for i in range(1, customers + 1)]
    signups = [(start + timedelta(days=int(rng.integers(-20, days - 5)))).date() for _ in ids]
    plans = rng.choice(["basic", "pro", "enterprise"], size=customers).tolist()
    cust = pd.DataFrame(
        {
            "customer_id": ids,
            "company_name": [f"Company {i}" for i in range(customers)],
            "signup_date": signups,
            "plan_type": plans,
            "seat_count": rng.integers(1, 50, size=customers),
            "industry": rng.choice(["education", "finance"], size=customers),
            "country": "US",
            "marketing_source": "organic",
            "is_active": True,
            "ingested_at": _ts([start] * customers),
        }
    )
    events, tickets, invoices = [], [], []
    n_event = n_ticket = n_invoice = 0
    for i, cid in enumerate(ids):
        rate = rng.choice([0.0, 0.5, 3.0])  # some customers never do anything
        for _ in range(int(rng.poisson(rate * days))):
            when = _moment(rng, start - timedelta(days=10), days + 10)
            kind = str(
                rng.choice(["login", "course_enroll", "video_watch", "quiz_attempt", "certificate_earned"])
            )
            n_event += 1
            watch = (
                float(np.round(rng.uniform(0, 90), 2))
                if kind == "video_watch" and rng.random() > 0.1
                else None
            )
            score = (
                float(np.round(rng.uniform(0, 100), 1))
                if kind == "quiz_attempt" and rng.random() > 0.1
                else None
            )
            delay = timedelta(hours=int(rng.integers(0, 24 * ingest_delay_days + 1)))
            events.append((f"EVT-{n_event:010d}", cid, when, kind, "COURSE-001", watch, score, when + delay))
        for _ in range(int(rng.poisson(0.05 * days))):
            when = _moment(rng, start, days)
            n_ticket += 1
            tickets.append((f"TCK-{n_ticket:06d}", cid, when, "bug", "low", 3.0, 4, when))
        if plans[i] != "basic" or rng.random() < 0.2:
            first = datetime.combine(signups[i], datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
            when = first
            while when < start + timedelta(days=days):
                status = str(rng.choice(["paid", "paid", "paid", "failed", "refunded"]))
                plan = str(rng.choice(["pro", "enterprise"]))
                previous = plans[i]
                amount = float(np.round(rng.uniform(10, 500), 2))
                n_invoice += 1
                invoices.append(
                    (f"INV-{n_invoice:07d}", cid, when, amount, "USD", status, plan, previous, when)
                )
                if rng.random() < 0.15:  # a second invoice at the very same time: a tie
                    n_invoice += 1
                    invoices.append(
                        (f"INV-{n_invoice:07d}", cid, when, amount, "USD", "paid", "pro", None, when)
                    )
                when += timedelta(days=int(rng.integers(10, 31)))
    usage = pd.DataFrame(
        events,
        columns=[
            "event_id",
            "customer_id",
            "event_timestamp",
            "event_type",
            "course_id",
            "watch_minutes",
            "quiz_score",
            "ingested_at",
        ],
    )
    support = pd.DataFrame(
        tickets,
        columns=[
            "ticket_id",
            "customer_id",
            "created_at",
            "category",
            "priority",
            "resolution_hours",
            "satisfaction_score",
            "ingested_at",
        ],
    )
    billing = pd.DataFrame(
        invoices,
        columns=[
            "invoice_id",
            "customer_id",
            "invoice_date",
            "amount",
            "currency",
            "payment_status",
            "plan_type",
            "previous_plan_type",
            "ingested_at",
        ],
    )
    return {"customers": cust, **typed(usage=usage, support_tickets=support, billing=billing)}


def typed(**frames: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Give hand-written frames the lake's dtypes (timestamps us UTC, floats, nullable ints)."""
    out = {}
    for name, frame in frames.items():
        frame = frame.copy()
        for column in ("event_timestamp", "created_at", "invoice_date", "ingested_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        for column in ("watch_minutes", "quiz_score", "amount", "resolution_hours"):
            if column in frame:
                frame[column] = frame[column].astype("float64")
        if "satisfaction_score" in frame:
            frame["satisfaction_score"] = frame["satisfaction_score"].astype("Int64")
        out["usage_events" if name == "usage" else name] = frame
    return out


def write_lake(lake_dir: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Write every source, one partition per event day (replacing existing partitions)."""
    for source, frame in frames.items():
        if frame.empty:
            continue
        days = partition_days(frame, TIMESTAMP_COLUMNS[source])
        for day, part in frame.groupby(days, sort=True):
            write_partition(lake_dir, source, str(day), part)


def add_to_lake(lake_dir: Path, source: str, frame: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """Append rows to a source the way ingestion does: rewrite the touched partitions whole."""
    combined = pd.concat([existing, frame], ignore_index=True)
    touched = set(partition_days(frame, TIMESTAMP_COLUMNS[source]))
    days = partition_days(combined, TIMESTAMP_COLUMNS[source])
    for day, part in combined.groupby(days, sort=True):
        if day in touched:
            write_partition(lake_dir, source, str(day), part)
    return combined


def _matches(row: dict[str, object], expression: str | None) -> bool:
    """The contract's filters are `column = 'value'`; evaluated here without SQL."""
    if not expression:
        return True
    column, value = (part.strip() for part in expression.split("="))
    return row[column] == value.strip("'")


_RECORDS: dict[int, tuple[pd.DataFrame, dict[str, list[dict[str, object]]]]] = {}


def _records(frame: pd.DataFrame, ts_col: str | None) -> dict[str, list[dict[str, object]]]:
    """A source's rows as plain dicts per customer, timestamps as aware datetimes (cached)."""
    cached = _RECORDS.get(id(frame))
    if cached is not None and cached[0] is frame:
        return cached[1]
    by_customer: dict[str, list[dict[str, object]]] = {}
    for row in frame.to_dict("records"):
        if ts_col is not None:
            row[ts_col] = row[ts_col].to_pydatetime()
        by_customer.setdefault(row["customer_id"], []).append(row)
    _RECORDS[id(frame)] = (frame, by_customer)
    return by_customer


def oracle(
    frames: dict[str, pd.DataFrame], customer_id: str, at: datetime, contract: FeatureContract = CONTRACT
) -> dict[str, object]:
    """Every feature of one customer at snapshot time `at`, by brute force over the records."""
    cust = _records(frames["customers"], None)[customer_id][0]
    signup = datetime.combine(cust["signup_date"], datetime.min.time(), tzinfo=UTC)
    out: dict[str, object] = {}
    for f in contract.features:
        if f.aggregation == "as_of":
            if f.source == "customers" and f.column == "signup_date":
                out[f.name] = (at - signup) // timedelta(days=1)
            elif f.source == "customers":
                out[f.name] = int(cust[f.column])
            else:
                ts_col = TIMESTAMP_COLUMNS[f.source]
                mine = [r for r in _records(frames[f.source], ts_col).get(customer_id, []) if r[ts_col] <= at]
                if not mine:
                    out[f.name] = cust.get(f.column, f.default)
                else:
                    last = max(r[ts_col] for r in mine)
                    out[f.name] = max(r[f.column] for r in mine if r[ts_col] == last)
            continue
        ts_col = TIMESTAMP_COLUMNS[f.source]
        window = f.window or timedelta(0)
        picked = [
            r
            for r in _records(frames[f.source], ts_col).get(customer_id, [])
            if at - window < r[ts_col] <= at and _matches(r, f.filter)
        ]
        if f.aggregation == "count":
            out[f.name] = len(picked)
        elif f.aggregation == "count_distinct_days":
            out[f.name] = len({r[ts_col].date() for r in picked})
        elif f.aggregation in ("sum", "mean"):
            values = [r[f.column] for r in picked if not pd.isna(r[f.column])]
            if not values:
                out[f.name] = f.default
            else:
                out[f.name] = math.fsum(values) / (len(values) if f.aggregation == "mean" else 1)
        elif f.aggregation == "days_since_last":
            if not picked:
                out[f.name] = f.default
            else:
                days = (at - max(r[ts_col] for r in picked)) // timedelta(days=1)
                out[f.name] = min(days, f.cap) if f.cap is not None else days
    return out


def test_random_records_have_lake_types(tmp_path: Path) -> None:
    frames = random_records(customers=20, days=20, seed=1)
    write_lake(tmp_path, frames)
    usage = pd.read_parquet(next((tmp_path / "usage_events").glob("date=*/data.parquet")))
    assert str(usage["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(usage["ingested_at"].dtype) == "datetime64[us, UTC]"
    assert isinstance(frames["customers"]["signup_date"].iloc[0], date)


def test_oracle_on_a_hand_computed_case() -> None:
    day = datetime(2026, 4, 1, tzinfo=UTC)
    frames = {
        "customers": pd.DataFrame(
            {
                "customer_id": ["C1"],
                "signup_date": [date(2026, 3, 1)],
                "plan_type": ["basic"],
                "seat_count": [3],
            }
        ),
        **typed(
            usage=pd.DataFrame(
                {
                    "customer_id": ["C1"] * 4,
                    # the first is exactly 30 days before `day`: outside (S - 30d, S]
                    "event_timestamp": [
                        day - timedelta(days=30),
                        day - timedelta(days=29, hours=23),
                        day,
                        day,
                    ],
                    "event_type": ["login", "quiz_attempt", "video_watch", "login"],
                    "watch_minutes": [None, None, 12.5, None],
                    "quiz_score": [None, 80.0, None, None],
                }
            ),
            billing=pd.DataFrame(
                {
                    "customer_id": ["C1"],
                    "invoice_date": [day + timedelta(seconds=1)],
                    "amount": [9.0],
                    "payment_status": ["paid"],
                    "plan_type": ["pro"],
                }
            ),
            support_tickets=pd.DataFrame({"customer_id": [], "created_at": []}),
        ),
    }
    got = oracle(frames, "C1", day)
    assert got["sessions_30d"] == 1
    assert got["events_30d"] == 3
    assert got["active_days_30d"] == 2  # 2026-03-02 and 2026-04-01 (the midnight events)
    assert got["quiz_avg_score_30d"] == 80.0
    assert got["watch_minutes_30d"] == 12.5
    assert got["days_since_last_event"] == 0
    assert got["orders_30d"] == 0  # the invoice is one second after S
    assert got["plan_type"] == "basic"
    assert got["tenure_days"] == 31
    assert got["seat_count"] == 3
