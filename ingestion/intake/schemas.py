"""The intake's response bodies and the request bodies its OpenAPI document declares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from churnops.ingestion.intake.errors import ErrorBody

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
OCTET_STREAM = "application/octet-stream"


class EventsAccepted(BaseModel):
    """What the broker acknowledged for one events request.

    Attributes:
        source: The source delivered.
        contract_version: The contract version the records are published under.
        rows: Records in the request.
        published: Records the broker stored now.
        duplicates: Records the broker already had (a retried request).
        sequences: The stream sequence of each record, in request order.
    """

    source: str
    contract_version: int
    rows: int = Field(ge=0)
    published: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    sequences: list[int]


class UploadAccepted(BaseModel):
    """What the intake kept and the broker acknowledged for one uploaded file.

    Attributes:
        source: The source delivered.
        contract_version: The contract version the records are published under.
        sha256: The file's SHA-256, its name in the uploads folder.
        file: Where it is kept, relative to the uploads folder (`<source>/<sha256>.<ext>`).
        bytes: Its size.
        new_file: False when the same bytes had been uploaded before (kept once).
        rows: Data rows in the file.
        published: Records the broker stored now.
        duplicates: Records the broker already had.
        first_sequence: The stream sequence of the first row (None for a file without rows).
        last_sequence: The stream sequence of the last row.
    """

    source: str
    contract_version: int
    sha256: str
    file: str
    bytes: int = Field(ge=0)
    new_file: bool
    rows: int = Field(ge=0)
    published: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    first_sequence: int | None
    last_sequence: int | None


class Health(BaseModel):
    """Liveness, and whether the broker connection is up.

    Attributes:
        status: Always `ok` while the process answers.
        broker: `connected`, or `not connected` (deliveries get 503 until it is back).
    """

    status: str
    broker: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of the error statuses a route may answer.

    Args:
        statuses: The HTTP statuses.

    Returns:
        One entry per status, each with the `ErrorBody` model.
    """
    return {status: {"model": ErrorBody} for status in statuses}


EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "description": "A JSON array of records of the source, each a JSON object carrying its primary "
    "key; `GET /v1/schemas/{source}` gives their schema.",
    "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
}

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "The file's bytes: a CSV export (header line with the contract's columns) or a "
    "Parquet file. With `application/octet-stream`, the `format` query parameter names which.",
    "content": {
        CSV: {"schema": {"type": "string"}},
        PARQUET: {"schema": {"type": "string", "format": "binary"}},
        OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
    },
}
