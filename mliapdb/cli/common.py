"""Options shared by the commands."""

from __future__ import annotations

import click

from mliapdb.config import DEFAULT_DB


def db_option(func):
    """``--db PATH`` on a command (overrides the group's ``--db``)."""
    return click.option(
        "--db",
        "db_path",
        default=None,
        metavar="PATH",
        help="Database file (overrides the global --db).",
    )(func)


def resolve_db(ctx: click.Context, db_path: str | None) -> str:
    """The command's ``--db``, else the group's ``--db`` (default ``mliapdb.duckdb``)."""
    return db_path or ctx.find_root().params.get("db") or DEFAULT_DB
