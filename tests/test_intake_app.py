"""The intake API against a real NATS JetStream: what 202 means, de-duplication, every refusal.

Each module run has its own home, hence its own stream (`BrokerNames.for_home`), deleted at the
end. Records are read back from the broker with `get_msg` and compared byte for byte with the
canonical JSON the test computes itself.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import nats
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from nats_server import nats_url  # noqa: F401  (the fixture)
from test_contracts_json_schema import generated_records
from typer.testing import CliRunner

from churnops.cli import app as cli
from churnops.contracts.json_schema import contract_json_schema
from churnops.contracts.source_contract import SOURCE_NAMES, load_source_contracts
from churnops.ingestion.broker import BrokerNames
from churnops.ingestion.intake.app import create_app
from churnops.ingestion.intake.errors import IntakeError
from churnops.ingestion.intake.routes import read_body
from churnops.ingestion.intake.settings import IntakeSettings
from churnops.storage.keys import KeyGrant, KeyRing, create_key, list_keys, load_grants, load_key_hashes

CONTRACTS = load_source_contracts()
APPROVED = ["cs-analytics-dashboard"]
LIMIT_BYTES = 64 * 1024
MAX_ROWS = 50


def _event(number: int, **changes: Any) -> dict[str, Any]:
    row = {
        "event_id": f"EVT-{number:010d}",
        "customer_id": "CUST-000001",
        "event_timestamp": "2026-11-30T10:00:00Z",
        "event_type": "quiz_attempt",
        "course_id": "COURSE-007",
        "quiz_score": 71.5,
        "ingested_at": "2026-11-30T10:00:05Z",
    }
    row.update(changes)
    return row


def _canonical(row: dict[str, Any]) -> bytes:
    # Written out here rather than taken from the broker module: what the consumer will read.
    return json.dumps(row, sort_keys=True, separators=(",", ":")).encode()


class Intake:
    """The app under test, its home, names and keys."""

    def __init__(self, home: Path, client: TestClient, names: BrokerNames, keys: dict[str, str]) -> None:
        self.home = home
        self.client = client
        self.names = names
        self.keys = keys

    def post(self, source: str, body: Any, *, key: str = "all", **kwargs: Any) -> Any:
        headers = {"X-API-Key": self.keys[key], **kwargs.pop("headers", {})}
        if isinstance(body, bytes):
            return self.client.post(f"/v1/events/{source}", content=body, headers=headers, **kwargs)
        return self.client.post(f"/v1/events/{source}", json=body, headers=headers, **kwargs)

    def put(
        self, source: str, data: Any, *, content_type: str = "text/csv", key: str = "all", **kw: Any
    ) -> Any:
        headers = {"X-API-Key": self.keys[key], "Content-Type": content_type}
        return self.client.put(f"/v1/uploads/{source}", content=data, headers=headers, **kw)


async def _read_stream(names: BrokerNames, url: str, sequences: list[int]) -> tuple[list[Any], int]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        messages = [await js.get_msg(names.stream, seq) for seq in sequences]
        info = await js.stream_info(names.stream)
        return messages, info.state.messages
    finally:
        await client.close()


async def _delete_stream(names: BrokerNames, url: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(names.stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


def _make_keys(keys_file: Path) -> dict[str, str]:
    return {
        "all": create_key(
            keys_file=keys_file, consumer="loader", approved_consumers=APPROVED,
            sources=SOURCE_NAMES, known_sources=SOURCE_NAMES,
        ),
        "usage": create_key(
            keys_file=keys_file, consumer="learning-platform", approved_consumers=APPROVED,
            sources=["usage_events"], known_sources=SOURCE_NAMES,
        ),
        "predict": create_key(keys_file=keys_file, consumer=APPROVED[0], approved_consumers=APPROVED),
        "unknown": "chk_not-a-key",
    }  # fmt: skip


def _app(home: Path, *, nats: str | None = None) -> FastAPI:
    settings = IntakeSettings(
        uploads_dir=home / "data" / "uploads",
        keys_file=home / "data" / "serving" / "api_keys.json",
        max_request_bytes=LIMIT_BYTES,
        max_rows=MAX_ROWS,
        max_upload_bytes=LIMIT_BYTES,
        publish_batch_rows=7,  # uploads of more than 7 rows go out in several batches
        nats_url=nats,
        connect_timeout_s=1.0,
    )
    return create_app(settings=settings, contracts=CONTRACTS, names=BrokerNames.for_home(home))


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Intake]:  # noqa: F811
    home = tmp_path_factory.mktemp("intake-home")
    keys = _make_keys(home / "data" / "serving" / "api_keys.json")
    names = BrokerNames.for_home(home)
    try:
        with TestClient(_app(home)) as client:
            yield Intake(home, client, names, keys)
    finally:
        asyncio.run(_delete_stream(names, nats_url))


def test_accepted_events_are_in_the_stream_byte_for_byte(intake: Intake, nats_url: str) -> None:  # noqa: F811
    rows = [_event(1), _event(2, event_type="login", course_id=None, quiz_score=None), _event(3)]
    response = intake.post("usage_events", rows)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["rows"], body["published"], body["duplicates"]) == (3, 3, 0)
    messages, _ = asyncio.run(_read_stream(intake.names, nats_url, body["sequences"]))
    for row, message in zip(rows, messages, strict=True):
        assert message.data == _canonical(row)
        assert message.subject == intake.names.subject("usage_events")
        digest = hashlib.sha256(_canonical(row)).hexdigest()[:16]
        assert message.headers["Nats-Msg-Id"] == f"usage_events:{row['event_id']}:{digest}"
        assert message.headers["Churnops-Contract-Version"] == "1"


def test_the_same_events_posted_twice_are_stored_once(intake: Intake, nats_url: str) -> None:  # noqa: F811
    rows = [_event(10), _event(11)]
    first = intake.post("usage_events", rows).json()
    _, count_before = asyncio.run(_read_stream(intake.names, nats_url, []))
    again = intake.post("usage_events", rows)
    assert again.status_code == 202
    assert (again.json()["published"], again.json()["duplicates"]) == (0, 2)
    assert again.json()["sequences"] == first["sequences"]
    _, count_after = asyncio.run(_read_stream(intake.names, nats_url, []))
    assert count_after == count_before
    # A corrected record (same key, other values) is a new message: the lake's dedup decides.
    corrected = intake.post("usage_events", [_event(10, quiz_score=80.0)]).json()
    assert (corrected["published"], corrected["duplicates"]) == (1, 0)


def test_generated_records_round_trip_through_the_schema_endpoint(
    intake: Intake,
    tmp_path: Path,
    nats_url: str,  # noqa: F811
) -> None:
    response = intake.client.get("/v1/schemas/usage_events")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/schema+json"
    schema = response.json()
    assert schema == contract_json_schema(CONTRACTS["usage_events"], schema_id=str(response.url))
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    rows = generated_records(tmp_path, customers=10, days=3)["usage_events"][:MAX_ROWS]
    accepted = intake.post("usage_events", rows)
    assert accepted.status_code == 202, accepted.text
    messages, _ = asyncio.run(_read_stream(intake.names, nats_url, accepted.json()["sequences"]))
    stored = [json.loads(m.data) for m in messages]
    assert stored == rows
    assert all(validator.is_valid(row) for row in stored)
    assert intake.client.get("/v1/schemas/payroll").status_code == 404


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if r.get(c) is None else r[c] for c in columns} for r in rows)
    return out.getvalue().encode()


def _upload_files(intake: Intake, source: str) -> list[Path]:
    return sorted((intake.home / "data" / "uploads" / source).iterdir())


def test_the_same_upload_twice_is_one_file_and_broker_duplicates(intake: Intake, nats_url: str) -> None:  # noqa: F811
    columns = CONTRACTS["usage_events"].column_names
    rows = [_event(100 + i) for i in range(9)]
    data = _csv(rows, columns)
    first = intake.put("usage_events", data)
    assert first.status_code == 202, first.text
    body = first.json()
    sha = hashlib.sha256(data).hexdigest()
    assert (body["sha256"], body["file"], body["bytes"], body["new_file"]) == (
        sha, f"usage_events/{sha}.csv", len(data), True
    )  # fmt: skip
    assert (body["rows"], body["published"], body["duplicates"]) == (9, 9, 0)
    again = intake.put("usage_events", data).json()
    assert (again["new_file"], again["published"], again["duplicates"]) == (False, 0, 9)
    assert [p.name for p in _upload_files(intake, "usage_events")] == [f"{sha}.csv"]
    assert (intake.home / "data" / "uploads" / "usage_events" / f"{sha}.csv").read_bytes() == data
    sequences = list(range(body["first_sequence"], body["last_sequence"] + 1))
    messages, _ = asyncio.run(_read_stream(intake.names, nats_url, sequences))
    # Read as text, as `churnops ingest` reads a CSV: every value a string, empty fields kept.
    expected = [dict(zip(columns, line, strict=True)) for line in csv.reader(io.StringIO(data.decode()))][1:]
    assert [m.data for m in messages] == [_canonical(r) for r in expected]


def test_a_parquet_upload_is_read_like_a_landing_file(intake: Intake) -> None:
    table = pa.table({"invoice_id": ["INV-00000001", "INV-00000002"], "amount": [12.5, None]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    response = intake.put(
        "billing", sink.getvalue(), content_type="application/octet-stream", params={"format": "parquet"}
    )
    assert response.status_code == 202, response.text
    assert (response.json()["rows"], response.json()["published"]) == (2, 2)
    assert response.json()["file"].endswith(".parquet")


WITHOUT_KEY = {k: v for k, v in _event(2).items() if k != "event_id"}
BAD_EVENTS = [
    (b'[{"event_id": ', 400, "not valid JSON"),
    (b'[{"event_id": "EVT-0000000001", "quiz_score": NaN}]', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ({"rows": []}, 422, "JSON object; expected a JSON array"),
    ([_event(1), "EVT-0000000002"], 422, "row 1 is a JSON string"),
    ([_event(1), WITHOUT_KEY], 422, "row 1 has no value for the primary key column(s) event_id"),
    ([_event(1, event_id="")], 422, "row 0 has no value for the primary key"),
    ([_event(1, colour="red")], 422, "row 0: column 'colour' is not in the usage_"),
    ([_event(1, event_type=5)], 422, "row 0: column 'event_type' is a string column and cannot hold"),
    ([_event(1, quiz_score=True)], 422, "'quiz_score' is a float column and cannot hold a JSON boolean"),
    ([_event(1, quiz_score=[1])], 422, "cannot hold a JSON array"),
    ([_event(i) for i in range(MAX_ROWS + 1)], 413, f"the limit is {MAX_ROWS}"),
    ([_event(1, course_id="x" * LIMIT_BYTES)], 413, f"limit of {LIMIT_BYTES:,} bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "says"), BAD_EVENTS)
def test_events_that_cannot_be_records_are_refused(
    intake: Intake,
    body: Any,
    status: int,
    says: str,
    nats_url: str,  # noqa: F811
) -> None:
    _, before = asyncio.run(_read_stream(intake.names, nats_url, []))
    response = intake.post("usage_events", body)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    _, after = asyncio.run(_read_stream(intake.names, nats_url, []))
    assert after == before  # a refused request publishes nothing


@pytest.mark.parametrize(
    ("source", "key", "status", "says"),
    [
        ("usage_events", None, 401, "requires an API key"),
        ("usage_events", "unknown", 401, "does not hold a valid API key"),
        ("usage_events", "predict", 403, "none (it is a prediction key)"),
        ("billing", "usage", 403, "may not deliver billing; sources it may deliver: usage_events"),
        ("payroll", "all", 404, "no source contract named 'payroll'"),
    ],
)
def test_keys_and_sources_are_checked(
    intake: Intake, source: str, key: str | None, status: int, says: str
) -> None:
    headers = {"X-API-Key": intake.keys[key]} if key else {}
    for response in (
        intake.client.post(f"/v1/events/{source}", json=[_event(1)], headers=headers),
        intake.client.put(
            f"/v1/uploads/{source}", content=b"x", headers={**headers, "Content-Type": "text/csv"}
        ),
    ):
        assert response.status_code == status, response.text
        assert says in response.json()["detail"]
    assert intake.post("usage_events", [_event(1)], key="usage").status_code == 202


USAGE_HEADER = ",".join(CONTRACTS["usage_events"].column_names).encode()
NO_VALUES = b"," * 7 + b"\n"  # a usage_events row of 8 empty fields
BAD_UPLOADS = [
    (b"", "text/csv", {}, 422, "is empty"),
    (b"PAR1\x00\x01garbage", "text/csv", {}, 422, "is binary, not CSV text"),
    (b"not parquet", "application/vnd.apache.parquet", {}, 422, "is not a Parquet file"),
    (b"a;b;c\n1;2;3\n", "text/csv", {}, 422, "is separated by ';'"),
    (USAGE_HEADER + b"\nEVT-0000000001,CUST-000001\n", "text/csv", {}, 422, "data row 1 has 2 fields"),
    (USAGE_HEADER + b",colour\n," + NO_VALUES, "text/csv", {}, 422, "column 'colour' is not in the usage_"),
    (b"customer_id\nCUST-000001\n", "text/csv", {}, 422, "no primary key column 'event_id'"),
    (USAGE_HEADER + b"\nEVT-0000000001" + NO_VALUES + NO_VALUES, "text/csv", {}, 422, "data row 2 has no"),
    (b"x", "application/json", {}, 415, "got 'application/json'"),
    (b"x", "application/octet-stream", {}, 422, "needs ?format=csv or ?format=parquet"),
    (b"x", "text/csv", {"format": "parquet"}, 422, "contradicts Content-Type text/csv"),
    (b"x" * (LIMIT_BYTES + 1), "text/csv", {}, 413, f"limit of {LIMIT_BYTES:,} bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "content_type", "params", "status", "says"), BAD_UPLOADS)
def test_uploads_that_cannot_be_read_are_refused_and_not_kept(
    intake: Intake, data: bytes, content_type: str, params: dict[str, str], status: int, says: str
) -> None:
    folder = intake.home / "data" / "uploads" / "usage_events"
    before = sorted(folder.iterdir()) if folder.exists() else []
    response = intake.put("usage_events", data, content_type=content_type, params=params)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert str(intake.home) not in response.json()["detail"]  # no server path in the answer
    assert (sorted(folder.iterdir()) if folder.exists() else []) == before


def test_an_upload_streamed_past_the_limit_is_cut_off(intake: Intake) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 times the limit, without a Content-Length
            sent += 4096
            yield b"y" * 4096

    response = intake.put("customers", body())
    assert response.status_code == 413
    folder = intake.home / "data" / "uploads" / "customers"
    assert not folder.exists() or list(folder.iterdir()) == []


class _StalledRequest:
    """A request whose body stops arriving after its first part."""

    headers: dict[str, str] = {}  # noqa: RUF012

    async def stream(self) -> AsyncIterator[bytes]:
        yield b'[{"event_id": '
        await asyncio.sleep(60)
        yield b"]"


def test_a_body_that_stops_arriving_is_cut_off_with_408() -> None:
    async def read() -> IntakeError:
        with pytest.raises(IntakeError) as caught:
            await read_body(_StalledRequest(), limit=LIMIT_BYTES, idle_s=0.2)  # type: ignore[arg-type]
        return caught.value

    error = asyncio.run(asyncio.wait_for(read(), timeout=30))
    assert (error.status, error.error) == (408, "request_timeout")
    assert "for 0.2 s" in error.detail


def test_metrics_count_requests_rows_and_duplicates(intake: Intake) -> None:
    rows = [_event(500), _event(501)]
    intake.post("usage_events", rows)
    intake.post("usage_events", rows)
    intake.post("nowhere", rows)
    text = intake.client.get("/metrics").text
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert lines['churnops_intake_requests_total{route="/v1/events",source="unknown",status="404"}'] >= 1
    assert lines['churnops_intake_rows_duplicate_total{source="usage_events"}'] >= 2
    assert lines['churnops_intake_rows_published_total{source="usage_events"}'] >= 2
    assert lines["churnops_intake_broker_connected"] == 1.0
    assert intake.client.get("/health").json() == {"status": "ok", "broker": "connected"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_broker_outage_is_503_and_the_upload_is_kept(tmp_path: Path) -> None:
    keys = _make_keys(tmp_path / "data" / "serving" / "api_keys.json")
    app = _app(tmp_path, nats=f"nats://127.0.0.1:{_closed_port()}")
    with TestClient(app) as client:
        headers = {"X-API-Key": keys["all"]}
        assert client.get("/health").json() == {"status": "ok", "broker": "not connected"}
        events = client.post("/v1/events/usage_events", json=[_event(1)], headers=headers)
        assert events.status_code == 503
        assert events.json()["error"] == "broker_unavailable"
        assert "no NATS server answered" in events.json()["detail"]
        data = _csv([_event(1)], CONTRACTS["usage_events"].column_names)
        upload = client.put(
            "/v1/uploads/usage_events", content=data, headers={**headers, "Content-Type": "text/csv"}
        )
        assert upload.status_code == 503
    kept = tmp_path / "data" / "uploads" / "usage_events" / f"{hashlib.sha256(data).hexdigest()}.csv"
    assert kept.read_bytes() == data  # kept, so a retry (or a replay) needs no second copy


def test_intake_keys_are_scoped_and_old_keys_still_work(tmp_path: Path) -> None:
    keys_file = tmp_path / "api_keys.json"
    # A keys file written before intake keys existed: its keys are prediction keys.
    keys_file.write_text(json.dumps({"keys": [{"consumer": "churn-model", "sha256": "ab" * 32}]}))
    key = create_key(
        keys_file=keys_file, consumer="billing-system", approved_consumers=[],
        sources=["billing", "billing"], known_sources=SOURCE_NAMES,
    )  # fmt: skip
    assert load_key_hashes(keys_file=keys_file) == {"ab" * 32: "churn-model"}
    grants = load_grants(keys_file=keys_file)
    assert grants[hashlib.sha256(key.encode()).hexdigest()].sources == {"billing"}
    assert list_keys(keys_file=keys_file)[1]["sources"] == ["billing"]
    ring = KeyRing(keys_file=keys_file, interval_s=0)
    assert ring.consumer(key) is None  # the prediction service refuses an intake key
    assert ring.grant(key) == KeyGrant(consumer="billing-system", sources=frozenset({"billing"}))
    with pytest.raises(ValueError, match="no source contract for payroll"):
        create_key(
            keys_file=keys_file, consumer="x", approved_consumers=[], sources=["payroll"],
            known_sources=SOURCE_NAMES,
        )  # fmt: skip
    keys_file.write_text(json.dumps({"keys": [{"consumer": "a", "sha256": "cd" * 32, "sources": []}]}))
    with pytest.raises(ValueError, match="non-empty list of source names"):
        load_grants(keys_file=keys_file)


def test_the_command_line_creates_intake_keys_and_refuses_to_start_without_one(tmp_path: Path) -> None:
    runner = CliRunner()
    home = str(tmp_path)
    refused = runner.invoke(cli, ["intake", "--home", home])
    assert refused.exit_code == 1
    assert "keys create PRODUCER --source SOURCE" in refused.output
    bad = runner.invoke(cli, ["keys", "create", "crm", "--source", "payroll", "--home", home])
    assert bad.exit_code == 1 and "no source contract for payroll" in bad.output
    made = runner.invoke(cli, ["keys", "create", "crm", "--source", "customers", "--home", home])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["keys", "list", "--home", home])
    assert listed.output.splitlines()[1].endswith("active  intake: customers")


def test_the_intake_command_serves_and_publishes(tmp_path: Path, nats_url: str) -> None:  # noqa: F811
    port = _closed_port()
    churnops = str(Path(sys.executable).with_name("churnops"))
    args = [churnops, "intake", "--home", str(tmp_path), "--port", str(port), "--no-require-keys"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # generous: start-up imports on a loaded machine
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "churnops intake did not answer within 120 s"
                time.sleep(0.2)
        assert health.json() == {"status": "ok", "broker": "connected"}
        accepted = httpx.post(f"{base}/v1/events/usage_events", json=[_event(1)], timeout=30)
        assert accepted.status_code == 202, accepted.text
        assert (accepted.json()["published"], accepted.json()["duplicates"]) == (1, 0)
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(_delete_stream(BrokerNames.for_home(tmp_path), nats_url))


OPERATIONS = {
    "POST /v1/events/{source}",
    "PUT /v1/uploads/{source}",
    "GET /v1/schemas/{source}",
    "GET /health",
    "GET /metrics",
}


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_gets_a_server_error_under_fuzzing(
    intake: Intake,
    tmp_path: Path,
    mode: str,
    nats_url: str,  # noqa: F811
) -> None:
    from schemathesis.config._checks import NegativeDataRejectionConfig

    keys = _make_keys(tmp_path / "data" / "serving" / "api_keys.json")
    app = _app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
        expected_statuses=[*rejection.expected_statuses, "404", "413", "415"]
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == OPERATIONS
    try:
        for operation in operations:
            if mode == "negative" and operation.method.upper() == "GET":
                continue  # no GET has a constrained parameter or a body: nothing to make invalid
            strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

            @hypothesis.given(case=strategy)
            @hypothesis.settings(
                max_examples=15,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers={"X-API-Key": keys["all"]})

            check()
    finally:
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()
        asyncio.run(_delete_stream(BrokerNames.for_home(tmp_path), nats_url))
