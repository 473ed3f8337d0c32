"""`churnops metrics`: the home's data-quality figures in the Prometheus text format.

Wiring only: `monitoring.dq_metrics` computes the figures; this writes them to stdout or, for
node-exporter's textfile collector, atomically to a file (a scrape never sees half a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.commands.common import HomeOption, console, workspace


def metrics(
    home: HomeOption = None,
    textfile: Annotated[
        Path | None,
        typer.Option(
            help="Write here (e.g. /var/lib/node_exporter/textfile/churnops.prom), atomically, "
            "instead of printing.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Data-quality gauges per source and of the features, in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    from churnops.monitoring.dq_metrics import DataQualityCollector
    from churnops.storage.atomic import write_atomic

    ws = workspace(home)
    registry = CollectorRegistry()
    registry.register(DataQualityCollector(home=ws.home))
    text = generate_latest(registry)
    if textfile is None:
        typer.echo(text.decode("utf-8"), nl=False)
        return
    written = write_atomic(textfile, lambda tmp: tmp.write_bytes(text))
    console.print(f"metrics: {written}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
    app.command()(metrics)
