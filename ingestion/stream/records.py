"""Broker messages → the text tables batch validation reads, plus the messages that cannot be read.

A `StreamRecord` is what the consumer keeps of one message (no broker objects, so everything
below is plain functions over data). `decode` groups a micro-batch's records by source and turns
each source's records into one table of text columns, exactly the shape a landing file has after
`readers.read_landing_file`, so `rows.screen_rows` applies the same rules to both routes. A record
whose body is not a JSON object, or whose contract-version header names a version this consumer
does not have, is set aside with that reason for the source's quarantine.

`ingested_at` of a streamed record is the time the broker stored the message: a redelivery or a
replay of the same message gets the same value, so every decision downstream is repeatable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.readers import REDACTED

SEQUENCE_COLUMN = "_sequence"
BODY_COLUMN = "_body"
RULE_UNDECODABLE = "undecodable"
RULE_UNKNOWN_VERSION = "unknown_contract_version"


@dataclass(frozen=True)
class StreamRecord:
    """One message of the event stream.

    Attributes:
        sequence: Its stream sequence.
        source: The source its subject names.
        body: The message body.
        stored_at: When the broker stored it (UTC).
        version: The contract version its header names ("" when it names none).
        deliveries: How many times the broker has delivered it (1 on the first delivery).
    """

    sequence: int
    source: str
    body: bytes
    stored_at: datetime
    version: str
    deliveries: int = 1


@dataclass(frozen=True)
class Unreadable:
    """A record set aside before validation.

    Attributes:
        record: The record.
        rule: `undecodable` or `unknown_contract_version`.
        message: Why, for the quarantine.
    """

    record: StreamRecord
    rule: str
    message: str


@dataclass
class Decoded:
    """One source's records of a micro-batch.

    Attributes:
        records: The readable records, in sequence order (row i of `raw` is record i).
        unreadable: The records that could not be read.
    """

    records: list[tuple[StreamRecord, dict[str, Any]]] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def first(self) -> int:
        """The lowest sequence of the source's records."""
        return min(r.sequence for r in self._all())

    @property
    def last(self) -> int:
        """The highest sequence of the source's records."""
        return max(r.sequence for r in self._all())

    @property
    def received(self) -> int:
        """Every record of the source in the micro-batch."""
        return len(self.records) + len(self.unreadable)

    def _all(self) -> list[StreamRecord]:
        return [r for r, _ in self.records] + [u.record for u in self.unreadable]


def iso_micros(value: datetime) -> str:
    """A UTC time as ISO 8601 with microseconds and `Z`, the text form `ingested_at` is parsed from."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode(records: Sequence[StreamRecord], contracts: Mapping[str, SourceContract]) -> dict[str, Decoded]:
    """Group records by source and read their bodies.

    Args:
        records: A micro-batch, any order (grouped in sequence order here).
        contracts: The source contracts; a record of a source without one is not in the result.

    Returns:
        Source → its decoded records.
    """
    out: dict[str, Decoded] = {}
    for record in sorted(records, key=lambda r: r.sequence):
        contract = contracts.get(record.source)
        if contract is None:
            continue
        group = out.setdefault(record.source, Decoded())
        if record.version != str(contract.version):
            named = f"version {record.version}" if record.version else "no version"
            message = (
                f"the record names {named} of the {record.source} contract; this consumer validates "
                f"version {contract.version} (header Churnops-Contract-Version)"
            )
            group.unreadable.append(Unreadable(record, RULE_UNKNOWN_VERSION, message))
            continue
        row = _json_object(record.body)
        if row is None:
            message = "the message body is not a JSON object (expected one record as canonical JSON)"
            group.unreadable.append(Unreadable(record, RULE_UNDECODABLE, message))
            continue
        group.records.append((record, row))
    return out


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def as_text(value: Any) -> str | None:
    """A JSON value as the text a landing file would hold (null stays null).

    Args:
        value: A decoded JSON value.

    Returns:
        The text: booleans as `true`/`false`, numbers as JSON writes them, nested values as JSON
        (which the column's type rule then refuses).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def raw_table(group: Decoded, contract: SourceContract) -> pa.Table:
    """The readable records as text columns in contract order, plus their sequences.

    `ingested_at` is overwritten with the broker's storage time whatever the body said.

    Args:
        group: One source's decoded records.
        contract: The source's contract.

    Returns:
        One row per readable record, in sequence order; `SEQUENCE_COLUMN` is the stream sequence.
    """
    ingested = contract.schema_.ingested_at
    columns: dict[str, pa.Array] = {}
    for column in contract.column_names:
        if column == ingested:
            values = [iso_micros(r.stored_at) for r, _ in group.records]
        else:
            values = [as_text(row.get(column)) for _, row in group.records]
        columns[column] = pa.array(values, pa.string())
    columns[SEQUENCE_COLUMN] = pa.array([r.sequence for r, _ in group.records], pa.int64())
    return pa.table(columns)


def unreadable_table(group: Decoded, contract: SourceContract) -> pa.Table:
    """The unreadable records as quarantine input: null contract columns, sequence and body.

    A source with PII columns never has its undecodable bodies copied (they may hold PII that
    cannot be told apart from the rest): the body is redacted.

    Args:
        group: One source's decoded records.
        contract: The source's contract.

    Returns:
        One row per unreadable record, in sequence order.
    """
    pii = bool(contract.pii_columns)
    bodies = [REDACTED if pii else u.record.body.decode("utf-8", errors="replace") for u in group.unreadable]
    columns: dict[str, pa.Array] = {
        c: pa.nulls(len(group.unreadable), pa.string()) for c in contract.column_names
    }
    columns[SEQUENCE_COLUMN] = pa.array([u.record.sequence for u in group.unreadable], pa.int64())
    columns[BODY_COLUMN] = pa.array(bodies, pa.string())
    return pa.table(columns)
