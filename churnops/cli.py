"""The `churnops` command line.

Heavy libraries (Feast, MLflow, Evidently) are imported inside the commands that
need them, so `churnops --help` stays fast.
"""

from __future__ import annotations

import logging
import warnings

import click
import typer
from typer.core import TyperGroup

from churnops.commands import data, demo, features, ingest, monitoring, serving, stream, training
from churnops.commands.common import fail
from churnops.errors import ChurnopsError
from churnops.storage.modes import private_umask


class _Commands(TyperGroup):
    """The command group: any `ChurnopsError` a command lets through ends it with one paragraph."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ChurnopsError as exc:
            raise fail(" ".join(str(exc).split()), code=exc.exit_code) from exc


app = typer.Typer(
    cls=_Commands,
    name="churnops",
    help="Feature-store-centric MLOps for customer churn: contracts, Feast features, MLflow models, "
    "drift-gated promotion and online serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(ctx: typer.Context) -> None:
    """churnops: every command takes --home (env CHURNOPS_HOME) to choose the workspace."""
    # Every file a command creates is 0600 and every folder 0700 (see churnops.storage.modes).
    ctx.with_resource(private_umask())
    # Our output is the Rich tables; the libraries' deprecation chatter and INFO logs are noise to a
    # user (they remain visible under pytest, where they matter).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("mlflow", "alembic", "feast", "evidently", "ibis"):
        logging.getLogger(name).setLevel(logging.WARNING)


for module in (data, ingest, features, stream, training, monitoring, serving, demo):
    module.register(app)


if __name__ == "__main__":
    app()
