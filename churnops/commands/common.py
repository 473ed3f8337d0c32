"""Options and helpers shared by every command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from churnops.errors import ChurnopsError
from churnops.settings import Workspace, open_workspace, resolve_home
from churnops.storage.lock import LOCK_WAIT_ENV, Holder, workspace_lock

# Without a terminal (CI logs, pipes) Rich assumes 80 columns and cuts table cells ("custo…");
# a log has no width, so tables and lines keep their natural width there.
PLAIN_WIDTH = 1000


def _width(stream: TextIO) -> int | None:
    """The console width for `stream`: the terminal's own, or `PLAIN_WIDTH` when it is none."""
    return None if stream.isatty() else PLAIN_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


class MissingHomeError(ChurnopsError):
    """`--home` (or `$CHURNOPS_HOME`) names a folder that does not exist."""


HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="CHURNOPS_HOME",
        help="Workspace folder for data, stores, models and reports (default: the repository root).",
        show_default=False,
    ),
]


def workspace(home: Path | None, *, create: bool = False) -> Workspace:
    """Open the workspace for a command.

    Args:
        home: The `--home` option's value.
        create: Whether the command creates workspaces (`demo`, `generate`, `ingest --source`,
            `stream run` and `stream replay`, which fill a new lake from elsewhere);
            every other command needs an existing home, so a mistyped path fails instead of
            growing a new workspace.

    Returns:
        The resolved workspace, with the environment prepared for Feast and MLflow.

    Raises:
        MissingHomeError: When the home does not exist and the command does not create one (exit 2).
        churnops.config.ConfigError: When a backend variable is unusable (the command line turns
            it into a one-paragraph error, exit 2).
    """
    resolved = resolve_home(home)
    if not create and not resolved.is_dir():
        raise MissingHomeError(
            f"the workspace {resolved} (--home or $CHURNOPS_HOME) does not exist. "
            "Check the path, or create a workspace with `churnops demo --home DIR` or "
            "`churnops generate --home DIR`."
        )
    return open_workspace(resolved)


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


WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        envvar=LOCK_WAIT_ENV,
        min=0,
        metavar="SECONDS",
        help="When another command is writing this workspace, wait up to SECONDS for it to finish "
        "(default 0: stop at once with exit 2, naming it).",
    ),
]


def writer_lock(ctx: typer.Context, ws: Workspace, *, wait: float) -> None:
    """Hold the workspace's writer lock until the running command ends.

    The lock is entered on the command's Click context, so it is released when the command
    returns or fails, without indenting the command's body; a nested call is re-entrant.

    Args:
        ctx: The running command's context.
        ws: The workspace the command writes.
        wait: Seconds to wait for another writer (the `--wait` option).

    Raises:
        typer.Exit: Exit 2 with a one-paragraph message naming the holder, when the lock stays taken.
    """

    def say_waiting(holder: Holder | None) -> None:
        who = holder.describe() if holder is not None else "another process"
        err_console.print(
            f"[yellow]waiting[/] up to {wait:g} s for the workspace lock on {ws.home}, held by {who}",
            highlight=False,
            soft_wrap=True,
        )

    # A WorkspaceLockedError is a ChurnopsError: the command group prints it and exits 2.
    acquired = ctx.with_resource(
        workspace_lock(home=ws.home, command=ctx.command_path, wait=wait, on_wait=say_waiting)
    )
    if acquired.stale is not None:
        err_console.print(
            f"[yellow]note:[/] took over the workspace lock of {ws.home} from a stale record: "
            f"{acquired.stale.describe()}; that process ended without releasing it. Check what it "
            "was writing (e.g. `churnops contracts check`) before relying on its output.",
            highlight=False,
            soft_wrap=True,
        )
