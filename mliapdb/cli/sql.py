"""``mliapdb sql "SELECT ..."``: one reading statement on a locked, read-only connection."""

from __future__ import annotations

from pathlib import Path

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option
from mliapdb.errors import MliapdbError

READING_KINDS = ("SELECT", "EXPLAIN")
"""Statement types ``mliapdb sql`` runs (DuckDB's parser: SELECT also covers WITH, VALUES,
FROM-first, SHOW, DESCRIBE, SUMMARIZE and set operations)."""


def reading_statement(statement: str):
    """The one statement of ``statement``, parsed by DuckDB, if it is of a reading kind; a
    one-line error naming what was refused otherwise."""
    import duckdb

    try:
        statement.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MliapdbError("the statement is not valid UTF-8 - write it in UTF-8") from exc
    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MliapdbError(f"{first} - check the SQL") from exc
    if len(statements) != 1:
        raise MliapdbError(
            f"'mliapdb sql' runs exactly one statement, got {len(statements)} - run them one "
            "at a time")
    kind = statements[0].type.name
    if kind not in READING_KINDS:
        raise MliapdbError(
            f"'mliapdb sql' is read-only: {kind} statements are refused (only SELECT, WITH, "
            "VALUES, SHOW, DESCRIBE, SUMMARIZE and EXPLAIN run) - use the ingest commands to "
            "write, 'mliapdb snapshot' to copy")
    return statements[0]


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

    from mliapdb import db

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
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    emit(columns, rows, fmt)
