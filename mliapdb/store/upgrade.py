"""Bring an open database to this code's schema (:mod:`mliapdb.store.schema`): pending
migrations once each in a transaction, this code's views; a newer schema, or a file that carries
code, is refused with a clear message."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store.file import check_catalog, check_no_code
from mliapdb.store.generations import ADOPTED_AT, adopt_builds
from mliapdb.store.schema import (
    code_schema_version,
    current_catalog,
    db_schema_version,
    migrations,
    stored_views_sha256,
    view_files,
    views_sha256,
)

VIEWS_CATALOG = "views"
"""In-memory catalog in front of a read-only database whose views are not this code's."""


def _check_not_newer(con: duckdb.DuckDBPyConnection, label: str) -> int:
    """The database's schema version; a clear error when it is newer than this code's, or
    when the file carries code (macros and the like: :func:`mliapdb.store.file.check_no_code`)."""

    check_no_code(con, current_catalog(con), label)
    have = db_schema_version(con)
    know = code_schema_version()
    if have > know:
        from mliapdb import __version__

        raise MliapdbError(
            f"{label} has schema version {have} but this mliapdb ({__version__}) understands "
            f"up to {know} - upgrade mliapdb to open it"
        )
    return have


check_not_newer = _check_not_newer


def migrate(con: duckdb.DuckDBPyConnection, label: str = "database") -> list[int]:
    """Apply pending migrations (each in one transaction); re-create this code's views where
    the file's definitions differ. A current database is not written at all."""

    have = _check_not_newer(con, label)
    check_catalog(con, current_catalog(con), have, label)
    pending = [mig for mig in migrations() if mig.version > have]
    if pending and have == 0:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
    applied = []
    for mig in pending:
        con.begin()
        try:
            con.execute(mig.path.read_text())
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [mig.version, mig.name, datetime.now(UTC).replace(tzinfo=None)],
            )
            con.commit()
        except Exception:
            con.rollback()
            raise
        applied.append(mig.version)
    check = check_catalog(con, current_catalog(con), code_schema_version(), label)
    if check.stale_views or stored_views_sha256(con) != views_sha256():
        apply_views(con)
    if have and have < ADOPTED_AT <= code_schema_version():
        adopt_builds(con)  # builds stored before the generation markers
    return applied


def apply_views(con: duckdb.DuckDBPyConnection) -> None:
    """Re-create every view from ``schema/views`` (idempotent) in one transaction."""
    con.begin()
    try:
        for path in view_files():
            con.execute(path.read_text())
        con.execute(
            "INSERT OR REPLACE INTO db_settings VALUES ('views_sha256', ?)", [views_sha256()]
        )
        con.commit()
    except Exception:
        con.rollback()
        raise


def overlay_views(con: duckdb.DuckDBPyConnection, catalog: str, foreign: Iterable[str],
                  label: str) -> None:
    """Create this code's views in an in-memory catalog searched before ``catalog``, and
    shadow each of the file's own views that this code does not define by a view that fails
    with a message: no view of the file runs under its name."""
    con.execute(f"ATTACH ':memory:' AS {VIEWS_CATALOG}")
    con.execute(f"SET search_path = '{VIEWS_CATALOG}.main,{catalog}.main'")
    for view in view_files():
        con.execute(view.read_text())
    for name in foreign:
        message = (f"view {name} of {label} is not one of mliapdb's views and is left out "
                   "(a database file is data: its own views never run)")
        quoted_name = name.replace('"', '""')
        quoted_message = message.replace("'", "''")
        con.execute(f'CREATE VIEW {VIEWS_CATALOG}.main."{quoted_name}" '
                    f"AS SELECT error('{quoted_message}') AS refused")

