"""The intake's routes: events, uploads, schemas, health and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from churnops.contracts.json_schema import contract_json_schema
from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.broker import BrokerError, Published
from churnops.ingestion.intake import auth
from churnops.ingestion.intake.errors import IntakeError
from churnops.ingestion.intake.metrics import IntakeMetrics
from churnops.ingestion.intake.publisher import Publisher
from churnops.ingestion.intake.records import RecordError, check_rows, check_table, parse_rows, table_rows
from churnops.ingestion.intake.schemas import (
    CSV,
    EVENTS_BODY,
    OCTET_STREAM,
    PARQUET,
    UPLOAD_BODY,
    EventsAccepted,
    Health,
    UploadAccepted,
    error_responses,
)
from churnops.ingestion.intake.settings import IntakeSettings
from churnops.ingestion.intake.uploads import ReceivedFile, UploadTooLarge, keep_file, receive_file
from churnops.ingestion.readers import IngestError, read_landing_file
from churnops.storage.keys import KeyRing

_API_KEY = APIKeyHeader(
    name=auth.API_KEY_HEADER, auto_error=False, description="An intake key allowed for the source."
)
_EXTENSIONS = {CSV: ".csv", PARQUET: ".parquet"}


@dataclass
class IntakeState:
    """What the routes share.

    Attributes:
        settings: The service's settings.
        contracts: The source contracts, by name.
        keys: The key ring; None when keys are not required.
        publisher: The broker connection.
        metrics: The service's metrics.
    """

    settings: IntakeSettings
    contracts: Mapping[str, SourceContract]
    keys: KeyRing | None
    publisher: Publisher
    metrics: IntakeMetrics


def _state(request: Request) -> IntakeState:
    return request.app.state.intake


async def authorized(
    request: Request, source: str, key: Annotated[str | None, Depends(_API_KEY)]
) -> SourceContract:
    """The contract of the path's source, once the request may deliver it (a route dependency).

    Args:
        request: The request (its app holds the contracts and the key ring).
        source: The source named in the path.
        key: The `X-API-Key` header, if any.

    Returns:
        The source's contract.

    Raises:
        IntakeError: 401, 403 or 404, as `auth.authorize` says.
    """
    state = _state(request)
    return auth.authorize(source=source, key=key, contracts=state.contracts, keys=state.keys)


Authorized = Annotated[SourceContract, Depends(authorized)]

deliveries = APIRouter(tags=["deliveries"])
registry = APIRouter(tags=["schemas"])
probes = APIRouter(tags=["operations"])


def _too_large(what: str, limit: int) -> IntakeError:
    return IntakeError(413, "too_large", f"{what} is larger than this intake's limit of {limit:,} bytes")


def _check_declared_length(request: Request, *, what: str, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(what, limit)


async def _body(request: Request, *, idle_s: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; a pause longer than `idle_s` ends it with 408."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise IntakeError(
                408,
                "request_timeout",
                f"no part of the request body arrived for {idle_s:g} s; send it again",
                headers={"Connection": "close"},
            ) from exc
        except ClientDisconnect as exc:
            raise IntakeError(400, "interrupted", "the request body ended before it was complete") from exc
        yield chunk


async def read_body(request: Request, *, limit: int, idle_s: float) -> bytes:
    """Read a whole request body, refusing it as soon as it passes the limit.

    Args:
        request: The request.
        limit: Most bytes accepted.
        idle_s: Longest pause between two parts of the body.

    Returns:
        The body.

    Raises:
        IntakeError: 413 past the limit (at once when `Content-Length` says so), 408 when the
            body stops arriving, 400 when the client went away.
    """
    _check_declared_length(request, what="the request body", limit=limit)
    chunks, size = [], 0
    async for chunk in _body(request, idle_s=idle_s):
        size += len(chunk)
        if size > limit:
            raise _too_large("the request body", limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _publish(
    state: IntakeState, contract: SourceContract, batches: Iterable[list[Mapping[str, Any]]]
) -> list[Published]:
    acks: list[Published] = []
    try:
        for batch in batches:
            acks += await state.publisher.publish(contract, batch)
    except BrokerError as exc:
        stored = sum(not a.duplicate for a in acks)
        raise IntakeError(
            503,
            "broker_unavailable",
            f"the records were not all accepted: {' '.join(str(exc).split())}. {stored} of them were "
            "stored before it failed; send the same request again (the broker drops what it has).",
            headers={"Retry-After": "5"},
        ) from exc
    duplicates = sum(a.duplicate for a in acks)
    state.metrics.counted(source=contract.name, published=len(acks) - duplicates, duplicates=duplicates)
    return acks


def _batched(rows: list[dict[str, Any]], size: int) -> Iterable[list[Mapping[str, Any]]]:
    return (rows[i : i + size] for i in range(0, len(rows), size))


@deliveries.post(
    "/v1/events/{source}",
    status_code=202,
    summary="Deliver records of a source (events, webhooks)",
    responses=error_responses(400, 401, 403, 404, 408, 413, 422, 503),
    openapi_extra={"requestBody": EVENTS_BODY},
)
async def post_events(request: Request, contract: Authorized) -> EventsAccepted:
    """Publish a JSON array of records; 202 once the broker has stored every one.

    A record the broker already holds (the same record re-sent within its duplicate window) is
    counted as a duplicate and stored once. Value rules (types, formats, enums, ranges) are
    applied downstream, where a bad record is quarantined, not dropped.
    """
    settings = _state(request).settings
    body = await read_body(request, limit=settings.max_request_bytes, idle_s=settings.body_idle_timeout_s)
    try:
        items = parse_rows(body)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise IntakeError(422, "invalid_records", str(exc)) from exc
        raise IntakeError(400, "malformed_json", f"the request body is not valid JSON ({exc})") from exc
    if len(items) > settings.max_rows:
        raise IntakeError(
            413, "too_many_rows", f"{len(items):,} records in one request; the limit is {settings.max_rows:,}"
        )
    try:
        rows = check_rows(items, contract)
    except RecordError as exc:
        raise IntakeError(422, "invalid_records", str(exc)) from exc
    acks = await _publish(_state(request), contract, _batched(rows, settings.publish_batch_rows))
    duplicates = sum(a.duplicate for a in acks)
    return EventsAccepted(
        source=contract.name,
        contract_version=contract.version,
        rows=len(rows),
        published=len(rows) - duplicates,
        duplicates=duplicates,
        sequences=[a.sequence for a in acks],
    )


def upload_extension(content_type: str | None, fmt: str | None) -> str:
    """The file extension of an upload, from its content type and the `format` parameter.

    Args:
        content_type: The `Content-Type` header.
        fmt: The `format` query parameter (`csv` or `parquet`), if given.

    Returns:
        `.csv` or `.parquet`.

    Raises:
        IntakeError: 415 for another content type; 422 when the format is missing for
            `application/octet-stream` or contradicts the content type.
    """
    media = (content_type or OCTET_STREAM).split(";", 1)[0].strip().lower()
    wanted = f".{fmt}" if fmt else None
    if media == OCTET_STREAM:
        if wanted is None:
            raise IntakeError(
                422,
                "format_needed",
                f"an {OCTET_STREAM} upload needs ?format=csv or ?format=parquet",
            )
        return wanted
    if media not in _EXTENSIONS:
        raise IntakeError(
            415,
            "unsupported_media_type",
            f"uploads are {CSV}, {PARQUET}, or {OCTET_STREAM} with ?format=; got {media!r}",
        )
    if wanted is not None and wanted != _EXTENSIONS[media]:
        raise IntakeError(422, "format_conflict", f"?format={fmt} contradicts Content-Type {media}")
    return _EXTENSIONS[media]


def _read_upload(received: ReceivedFile, contract: SourceContract) -> pa.Table:
    """The upload read exactly as `churnops ingest` reads a landing file, then shape-checked."""
    try:
        table = read_landing_file(received.temp, contract)
        check_table(table, contract)
    except (IngestError, RecordError) as exc:
        # The temporary path means nothing to the sender; the hash names the upload.
        named = f"upload sha256:{received.sha256}{received.temp.suffix}"
        detail = str(exc).replace(f"landing file {received.temp}", named).replace(str(received.temp), named)
        raise IntakeError(422, "unreadable_upload", " ".join(detail.split())) from exc
    return table


@deliveries.put(
    "/v1/uploads/{source}",
    status_code=202,
    summary="Upload a CSV or Parquet export of a source",
    responses=error_responses(400, 401, 403, 404, 408, 413, 415, 422, 503),
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def put_upload(
    request: Request,
    contract: Authorized,
    format: Annotated[
        Literal["csv", "parquet"] | None,
        Query(description="The file's format; needed with Content-Type application/octet-stream."),
    ] = None,
) -> UploadAccepted:
    """Keep an uploaded file (content-addressed) and publish its rows; 202 once the broker has them.

    The body is streamed to disk under the size limit (413 as soon as it passes it), read with
    the same reader as `churnops ingest` (422 naming the problem when it is not a table of the
    source), kept as `<source>/<sha256>.<ext>` and its rows published like events.
    """
    state = _state(request)
    limit = state.settings.max_upload_bytes
    extension = upload_extension(request.headers.get("content-type"), format)
    _check_declared_length(request, what="the upload", limit=limit)
    folder = state.settings.uploads_dir / contract.name
    try:
        chunks = _body(request, idle_s=state.settings.body_idle_timeout_s)
        received = await receive_file(chunks, folder=folder, extension=extension, limit=limit)
    except UploadTooLarge as exc:
        raise _too_large("the upload", limit) from exc
    try:
        table = await run_in_threadpool(_read_upload, received, contract)
    except BaseException:
        received.temp.unlink(missing_ok=True)
        raise
    kept, new_file = keep_file(received, folder=folder, extension=extension)
    batches = table_rows(table, batch_rows=state.settings.publish_batch_rows)
    acks = await _publish(state, contract, batches)
    state.metrics.upload_bytes.labels(contract.name).inc(received.size)
    duplicates = sum(a.duplicate for a in acks)
    return UploadAccepted(
        source=contract.name,
        contract_version=contract.version,
        sha256=received.sha256,
        file=str(Path(contract.name) / kept.name),
        bytes=received.size,
        new_file=new_file,
        rows=table.num_rows,
        published=len(acks) - duplicates,
        duplicates=duplicates,
        first_sequence=acks[0].sequence if acks else None,
        last_sequence=acks[-1].sequence if acks else None,
    )


SCHEMA_MEDIA_TYPE = "application/schema+json"


@registry.get(
    "/v1/schemas/{source}",
    summary="The JSON Schema of a source's records",
    responses={200: {"content": {SCHEMA_MEDIA_TYPE: {"schema": {"type": "object"}}}}} | error_responses(404),
)
async def get_schema(request: Request, source: str) -> JSONResponse:
    """The source contract as a JSON Schema (draft 2020-12) of one record; no key needed."""
    contracts = _state(request).contracts
    contract = contracts.get(source)
    if contract is None:
        raise IntakeError(
            404, "unknown_source", f"no source contract named {source!r}; sources: {', '.join(contracts)}"
        )
    return JSONResponse(
        contract_json_schema(contract, schema_id=str(request.url)), media_type=SCHEMA_MEDIA_TYPE
    )


@probes.get("/health", summary="Liveness and the broker connection")
async def health(request: Request) -> Health:
    """Always 200 while the process answers; `broker` says whether deliveries can be stored now."""
    connected = _state(request).publisher.connected
    return Health(status="ok", broker="connected" if connected else "not connected")


@probes.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(request: Request) -> PlainTextResponse:
    """Requests by route, source and status; records published and duplicates by source."""
    return PlainTextResponse(
        generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
