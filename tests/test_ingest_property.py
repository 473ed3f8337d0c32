"""Property: arbitrary, malformed rows never crash ingestion without a clear error, and no row is lost.

A blank line is not a row (CSV readers skip it), so the generated rows always have a field.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnops.contracts.source_contract import load_source_contract
from churnops.ingestion.ingest import IngestError, ingest
from churnops.ingestion.validate import lake_schema
from churnops.storage.lake import read_source

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICKETS = load_source_contract("support_tickets")
CUSTOMERS = load_source_contract("customers")

garbage = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
moments = st.datetimes(min_value=datetime(2026, 2, 20), max_value=datetime(2026, 3, 3)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
)
VALID = {
    "ticket_id": st.integers(1, 40).map(lambda i: f"TCK-{i:06d}"),
    "customer_id": st.sampled_from(["CUST-000001", "CUST-000002", "CUST-000404"]),
    "created_at": moments,
    "category": st.sampled_from(["bug", "feature_request", "how_to", "billing", " Bug ", "BILLING"]),
    "priority": st.sampled_from(["low", "medium", "high", "urgent"]),
    "resolution_hours": st.one_of(
        st.just(""), st.floats(-5, 9000, allow_nan=False).map(lambda x: f"{x:.2f}")
    ),
    "satisfaction_score": st.one_of(st.just(""), st.integers(0, 6).map(str)),
    "ingested_at": moments,
}


def _field(column: str) -> st.SearchStrategy[str]:
    # Mostly plausible values, so some batches pass and others fail, with arbitrary text mixed in.
    return st.one_of(VALID[column], VALID[column], VALID[column], garbage)


well_formed = st.fixed_dictionaries({c: _field(c) for c in TICKETS.column_names}).map(
    lambda row: [row[c] for c in TICKETS.column_names]
)
rows_strategy = st.lists(
    st.one_of(well_formed, well_formed, well_formed, st.lists(garbage, min_size=1, max_size=10)), max_size=25
)


@pytest.fixture(scope="module")
def customers_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("customers")
    landing = root / "landing"
    landing.mkdir()
    with (landing / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CUSTOMERS.column_names)
        for i in (1, 2):
            values = [
                "Acme",
                "2026-01-01",
                "pro",
                "2",
                "retail",
                "US",
                "organic",
                "true",
                "2026-02-01T00:00:00Z",
            ]
            writer.writerow([f"CUST-{i:06d}", *values])
    report = ingest(
        landing_dir=landing,
        lake_dir=root / "lake",
        quarantine_dir=root / "q",
        log_db=root / "log.db",
        now=NOW,
        backfill=True,
    )
    assert report.ok
    return root / "lake"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, backfill=st.sampled_from([True, False, None]))
def test_arbitrary_rows_are_accounted_for(
    customers_lake: Path, rows: list[list[str]], backfill: bool | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lake = root / "lake"
        shutil.copytree(customers_lake, lake)
        landing = root / "landing"
        landing.mkdir()
        path = landing / "support_tickets.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(TICKETS.column_names)
            writer.writerows(rows)
        try:
            report = ingest(
                landing_dir=landing,
                lake_dir=lake,
                quarantine_dir=root / "q",
                log_db=root / "log.db",
                now=NOW,
                backfill=backfill,
            )
        except IngestError as exc:
            message = str(exc)
            assert str(path) in message and "expected" in message and "\n" not in message
            return
        (batch,) = report.batches
        assert batch.received == len(rows)
        assert batch.received == batch.accepted + batch.quarantined + batch.duplicates
        landed = read_source(lake, "support_tickets", schema=lake_schema(TICKETS))
        assert len(landed) == batch.accepted and landed["ticket_id"].is_unique
        if batch.quarantined:
            quarantine = pq.read_table(batch.quarantine_file).to_pandas()
            assert len(quarantine) == batch.quarantined
            assert quarantine["_row"].is_unique and quarantine["_row"].between(1, len(rows)).all()
            assert quarantine["_rule"].notna().all() and quarantine["_message"].notna().all()
            kept = [r for i, r in enumerate(rows, start=1) if i not in set(quarantine["_row"])]
        else:
            assert batch.quarantine_file is None
            kept = rows
        if batch.status == "ok":
            # Every row not quarantined is in the lake under its key, or a duplicate of one that is.
            assert {r[0].strip() for r in kept} == set(landed["ticket_id"])
            assert batch.duplicates == len(kept) - len({r[0].strip() for r in kept})
        else:
            assert batch.accepted == 0 and batch.failures and len(landed) == 0
