"""Alerts: deduplication per window, one resolved message, the file sink and a real webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnops.cli import app
from churnops.monitoring.alerts import (
    WEBHOOK_ENV,
    WINDOW_ENV,
    AlertInputError,
    dedup_window,
    deliveries,
    fire,
    list_conditions,
    resolve,
)
from churnops.storage.layout import ALERTS_FILE

runner = CliRunner()
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Receiver:
    """A local HTTP server recording each JSON body posted to it, answering `status`."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        received, answer = self.bodies, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(answer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def lines(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / ALERTS_FILE).read_text().splitlines()]


def test_one_alert_per_condition_per_window_then_a_reminder(tmp_path: Path, receiver: Receiver) -> None:
    common = {"condition": "gate_failed", "severity": "critical", "webhook_url": receiver.url, "window": HOUR}
    assert fire(tmp_path, summary="refused v2", now=T0, **common) is True
    assert fire(tmp_path, summary="refused v2", now=T0 + 59 * timedelta(minutes=1), **common) is False
    # Another condition is not held back by the first.
    assert (
        fire(
            tmp_path,
            condition="online_stale",
            severity="warning",
            summary="old",
            now=T0,
            window=HOUR,
            webhook_url=receiver.url,
        )
        is True
    )
    assert fire(tmp_path, summary="refused v3", now=T0 + HOUR + timedelta(seconds=1), **common) is True
    assert [b["text"] for b in receiver.bodies] == [
        "[CRITICAL] gate_failed: refused v2",
        "[WARNING] online_stale: old",
        "[CRITICAL] gate_failed: refused v3",
    ]
    [state] = [c for c in list_conditions(tmp_path) if c["condition"] == "gate_failed"]
    assert (state["state"], state["seen"], state["summary"]) == ("firing", 3, "refused v3")
    assert state["first_seen"] == T0.isoformat()
    assert [(r["condition"], r["status"]) for r in lines(tmp_path)] == [
        ("gate_failed", "firing"),
        ("online_stale", "firing"),
        ("gate_failed", "firing"),
    ]


def test_resolve_sends_once_and_only_when_open(tmp_path: Path, receiver: Receiver) -> None:
    assert resolve(tmp_path, condition="online_stale", summary="fresh", webhook_url=receiver.url) is False
    fire(
        tmp_path,
        condition="online_stale",
        severity="warning",
        summary="2 h old",
        now=T0,
        webhook_url=receiver.url,
    )
    assert (
        resolve(tmp_path, condition="online_stale", summary="fresh", now=T0 + HOUR, webhook_url=receiver.url)
        is True
    )
    assert (
        resolve(
            tmp_path, condition="online_stale", summary="fresh", now=T0 + 2 * HOUR, webhook_url=receiver.url
        )
        is False
    )
    assert [b["text"] for b in receiver.bodies] == [
        "[WARNING] online_stale: 2 h old",
        "[RESOLVED] online_stale: fresh",
    ]
    assert list_conditions(tmp_path, open_only=True) == []
    # Firing again after a resolve is a new incident: sent at once, whatever the window.
    assert (
        fire(
            tmp_path,
            condition="online_stale",
            severity="warning",
            summary="stale again",
            now=T0 + HOUR + timedelta(minutes=5),
            webhook_url=receiver.url,
        )
        is True
    )


def test_webhook_receives_slack_json(tmp_path: Path, receiver: Receiver) -> None:
    fire(
        tmp_path,
        condition="dag_task_failed:churn_daily.ingest",
        severity="critical",
        summary="task failed",
        details="try 3 of 3; log at /var/log/airflow/x.log",
        now=T0,
        webhook_url=receiver.url,
    )
    [body] = receiver.bodies
    assert body["text"] == "[CRITICAL] dag_task_failed:churn_daily.ingest: task failed"
    assert [b["type"] for b in body["blocks"]] == ["section", "section", "context"]
    assert body["blocks"][0]["text"] == {
        "type": "mrkdwn",
        "text": "*CRITICAL* `dag_task_failed:churn_daily.ingest`\ntask failed",
    }
    assert body["blocks"][1]["text"]["text"] == "try 3 of 3; log at /var/log/airflow/x.log"
    assert "ml-platform" in body["blocks"][2]["elements"][0]["text"]
    assert body["attachments"][0]["color"] == "#D00000"
    assert [(d["target"], d["ok"]) for d in deliveries(tmp_path)] == [("webhook", 1), ("file", 1)]


def test_a_failing_webhook_is_recorded_and_never_raises(tmp_path: Path) -> None:
    failing = Receiver(status=500)
    try:
        sent = fire(
            tmp_path,
            condition="gate_failed",
            severity="critical",
            summary="refused",
            now=T0,
            webhook_url=failing.url,
        )
    finally:
        failing.close()
    assert sent is True
    assert len(failing.bodies) == 3  # retried on 5xx
    webhook = [d for d in deliveries(tmp_path) if d["target"] == "webhook"]
    assert [d["ok"] for d in webhook] == [0] and "500" in webhook[0]["error"]
    [line] = lines(tmp_path)
    assert line["deliveries"][0]["ok"] is False
    # Nothing listens on a closed port either: still no exception.
    assert (
        fire(
            tmp_path, condition="online_stale", severity="info", summary="x", now=T0, webhook_url=failing.url
        )
        is True
    )


def test_bad_keys_and_severities_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AlertInputError, match="condition"):
        fire(tmp_path, condition="Gate Failed", severity="critical", summary="x", webhook_url="")
    with pytest.raises(AlertInputError, match="severity"):
        fire(tmp_path, condition="gate_failed", severity="fatal", summary="x", webhook_url="")


def test_window_setting(monkeypatch) -> None:
    monkeypatch.delenv(WINDOW_ENV, raising=False)
    assert dedup_window() == HOUR  # the feature contract's monitoring.alerts.dedup_window
    monkeypatch.setenv(WINDOW_ENV, "15m")
    assert dedup_window() == timedelta(minutes=15)
    monkeypatch.setenv(WINDOW_ENV, "soon")
    with pytest.raises(AlertInputError, match=WINDOW_ENV):
        dedup_window()


def test_cli_fire_resolve_list(tmp_path: Path, receiver: Receiver, monkeypatch) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    monkeypatch.delenv(WINDOW_ENV, raising=False)
    home = str(tmp_path)
    args = [
        "alerts",
        "fire",
        "--home",
        home,
        "--condition",
        "dag_task_failed:churn_daily.features_build",
        "--severity",
        "critical",
        "--summary",
        "features build failed",
        "--details",
        "exit 1",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "sent" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "not repeated" in again.output
    listed = runner.invoke(app, ["alerts", "list", "--home", home, "--open", "--json"])
    [row] = json.loads(listed.stdout)
    assert (row["condition"], row["severity"], row["details"], row["seen"]) == (
        "dag_task_failed:churn_daily.features_build",
        "critical",
        "exit 1",
        2,
    )
    resolved = runner.invoke(
        app,
        [
            "alerts",
            "resolve",
            "--home",
            home,
            "--condition",
            "dag_task_failed:churn_daily.features_build",
            "--summary",
            "rerun passed",
        ],
    )
    assert resolved.exit_code == 0 and "resolved" in resolved.output
    assert json.loads(runner.invoke(app, ["alerts", "list", "--home", home, "--open", "--json"]).stdout) == []
    assert [b["text"].split("]")[0] for b in receiver.bodies] == ["[CRITICAL", "[RESOLVED"]
    bad = runner.invoke(
        app, ["alerts", "fire", "--home", home, "--condition", "x", "--severity", "loud", "--summary", "s"]
    )
    assert bad.exit_code == 2 and "severity" in bad.output


def test_ingest_alerts_a_failed_contract_batch_and_resolves_it(tmp_path: Path, monkeypatch) -> None:
    from test_ingest_cli import CUSTOMER_COLUMNS, GOOD_ROW

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    stale, good = tmp_path / "stale", tmp_path / "good"
    for folder, row in (
        (stale, [*GOOD_ROW[:2], "2019-06-01", *GOOD_ROW[3:-1], "2020-01-01T00:00:00Z"]),
        (good, GOOD_ROW),
    ):
        folder.mkdir()
        (folder / "customers.csv").write_text(",".join(CUSTOMER_COLUMNS) + "\n" + ",".join(row) + "\n")
    home = str(tmp_path / "home")
    failed = runner.invoke(app, ["ingest", "--home", home, "--source", str(stale), "--live"])
    assert failed.exit_code == 1
    [row] = list_conditions(Path(home), open_only=True)
    assert (row["condition"], row["severity"]) == ("contract_batch_failed:customers", "critical")
    assert "freshness" in row["details"]
    passed = runner.invoke(app, ["ingest", "--home", home, "--source", str(good), "--backfill"])
    assert passed.exit_code == 0, passed.output
    assert list_conditions(Path(home), open_only=True) == []
    assert [(r["condition"], r["status"]) for r in lines(Path(home))] == [
        ("contract_batch_failed:customers", "firing"),
        ("contract_batch_failed:customers", "resolved"),
    ]


def test_promote_and_freshness_outcomes_raise_and_resolve_their_alerts(tmp_path: Path, monkeypatch) -> None:
    from churnops.commands.monitoring import alert_freshness, alert_gate_outcome
    from churnops.monitoring.gate import GateCheck, GateDecision, Versions
    from churnops.monitoring.quality import QualityCheck, QualityReport
    from churnops.settings import Workspace

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    ws = Workspace(tmp_path)
    versions = Versions(model="churn-model", challenger="3", challenger_run_id="r", champion="2")
    worse = GateCheck(name="model", passed=False, figure=-0.02, threshold=-0.01, detail="PR AUC 0.30 vs 0.32")

    def decision(kind: str, *, dry_run: bool = False) -> GateDecision:
        return GateDecision(versions=versions, checks=(worse,), decision=kind, dry_run=dry_run, reason=None)

    alert_gate_outcome(ws, decision("refused", dry_run=True))
    assert list_conditions(tmp_path) == []
    alert_gate_outcome(ws, decision("refused"))
    [row] = list_conditions(tmp_path, open_only=True)
    assert (row["condition"], row["summary"]) == ("gate_failed", "promotion of churn-model v3 refused")
    assert row["details"] == "model: PR AUC 0.30 vs 0.32"
    alert_gate_outcome(ws, decision("promoted"))
    assert list_conditions(tmp_path, open_only=True) == []

    def report(outcome: str) -> QualityReport:
        check = QualityCheck("freshness", "snapshot_ts", 5.0, 2.0, outcome, "the stalest snapshot is 5 h old")
        return QualityReport(scope="feature_table", rows=10, checks=(check,))

    alert_freshness(ws, report("fail"))
    assert [c["condition"] for c in list_conditions(tmp_path, open_only=True)] == ["online_stale"]
    alert_freshness(ws, report("pass"))
    assert list_conditions(tmp_path, open_only=True) == []
    assert [(r["condition"], r["status"]) for r in lines(tmp_path)] == [
        ("gate_failed", "firing"),
        ("gate_failed", "resolved"),
        ("online_stale", "firing"),
        ("online_stale", "resolved"),
    ]
