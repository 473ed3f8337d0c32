"""Commands for data quality, drift, promotion, rollback and audit."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI.

    Args:
        app: The root Typer application.
    """
