"""`churnops alerts fire | resolve | list`, and the helpers other commands raise alerts with.

Schedulers call the first two from failure and success callbacks, so their shape is fixed:
`churnops alerts fire --home H --condition C --severity critical --summary TEXT [--details TEXT]`
and `churnops alerts resolve --home H --condition C --summary TEXT`. Both exit 0 whether the
alert was sent or deduplicated (they say which) and whether the webhook answered or not (a failed
post is recorded); 2 on a malformed condition or severity; 1 when the home's alert files cannot be
written.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from churnops.commands.common import HomeOption, console, err_console, fail, workspace
from churnops.errors import ChurnopsError
from churnops.settings import Workspace

alerts_app = typer.Typer(
    help="Alerts: raise and resolve conditions (deduplicated per window), list them. Targets: "
    "<home>/data/alerts/alerts.jsonl and the webhook in $CHURNOPS_ALERT_WEBHOOK_URL.",
    no_args_is_help=True,
)

ConditionOption = Annotated[
    str,
    typer.Option(
        "--condition",
        help="Condition key, e.g. drift_block:customer_profile, gate_failed, dag_task_failed:<dag>.<task>.",
    ),
]
SummaryOption = Annotated[str, typer.Option("--summary", help="One sentence saying what happened.")]


def print_wide(table: Table) -> None:
    """Print a table whole: without a terminal Rich would squeeze it into 80 columns and cut names.

    Args:
        table: The table.
    """
    (console if console.is_terminal else Console(width=200)).print(table)


def raise_alert(
    ws: Workspace, *, condition: str, severity: str, summary: str, details: str | None = None
) -> None:
    """Fire an alert from a command without ever changing the command's outcome.

    A broken state database or file sink is reported on stderr: the command that found the
    problem still ends with its own exit status.

    Args:
        ws: The workspace.
        condition: The condition key.
        severity: `info`, `warning` or `critical`.
        summary: One sentence.
        details: More text, or None.
    """
    from churnops.monitoring.alerts import fire

    try:
        sent = fire(ws.home, condition=condition, severity=severity, summary=summary, details=details)
    except (OSError, sqlite3.Error, ChurnopsError) as exc:
        err_console.print(f"[yellow]note:[/] alert {condition} not recorded: {exc}", highlight=False)
        return
    if sent:
        err_console.print(
            f"[yellow]alert[/] {condition} ({severity}): {summary}", highlight=False, soft_wrap=True
        )


def clear_alert(ws: Workspace, *, condition: str, summary: str) -> None:
    """Resolve an alert from a command (a no-op when it is not open), never failing the command.

    Args:
        ws: The workspace.
        condition: The condition key.
        summary: One sentence saying what is fine again.
    """
    from churnops.monitoring.alerts import resolve

    try:
        sent = resolve(ws.home, condition=condition, summary=summary)
    except (OSError, sqlite3.Error, ChurnopsError) as exc:
        err_console.print(f"[yellow]note:[/] alert {condition} not resolved: {exc}", highlight=False)
        return
    if sent:
        err_console.print(f"[green]resolved[/] {condition}: {summary}", highlight=False, soft_wrap=True)


@alerts_app.command("fire")
def fire_command(
    condition: ConditionOption,
    summary: SummaryOption,
    severity: Annotated[str, typer.Option("--severity", help="info, warning or critical.")] = "warning",
    details: Annotated[
        str | None, typer.Option("--details", help="More text: what was measured, what to do.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Raise a condition; sent once per deduplication window (default 1 h, $CHURNOPS_ALERT_WINDOW)."""
    from churnops.monitoring.alerts import fire

    ws = workspace(home)
    try:
        sent = fire(ws.home, condition=condition, severity=severity, summary=summary, details=details)
    except ChurnopsError as exc:
        raise fail(str(exc), code=exc.exit_code) from exc
    except (OSError, sqlite3.Error) as exc:
        raise fail(f"alert {condition} not recorded under {ws.home / 'data' / 'alerts'}: {exc}") from exc
    outcome = "sent" if sent else "already sent within the window; not repeated"
    console.print(f"{condition}: {outcome}", highlight=False, soft_wrap=True)


@alerts_app.command("resolve")
def resolve_command(
    condition: ConditionOption,
    summary: SummaryOption,
    home: HomeOption = None,
) -> None:
    """Report a condition cleared; sends one `resolved` message when it was open."""
    from churnops.monitoring.alerts import resolve

    ws = workspace(home)
    try:
        sent = resolve(ws.home, condition=condition, summary=summary)
    except ChurnopsError as exc:
        raise fail(str(exc), code=exc.exit_code) from exc
    except (OSError, sqlite3.Error) as exc:
        raise fail(f"alert {condition} not resolved under {ws.home / 'data' / 'alerts'}: {exc}") from exc
    console.print(
        f"{condition}: {'resolved' if sent else 'not open; nothing sent'}", highlight=False, soft_wrap=True
    )


@alerts_app.command("list")
def list_command(
    home: HomeOption = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only the conditions still firing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The conditions raised in this home, most recently seen first."""
    from churnops.monitoring.alerts import list_conditions

    ws = workspace(home)
    rows = list_conditions(ws.home, open_only=open_only)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no open alerts" if open_only else "no alerts recorded")
        return
    table = Table(title=f"Alerts ({ws.home})")
    for column in ("condition", "state", "severity", "summary", "last sent", "seen"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["condition"],
            row["state"],
            row["severity"],
            row["summary"],
            row["last_sent"],
            str(row["seen"]),
        )
    print_wide(table)
