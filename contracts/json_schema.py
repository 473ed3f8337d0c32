"""A source contract as JSON Schema (draft 2020-12): the schema of one record of the source.

The contracts are the schema registry: producers validate against what this function derives,
so nothing is written twice. The schema describes a clean record as a JSON object, one property
per column: its JSON type, `pattern` (the contract's `format`), `enum`, `minimum`/`maximum`,
`format: date-time` or `date` for time columns, and `null` for nullable columns (which may also be
left out). The non-nullable columns are required and no other property is allowed. Contract
facts JSON Schema has no keyword for travel as `x-` annotations: the primary key, the event time,
the version, the PII columns and the normalisation applied before the enum is checked.
"""

from __future__ import annotations

from typing import Any

from churnops.contracts.source_contract import Column, SourceContract

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_JSON_TYPES = {
    "string": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "date": "string",
    "timestamp": "string",
}
_FORMATS = {"date": "date", "timestamp": "date-time"}


def column_schema(column: Column) -> dict[str, Any]:
    """The JSON Schema of one column's value.

    Args:
        column: The contract's column.

    Returns:
        The property schema (type, pattern, enum, range, format, description).
    """
    kind = _JSON_TYPES[column.type]
    schema: dict[str, Any] = {
        "type": [kind, "null"] if column.nullable else kind,
        "description": column.description,
    }
    if column.type in _FORMATS:
        schema["format"] = _FORMATS[column.type]
    if column.format is not None:
        # The contract matches the whole value; a JSON Schema pattern matches anywhere.
        schema["pattern"] = f"^(?:{column.format})$"
    if column.enum is not None:
        schema["enum"] = [*column.enum, None] if column.nullable else list(column.enum)
    if column.normalize is not None:
        schema["x-normalize"] = column.normalize
    if column.minimum is not None:
        schema["minimum"] = column.minimum
    if column.maximum is not None:
        schema["maximum"] = column.maximum
    if column.pii:
        schema["x-pii"] = True
    if column.references is not None:
        schema["x-references"] = column.references
    return schema


def contract_json_schema(contract: SourceContract, *, schema_id: str | None = None) -> dict[str, Any]:
    """The JSON Schema of one record of a source.

    Args:
        contract: The source contract.
        schema_id: The schema's `$id` (e.g. the URL it is served at); none when not given.

    Returns:
        A draft 2020-12 JSON Schema object.
    """
    schema: dict[str, Any] = {"$schema": DRAFT}
    if schema_id is not None:
        schema["$id"] = schema_id
    schema |= {
        "title": f"{contract.name} record",
        "description": " ".join(contract.description.split()),
        "type": "object",
        "properties": {c.name: column_schema(c) for c in contract.columns},
        "required": [c.name for c in contract.columns if not c.nullable],
        "additionalProperties": False,
        "x-source": contract.name,
        "x-contract-version": contract.version,
        "x-primary-key": contract.primary_key,
        "x-event-time": contract.schema_.event_time,
        "x-ingested-at": contract.schema_.ingested_at,
    }
    return schema
