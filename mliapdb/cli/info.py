"""``mliapdb info``: what a database holds."""

from __future__ import annotations

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option


@click.command()
@format_option
@db_option
@click.pass_context
def info(ctx, fmt, db_path) -> None:
    """What the database holds: file size, schema version, settings, datasets (materials,
    accepted DFT entries, symmetry analyses), models, calculations by model, kind, settings
    and status, and whether the derived tables are up to date. Opens the file read-only.

    \b
    Examples:
      mliapdb info
      mliapdb --db study.duckdb info --format json
      mliapdb info --db https://example.org/snapshots/mp-2021.duckdb
    """
    from mliapdb.analysis.inventory import inventory
    from mliapdb.store import database as db
    from mliapdb.store.remote import is_remote

    location = resolve_db(ctx, db_path)
    con = db.connect(location, read_only=True)
    try:
        held = inventory(con, location if is_remote(location) else str(location))
    finally:
        con.close()
    emit(["section", "item", "value"], held.rows(), fmt)
