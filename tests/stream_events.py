"""Deterministic customers and usage events with known faults, published as the intake would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.broker import (
    CONTRACT_VERSION_HEADER,
    MSG_ID_HEADER,
    BrokerNames,
    connect,
    encode_row,
    ensure_stream,
    publish_rows,
    stream_retention,
)

PLANS = ("basic", "pro", "enterprise")
TYPES = ("login", "course_enroll", "video_watch", "quiz_attempt", "certificate_earned")


@dataclass
class Workload:
    """What was published and what each record should become.

    Attributes:
        customers: Customer rows (all valid).
        valid: Valid event rows, distinct keys.
        faulty: Event rows that break a row rule, with the rule expected.
        resent: Valid event rows published a second time under another message id.
        undecodable: Bodies that are not JSON.
        wrong_version: Valid-looking rows sent with an unknown contract version.
    """

    customers: list[dict[str, Any]] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(default_factory=list)
    faulty: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    resent: list[dict[str, Any]] = field(default_factory=list)
    undecodable: list[bytes] = field(default_factory=list)
    wrong_version: list[dict[str, Any]] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        """Records that must end in the quarantine."""
        return len(self.faulty) + len(self.undecodable) + len(self.wrong_version)

    @property
    def messages(self) -> int:
        """Messages the broker stores."""
        return len(self.customers) + len(self.valid) + len(self.resent) + self.quarantined


def make_workload(*, customers: int, events: int, fault_every: int = 50, resend_every: int = 100) -> Workload:
    """Build a workload: every `fault_every`-th event is broken (2% by default), cycling five faults.

    Args:
        customers: How many customers.
        events: How many events in all (valid plus broken).
        fault_every: One event in this many is broken.
        resend_every: One valid event in this many is published twice.

    Returns:
        The workload.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    work = Workload()
    for i in range(customers):
        work.customers.append(
            {
                "customer_id": f"CUST-{i:06d}",
                "company_name": f"Company {i}",
                "signup_date": (now - timedelta(days=60 + i % 30)).date().isoformat(),
                "plan_type": PLANS[i % 3],
                "seat_count": 1 + i % 40,
                "industry": None,
                "country": "US",
                "marketing_source": "organic",
                "is_active": True,
            }
        )
    for i in range(events):
        kind = TYPES[i % len(TYPES)]
        row = {
            "event_id": f"EVT-{i:010d}",
            "customer_id": f"CUST-{i % customers:06d}",
            "event_timestamp": (now - timedelta(minutes=5 + (i * 7919) % (36 * 60))).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "event_type": kind,
            "course_id": None if kind == "login" else f"COURSE-{i % 200:03d}",
            "watch_minutes": round((i % 90) * 1.5, 1) if kind == "video_watch" else None,
            "quiz_score": float(i % 101) if kind == "quiz_attempt" else None,
        }
        if i % fault_every == fault_every - 1:
            _break(work, row, (i // fault_every) % 5)
            continue
        work.valid.append(row)
        if i % resend_every == 7:
            work.resent.append(row)
    return work


def _break(work: Workload, row: dict[str, Any], fault: int) -> None:
    if fault == 0:
        work.faulty.append((row | {"event_type": "teleport"}, "accepted_values"))
    elif fault == 1:
        work.faulty.append((row | {"event_type": "video_watch", "watch_minutes": -3.0}, "range"))
    elif fault == 2:
        work.faulty.append((row | {"event_id": "EVT-" + row["event_id"][-4:]}, "format"))
    elif fault == 3:
        work.undecodable.append(b'{"event_id": "' + row["event_id"].encode() + b'", truncated')
    else:
        work.wrong_version.append(row)


async def _publish(url: str, names: BrokerNames, work: Workload, *, chunk: int = 5_000) -> None:
    contracts = load_source_contracts()
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, names, max_age=stream_retention(contracts))
        await publish_rows(js, names, contract=contracts["customers"], rows=work.customers)
        events = contracts["usage_events"]
        subject = names.subject("usage_events")
        for n, body in enumerate(work.undecodable):
            await js.publish(subject, body, headers={MSG_ID_HEADER: f"bad-{n}", CONTRACT_VERSION_HEADER: "1"})
        for start in range(0, len(work.valid), chunk):
            await publish_rows(js, names, contract=events, rows=work.valid[start : start + chunk])
        await publish_rows(js, names, contract=events, rows=[r for r, _ in work.faulty])
        for n, row in enumerate(work.wrong_version):
            await js.publish(
                subject, encode_row(row), headers={MSG_ID_HEADER: f"v99-{n}", CONTRACT_VERSION_HEADER: "99"}
            )
        for n, row in enumerate(work.resent):
            await js.publish(
                subject, encode_row(row), headers={MSG_ID_HEADER: f"resend-{n}", CONTRACT_VERSION_HEADER: "1"}
            )
    finally:
        await nc.close()


def publish(url: str, names: BrokerNames, work: Workload) -> None:
    """Publish a workload: customers first, then broken and valid events, then the re-sends."""
    asyncio.run(_publish(url, names, work))
