"""Alerts: a condition fires once per window, resolves once, and reaches a file and a webhook.

A condition is a key naming what is wrong (`drift_block:customer_profile`, `gate_failed`,
`contract_batch_failed:billing`, `online_stale`, `dag_task_failed:<dag>.<task>`). `fire` sends it
unless the same condition was already sent within the deduplication window (default one hour,
the feature contract's `monitoring.alerts.dedup_window`, `CHURNOPS_ALERT_WINDOW` overrides); a
condition still failing after the window is sent again, as a reminder. `resolve` sends one
`resolved` message when the condition is open, and nothing otherwise, so callers may report
"ok" on every run.

Targets: every alert is appended to `<home>/data/alerts/alerts.jsonl` (one JSON object per line,
written with one `write()` on a file opened for appending, so concurrent writers never interleave
lines), and posted as Slack-compatible JSON (`text` plus `blocks`) to the URL in
`CHURNOPS_ALERT_WEBHOOK_URL` when it is set. A webhook that fails after its retries is recorded
(in the state database and the file line) and never raises: alerting must not break the job that
raises the alert.

State lives in `<home>/data/alerts/state.db` (SQLite): one row per condition (open or resolved,
when it was last sent, how often it was seen) and one row per delivery attempt. The decision to
send is taken in one `BEGIN IMMEDIATE` transaction, so two processes firing the same condition at
once send it once.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from churnops.contracts.durations import parse_duration
from churnops.contracts.feature_contract import load_feature_contract
from churnops.errors import ChurnopsError
from churnops.storage import layout

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
WEBHOOK_ENV = "CHURNOPS_ALERT_WEBHOOK_URL"
WINDOW_ENV = "CHURNOPS_ALERT_WINDOW"
FIRING = "firing"
RESOLVED = "resolved"

_CONDITION = re.compile(r"^[a-z][a-z0-9_]*(:\S+)?$")
_TIMEOUT_S = 5.0
_ATTEMPTS = 3
_BACKOFF_S = 0.5
_COLOURS = {"info": "#439FE0", "warning": "#F2C744", "critical": "#D00000", RESOLVED: "#2EB67D"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conditions (
    condition TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    last_sent TEXT NOT NULL,
    seen INTEGER NOT NULL,
    resolved_at TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    condition TEXT NOT NULL,
    status TEXT NOT NULL,
    target TEXT NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT
);
"""


class AlertInputError(ChurnopsError):
    """An alert's condition key or severity cannot be used."""


@dataclass(frozen=True)
class Alert:
    """One message: a condition firing or resolved.

    Attributes:
        condition: The condition key.
        status: `firing` or `resolved`.
        severity: `info`, `warning` or `critical` (a resolved message keeps the firing one's).
        summary: One sentence.
        details: More text (what was measured, what to do), or None.
        time: When it was raised (UTC).
        team: The team it is routed to (the feature contract's `monitoring.alerts.route_to`).
    """

    condition: str
    status: str
    severity: str
    summary: str
    details: str | None
    time: datetime
    team: str

    def to_dict(self) -> dict[str, Any]:
        """The file sink's record."""
        return {
            "time": self.time.isoformat(),
            "condition": self.condition,
            "status": self.status,
            "severity": self.severity,
            "summary": self.summary,
            "details": self.details,
            "team": self.team,
        }


@dataclass(frozen=True)
class Delivery:
    """What became of one target.

    Attributes:
        target: `file` or `webhook`.
        ok: Whether it was delivered.
        error: Why not (None when it was).
    """

    target: str
    ok: bool
    error: str | None = None


Poster = Callable[[str, dict[str, Any]], None]


def fire(
    home: Path,
    *,
    condition: str,
    severity: str,
    summary: str,
    details: str | None = None,
    now: datetime | None = None,
    window: timedelta | None = None,
    webhook_url: str | None = None,
    post: Poster | None = None,
) -> bool:
    """Raise a condition: send it unless it was sent within the deduplication window.

    Args:
        home: The churnops home (state and file sink live under `data/alerts/`).
        condition: The condition key, e.g. `drift_block:customer_profile`.
        severity: `info`, `warning` or `critical`.
        summary: One sentence saying what is wrong.
        details: More text, or None.
        now: The time (default: now, UTC).
        window: The deduplication window (default: `$CHURNOPS_ALERT_WINDOW`, else the contract's).
        webhook_url: Where to post (default: `$CHURNOPS_ALERT_WEBHOOK_URL`; none when unset).
        post: The HTTP poster (default: httpx with a timeout and retries).

    Returns:
        Whether an alert was sent (False when deduplicated).

    Raises:
        AlertInputError: When the condition key or the severity is malformed.
    """
    _check(condition=condition, severity=severity)
    at = now or datetime.now(UTC)
    span = window if window is not None else dedup_window()
    with _state(home) as db:
        row = db.execute("SELECT * FROM conditions WHERE condition = ?", (condition,)).fetchone()
        repeat = row is not None and row["state"] == FIRING and _time(row["last_sent"]) > at - span
        if repeat:
            db.execute(
                "UPDATE conditions SET last_seen = ?, seen = seen + 1 WHERE condition = ?",
                (at.isoformat(), condition),
            )
            return False
        db.execute(
            "INSERT INTO conditions (condition, state, severity, summary, details, first_seen, last_seen, "
            "last_sent, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(condition) DO UPDATE SET "
            "state = excluded.state, severity = excluded.severity, summary = excluded.summary, "
            "details = excluded.details, last_seen = excluded.last_seen, last_sent = excluded.last_sent, "
            "seen = CASE WHEN conditions.state = 'firing' THEN conditions.seen + 1 ELSE 1 END, "
            "first_seen = CASE WHEN conditions.state = 'firing' THEN conditions.first_seen "
            "ELSE excluded.first_seen END, resolved_at = NULL",
            (condition, FIRING, severity, summary, details, at.isoformat(), at.isoformat(), at.isoformat()),
        )
    alert = Alert(condition, FIRING, severity, summary, details, at, routed_team())
    _deliver(home, alert=alert, webhook_url=webhook_url, post=post)
    return True


def resolve(
    home: Path,
    *,
    condition: str,
    summary: str,
    now: datetime | None = None,
    webhook_url: str | None = None,
    post: Poster | None = None,
) -> bool:
    """Report a condition cleared: send one `resolved` message when it is open.

    Args:
        home: The churnops home.
        condition: The condition key.
        summary: One sentence saying what is fine again.
        now: The time (default: now, UTC).
        webhook_url: Where to post (default: `$CHURNOPS_ALERT_WEBHOOK_URL`).
        post: The HTTP poster (default: httpx with a timeout and retries).

    Returns:
        Whether a resolved message was sent (False when the condition was not open).

    Raises:
        AlertInputError: When the condition key is malformed.
    """
    _check(condition=condition, severity="info")
    at = now or datetime.now(UTC)
    if not _state_path(home).is_file():
        return False
    with _state(home) as db:
        row = db.execute(
            "SELECT severity, state FROM conditions WHERE condition = ?", (condition,)
        ).fetchone()
        if row is None or row["state"] != FIRING:
            return False
        db.execute(
            "UPDATE conditions SET state = ?, resolved_at = ?, last_seen = ? WHERE condition = ?",
            (RESOLVED, at.isoformat(), at.isoformat(), condition),
        )
        severity = row["severity"]
    alert = Alert(condition, RESOLVED, severity, summary, None, at, routed_team())
    _deliver(home, alert=alert, webhook_url=webhook_url, post=post)
    return True


def list_conditions(home: Path, *, open_only: bool = False) -> list[dict[str, Any]]:
    """The conditions ever raised, most recently seen first.

    Args:
        home: The churnops home.
        open_only: Only the firing ones.

    Returns:
        One mapping per condition (state, severity, summary, details, times, how often seen).
    """
    if not _state_path(home).is_file():
        return []
    where = "WHERE state = 'firing'" if open_only else ""
    with _state(home) as db:
        rows = db.execute(f"SELECT * FROM conditions {where} ORDER BY last_seen DESC").fetchall()
    return [dict(r) for r in rows]


def deliveries(home: Path) -> list[dict[str, Any]]:
    """Every delivery attempt, oldest first (which target, whether it worked, why not)."""
    if not _state_path(home).is_file():
        return []
    with _state(home) as db:
        return [dict(r) for r in db.execute("SELECT * FROM deliveries ORDER BY id").fetchall()]


def dedup_window() -> timedelta:
    """The deduplication window: `$CHURNOPS_ALERT_WINDOW` (e.g. `30m`), else the feature contract's.

    Raises:
        AlertInputError: When the variable is not a duration.
    """
    raw = os.environ.get(WINDOW_ENV, "").strip()
    if not raw:
        return load_feature_contract().monitoring.alerts.dedup_window
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise AlertInputError(f"{WINDOW_ENV}={raw!r}: {exc}") from exc


def routed_team() -> str:
    """The team alerts are addressed to (the feature contract's `monitoring.alerts.route_to`)."""
    return load_feature_contract().monitoring.alerts.route_to


def slack_payload(alert: Alert) -> dict[str, Any]:
    """The webhook body: Slack's `text` (the notification line) and `blocks` (the message).

    Args:
        alert: The alert.

    Returns:
        A JSON-serialisable mapping Slack incoming webhooks (and compatible receivers) accept.
    """
    mark = "RESOLVED" if alert.status == RESOLVED else alert.severity.upper()
    text = f"[{mark}] {alert.condition}: {alert.summary}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{mark}* `{alert.condition}`\n{alert.summary}"},
        }
    ]
    if alert.details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": alert.details}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"churnops · for {alert.team} · {alert.time.isoformat()}"}
            ],
        }
    )
    colour = _COLOURS[RESOLVED if alert.status == RESOLVED else alert.severity]
    return {"text": text, "blocks": blocks, "attachments": [{"color": colour, "fallback": text}]}


def post_json(url: str, payload: dict[str, Any]) -> None:
    """POST JSON with a timeout, retrying connection errors, 429 and 5xx with a short backoff.

    Args:
        url: The webhook.
        payload: The body.

    Raises:
        httpx.HTTPError: When every attempt failed (or the receiver refused with another 4xx).
    """
    import httpx

    for attempt in range(1, _ATTEMPTS + 1):
        try:
            response = httpx.post(url, json=payload, timeout=_TIMEOUT_S)
            response.raise_for_status()
            return
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if attempt == _ATTEMPTS or (status < 500 and status != 429):
                raise
        except httpx.TransportError:
            if attempt == _ATTEMPTS:
                raise
        time.sleep(_BACKOFF_S * attempt)


def _deliver(home: Path, *, alert: Alert, webhook_url: str | None, post: Poster | None) -> list[Delivery]:
    url = webhook_url if webhook_url is not None else os.environ.get(WEBHOOK_ENV, "").strip()
    results: list[Delivery] = []
    if url:
        try:
            (post or post_json)(url, slack_payload(alert))
            results.append(Delivery("webhook", True))
        except Exception as exc:
            # Whatever the receiver or the network did, the caller's job goes on; the failure is
            # recorded here and in the file line.
            results.append(Delivery("webhook", False, f"{type(exc).__name__}: {exc}"))
    record = {**alert.to_dict(), "deliveries": [d.__dict__ for d in results]}
    _append_line(home / layout.ALERTS_FILE, json.dumps(record, sort_keys=True))
    results.append(Delivery("file", True))
    with _state(home) as db:
        db.executemany(
            "INSERT INTO deliveries (time, condition, status, target, ok, error) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (alert.time.isoformat(), alert.condition, alert.status, d.target, int(d.ok), d.error)
                for d in results
            ],
        )
    return results


def _append_line(path: Path, line: str) -> None:
    """Append one line with a single `write()` on an O_APPEND descriptor (never interleaved)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _check(*, condition: str, severity: str) -> None:
    if not _CONDITION.match(condition):
        raise AlertInputError(
            f"condition {condition!r}: expected a lower-case key with an optional ':' subject and no "
            "spaces, e.g. 'drift_block:customer_profile' or 'dag_task_failed:daily.ingest'"
        )
    if severity not in SEVERITIES:
        raise AlertInputError(f"severity {severity!r}: expected one of {', '.join(SEVERITIES)}")


def _state_path(home: Path) -> Path:
    return home / layout.ALERTS_STATE_DB


@contextmanager
def _state(home: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the state database inside one immediate transaction (committed on success)."""
    path = _state_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
