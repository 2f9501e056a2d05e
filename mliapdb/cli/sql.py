"""``mliapdb sql "SELECT ..."``: one reading statement on a locked, read-only connection."""

from __future__ import annotations

from pathlib import Path

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option
from mliapdb.errors import MliapdbError
from mliapdb.store.database import fetch_decoded, reading_statement


@click.command()
@click.argument("statement")
@click.option("--param", "params", multiple=True, help="Value for a ? placeholder (repeat).")
@click.option(
    "--read",
    "readable",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    metavar="PATH",
    help="A file or folder the statement may read (e.g. Parquet with read_parquet); repeat.",
)
@format_option
@db_option
@click.pass_context
def sql(ctx, statement, params, readable, fmt, db_path) -> None:
    """Run one reading SQL statement and print its rows (views: materials, dft_stability,
    model_energies, ehull_errors, ...; see docs/schema.md).

    The connection is read-only by construction: exactly one SELECT/WITH/VALUES/SHOW/
    DESCRIBE/SUMMARIZE/EXPLAIN statement runs; it reads the database and the --read paths
    only, and cannot attach, copy, export, install, load or change settings.

    \b
    Examples:
      mliapdb sql "SELECT model, count(*) FROM calculations GROUP BY ALL"
      mliapdb sql "SELECT * FROM ehull_errors WHERE material_id = ?" --param mp-19009
      mliapdb sql "SELECT * FROM read_parquet('theirs.parquet')" --read theirs.parquet
    """
    import duckdb

    from mliapdb.store import database as db

    parsed = reading_statement(statement)
    con = db.connect(resolve_db(ctx, db_path), read_only=True)
    try:
        db.lock_down(con, readable)
        try:
            cur = con.execute(parsed, list(params))
        except duckdb.Error as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            first = lines[0]
            if "disabled by configuration" in first or "locked" in first:
                raise MliapdbError(
                    f"{first} - 'mliapdb sql' reads only the database and the files named "
                    "with --read") from exc
            raise MliapdbError(first) from exc
        columns, rows = fetch_decoded(cur)
    finally:
        con.close()
    emit(columns, rows, fmt)
