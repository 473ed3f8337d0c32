"""The `churnops` command line.

Heavy libraries (Feast, MLflow, Evidently) are imported inside the commands that
need them, so `churnops --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, TextIO

import click
import typer
from typer.core import TyperGroup

from churnops.commands import (
    data,
    demo,
    features,
    ingest,
    intake,
    metrics,
    monitoring,
    serving,
    stream,
    training,
)
from churnops.commands.common import fail
from churnops.errors import BAD_INPUT, REFUSED, ChurnopsError
from churnops.storage.modes import private_umask

EXIT_CODES = (
    f"Exit status: 0 done (warnings printed); {REFUSED} a check failed or an operation was refused "
    f"(contract, quality, drift block, parity, promotion gate); {BAD_INPUT} bad input (an option, a file, "
    "a missing workspace or store, a setting) or the workspace is locked by another writer."
)

# The libraries we drive warn about their own dependencies (pydantic, SQLAlchemy, pandas, ibis, …)
# and about APIs only they call; a user can do nothing about those. Our own warnings stay visible.
_QUIET_MODULES = (
    "feast",
    "mlflow",
    "evidently",
    "ibis",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "pandas",
    "sklearn",
    "skops",
    "dask",
    "fastapi",
    "starlette",
    "google",
    "pyarrow",
    "duckdb",
    "typeguard",
    "click",
    "typer",
    "litestar",
)
_QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning)
_LIBRARY_FILE = re.compile(rf"[/\\]site-packages[/\\]({'|'.join(_QUIET_MODULES)})[/\\]")


def is_library_warning(category: type[Warning], filename: str) -> bool:
    """Whether a warning is one of the libraries' deprecation or advisory warnings.

    Args:
        category: The warning's class.
        filename: The file the warning is attributed to.

    Returns:
        True for a quiet category raised from one of the quiet libraries' installed files.
    """
    return issubclass(category, _QUIET_CATEGORIES) and _LIBRARY_FILE.search(filename) is not None


def quiet_library_warnings() -> None:
    """Hide the libraries' deprecation and advisory warnings from stderr (never churnops' own).

    Filters alone do not hold: importing Feast prepends `simplefilter("once", DeprecationWarning)`
    ahead of any filter set before it. So the warnings are dropped where they are shown.
    """
    shown = warnings.showwarning
    if getattr(shown, "churnops_quiet", False):
        return

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not is_library_warning(category, filename):
            shown(message, category, filename, lineno, file, line)

    show.churnops_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    # MLflow sets its own loggers to INFO when imported, unless told otherwise before.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "feast", "evidently", "ibis"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _flag_types_hidden(params: list[Any]) -> list[Any]:
    """Give flags an empty metavar, so help shows `--dry-run` instead of `--dry-run <bool>`."""
    # Typer ships its own copy of Click, so its parameters are not `click.Option`s: duck-typed.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Commands(TyperGroup):
    """The command group: any `ChurnopsError` a command lets through ends it with one paragraph.

    It also keeps Typer's help from printing a value type after flags (`--force <bool>`), for
    itself and every command and sub-group under it.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ChurnopsError as exc:
            raise fail(" ".join(str(exc).split()), code=exc.exit_code) from exc

    def get_params(self, ctx: click.Context) -> list[Any]:
        return _flag_types_hidden(super().get_params(ctx))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_types(command, ctx)
        return command


def _hide_flag_types(command: Any, ctx: click.Context) -> None:
    """Apply `_flag_types_hidden` to a command (its help option included) and its sub-commands."""
    _flag_types_hidden(command.get_params(ctx))
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub, ctx)


def _package_version() -> str:
    try:
        return version("churnops")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"churnops {_package_version()}")
        raise typer.Exit()


app = typer.Typer(
    cls=_Commands,
    name="churnops",
    help="Feature-store-centric MLOps for customer churn: contracts, Feast features, MLflow models, "
    "drift-gated promotion and online serving.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the churnops version and exit."
        ),
    ] = False,
) -> None:
    """churnops: every command takes --home (env CHURNOPS_HOME) to choose the workspace."""
    # Every file a command creates is 0600 and every folder 0700 (see churnops.storage.modes).
    ctx.with_resource(private_umask())
    quiet_library_warnings()


for module in (data, ingest, intake, stream, features, training, monitoring, metrics, serving, demo):
    module.register(app)


if __name__ == "__main__":
    app()
