"""Typer command groups, one module per stage; `churnops.cli` assembles them."""
