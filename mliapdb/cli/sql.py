"""``mliapdb sql "SELECT ..."``: ad-hoc SQL on a read-only connection."""

from __future__ import annotations

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option
from mliapdb.errors import MliapdbError


@click.command()
@click.argument("statement")
@click.option("--param", "params", multiple=True, help="Value for a ? placeholder (repeat).")
@format_option
@db_option
@click.pass_context
def sql(ctx, statement, params, fmt, db_path) -> None:
    """Run one SQL statement read-only and print its rows (views: materials, dft_stability,
    model_energies, ehull_errors, ...; see docs/schema.md)."""
    import duckdb

    from mliapdb import db

    con = db.connect(resolve_db(ctx, db_path), read_only=True)
    try:
        try:
            cur = con.execute(statement, list(params))
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            if "read-only" in first.lower():
                raise MliapdbError(
                    f"{first} - 'mliapdb sql' is read-only; use the ingest commands to write"
                ) from exc
            raise MliapdbError(f"{first}") from exc
        if cur.description is None:
            return
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    emit(columns, rows, fmt)
