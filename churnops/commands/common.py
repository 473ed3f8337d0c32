"""Options and helpers shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from churnops.settings import Workspace, open_workspace

console = Console()
err_console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="CHURNOPS_HOME",
        help="Workspace folder for data, stores, models and reports (default: the repository root).",
        show_default=False,
    ),
]


def workspace(home: Path | None) -> Workspace:
    """Open the workspace for a command.

    Args:
        home: The `--home` option's value.

    Returns:
        The resolved workspace, with the environment prepared for Feast and MLflow.
    """
    from churnops.config import ConfigError

    try:
        return open_workspace(home)
    except ConfigError as exc:
        raise fail(str(exc), code=2) from exc


def fail(message: str, *, code: int = 1) -> typer.Exit:
    """Print a one-paragraph error (no traceback) and build the exit to raise.

    Args:
        message: What went wrong and what to do about it.
        code: The process exit status.

    Returns:
        A `typer.Exit` for the caller to raise.
    """
    # soft_wrap: a path in the message stays whole (Rich wraps at 80 columns without a terminal);
    # escaped: brackets in a message (`[redacted: pii]`) are text, not Rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
