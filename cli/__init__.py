"""The srcube command line: one typer app on top of every layer (runs, cubes, models, training)."""

from srcube.cli.commands import app, main

__all__ = ["app", "main"]
