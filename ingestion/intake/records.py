"""What the intake refuses outright: input that cannot be a record of its source at all.

Only the shape is checked here: an object per row, no column the contract does not name, the
primary key present, and a JSON type the column can hold (a string — the text form a CSV cell
has — for any column; a number for an int or float column; true/false for a bool column; null
for any). Whether a value is valid (type, format, enum, range, nullability of other columns) is
decided by the stream consumer with the contract's rules, which quarantines a bad record instead
of dropping it. Every row is checked before any is published, so a refused request publishes
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from churnops.contracts.source_contract import SourceContract


class RecordError(ValueError):
    """A row that cannot be a record of its source; the message names the row and the column."""


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# The JSON kinds each contract type accepts; the consumer parses strings with the contract.
_ACCEPTED = {
    "string": {"string", "null"},
    "date": {"string", "null"},
    "timestamp": {"string", "null"},
    "int": {"number", "string", "null"},
    "float": {"number", "string", "null"},
    "bool": {"boolean", "string", "null"},
}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_rows(body: bytes) -> list[Any]:
    """The request body as a JSON array.

    Args:
        body: The raw body.

    Returns:
        The array's items (not yet checked).

    Raises:
        json.JSONDecodeError: The body is not JSON (NaN and Infinity are not JSON either).
        UnicodeDecodeError: The body is not UTF-8.
        RecordError: The body is JSON but not an array.
    """
    payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(payload, list):
        raise RecordError(
            f"the body is a JSON {_json_kind(payload)}; expected a JSON array of records, e.g. "
            '[{"event_id": "EVT-0000000001", ...}]'
        )
    return payload


def check_row(index: int, row: object, contract: SourceContract) -> dict[str, Any]:
    """Check that one item can be a record of the source.

    Args:
        index: The item's 0-based position in the request.
        row: The item.
        contract: The source's contract.

    Returns:
        The row, as published.

    Raises:
        RecordError: The item is not an object, names an unknown column, lacks a primary-key
            value or holds a value of a JSON type its column cannot hold.
    """
    where = f"row {index}"
    if not isinstance(row, dict):
        raise RecordError(f"{where} is a JSON {_json_kind(row)}; each row must be a JSON object")
    types = {c.name: c.type for c in contract.columns}
    unknown = [name for name in row if name not in types]
    if unknown:
        raise RecordError(
            f"{where}: column {unknown[0]!r} is not in the {contract.name} contract "
            f"(v{contract.version}); its columns are {', '.join(types)}"
        )
    for name, value in row.items():
        kind = _json_kind(value)
        if kind not in _ACCEPTED[types[name]]:
            raise RecordError(
                f"{where}: column {name!r} is a {types[name]} column and cannot hold a JSON {kind}"
            )
    missing = [c for c in contract.primary_key if row.get(c) in (None, "")]
    if missing:
        raise RecordError(f"{where} has no value for the primary key column(s) {', '.join(missing)}")
    return row


def check_rows(rows: list[Any], contract: SourceContract) -> list[dict[str, Any]]:
    """Check every item of a request (see `check_row`).

    Args:
        rows: The request's items.
        contract: The source's contract.

    Returns:
        The rows, in order.

    Raises:
        RecordError: The first item that cannot be a record, named by its position.
    """
    return [check_row(i, row, contract) for i, row in enumerate(rows)]


def check_table(table: pa.Table, contract: SourceContract) -> None:
    """Check an uploaded file read as text: known columns, and a primary key on every row.

    Args:
        table: The file as `readers.read_landing_file` returns it.
        contract: The source's contract.

    Raises:
        RecordError: A column the contract does not name, a primary-key column missing from the
            file, or the first data row (1-based, as in the file) without a primary-key value.
    """
    known = contract.column_names
    unknown = [name for name in table.column_names if name not in known]
    if unknown:
        raise RecordError(
            f"column {unknown[0]!r} is not in the {contract.name} contract (v{contract.version}); "
            f"its columns are {', '.join(known)}"
        )
    for key in contract.primary_key:
        if key not in table.column_names:
            raise RecordError(f"the file has no primary key column {key!r}")
        values = table.column(key)
        empty = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_trim_whitespace(values), ""))
        hits = pc.indices_nonzero(pc.fill_null(empty, True))
        if len(hits):
            raise RecordError(f"data row {hits[0].as_py() + 1} has no value for primary key column {key!r}")


def table_rows(table: pa.Table, *, batch_rows: int) -> Iterator[list[Mapping[str, Any]]]:
    """An uploaded table as publishable rows, a batch at a time (nulls left out of each row).

    Args:
        table: The checked table (text values).
        batch_rows: Rows per batch.

    Yields:
        The batches, in file order; only one is held as Python objects at a time.
    """
    for batch in table.to_batches(max_chunksize=batch_rows):
        yield [{k: v for k, v in row.items() if v is not None} for row in batch.to_pylist()]
