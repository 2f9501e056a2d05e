"""Command output: every command's data goes through :func:`mliapdb.render.render` to
stdout; progress and status go to stderr."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import click

from mliapdb.render import FORMATS, render


def format_option(func):
    """The shared ``--format`` option."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format of the data (written to stdout).",
    )(func)


def emit(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str) -> None:
    click.echo(render(columns, rows, fmt), nl=False)


def status(message: str) -> None:
    """A status line on stderr."""
    click.echo(message, err=True)
