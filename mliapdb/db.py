"""Open a mliapdb DuckDB file: apply numbered migrations once each, re-apply views.

Migrations live in ``schema/migrations/NNNN_name.sql`` (dbmate style); each runs in its own
transaction and is recorded in ``schema_migrations``. Views (``schema/views/*.sql``) are
``CREATE OR REPLACE`` and re-applied on every read-write open. A database whose schema is
newer than this code is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.config import SCHEMA_DIR
from mliapdb.errors import MliapdbError

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(schema_dir: Path | None = None) -> list[Migration]:
    """The numbered migrations shipped with this code, in order."""
    schema_dir = schema_dir or SCHEMA_DIR
    found = []
    for path in sorted((schema_dir / "migrations").glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MliapdbError(f"{path}: migration files must be named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MliapdbError(f"{schema_dir / 'migrations'}: versions must be 1..N without gaps")
    return found


def code_schema_version(schema_dir: Path | None = None) -> int:
    """The newest schema version this code understands."""
    return len(migrations(schema_dir))


def view_files(schema_dir: Path | None = None) -> list[Path]:
    return sorted(((schema_dir or SCHEMA_DIR) / "views").glob("*.sql"))


def db_schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """Highest applied migration of an open database (0 for an empty one)."""
    has_table = con.execute(
        "SELECT count(*) FROM system.main.duckdb_tables() WHERE table_name = "
        "'schema_migrations' AND schema_name = 'main' AND database_name = current_database()"
    ).fetchone()[0]
    if not has_table:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def _check_not_newer(con: duckdb.DuckDBPyConnection, label: str) -> int:
    """The database's schema version; a clear error when it is newer than this code's, or
    when the file carries code (macros and the like: :func:`mliapdb.dbfile.check_no_code`)."""
    from mliapdb.dbfile import check_no_code

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
    from mliapdb.dbfile import check_catalog

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
    return applied


def current_catalog(con: duckdb.DuckDBPyConnection) -> str:
    """The default catalog of ``con`` (by the builtin's full name: no macro shadows it)."""
    return con.execute("SELECT system.main.current_database()").fetchone()[0]


def views_sha256() -> str:
    """sha256 of this code's view definitions (stored in ``db_settings.views_sha256`` for
    older releases; this code compares the definitions themselves)."""
    h = hashlib.sha256()
    for path in view_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def stored_views_sha256(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute("SELECT value FROM db_settings WHERE key = 'views_sha256'").fetchall()
    return row[0][0] if row else None


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


DATA_CATALOG = "data"
"""Name a local database opened read-only is attached under (the default catalog)."""

VIEWS_CATALOG = "views"
"""In-memory catalog in front of a read-only database whose views are not this code's."""


def connect(path: str | Path, read_only: bool = False, create: bool = False):
    """Open the database at ``path``; migrate it when opened read-write.

    The file is checked first (:mod:`mliapdb.dbfile`): a DuckDB file whose catalog holds
    mliapdb's tables and no code, or a new path (``create=True``). A read-write open applies
    pending migrations and this code's views, and writes nothing to a current file. A
    read-only open never writes (an older schema is migrated first, where the file is
    writable); it uses the file's views only where their definitions are this code's, else
    this code's views from an in-memory overlay. An ``http(s)://`` URL opens a remote
    snapshot read-only (:mod:`mliapdb.remote`).
    """
    from mliapdb.dbfile import check_database_file, check_writable_location
    from mliapdb.remote import is_remote

    if is_remote(path):
        from mliapdb.remote import open_remote

        return open_remote(str(path), read_only=read_only)
    path = Path(path)
    if not path.exists():
        if not create:
            raise MliapdbError(
                f"no database at {path} - run 'mliapdb --db {path} ingest entries FILE...' "
                "to create one, or pass --db"
            )
        check_writable_location(path)
    else:
        check_database_file(path)
    if read_only:
        con = _open_read_only(path)
        if con is not None:
            return con
        connect(path).close()  # an older schema: migrate the file, then open it read-only
        con = _open_read_only(path)
        if con is None:  # pragma: no cover - migrate brought it to the current version
            raise MliapdbError(f"{path}: could not bring its schema up to date")
        return con
    con = _duckdb_connect(path)
    try:
        migrate(con, str(path))
    except BaseException:
        con.close()
        raise
    return con


def _duckdb_connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-write DuckDB connection to ``path`` (no extension auto-loading), with one-line
    errors for a locked or unreadable file."""
    from mliapdb.dbfile import SAFE_CONFIG

    try:
        return duckdb.connect(str(path), config=SAFE_CONFIG)
    except duckdb.Error as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: Path, exc: BaseException) -> MliapdbError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "lock" in first.lower():
        return MliapdbError(
            f"{path} is in use by another process (a running 'mliapdb ingest'?) - wait for "
            "it to finish, or query a copy of the file"
        )
    if "read-only" in first.lower() or "permission" in first.lower():
        return MliapdbError(f"cannot write {path}: {first} - it is read-only here; copy it to "
                            "a folder you can write, or pass another --db")
    return MliapdbError(f"cannot open {path}: {first}")


def _open_read_only(path: Path) -> duckdb.DuckDBPyConnection | None:
    """An in-memory connection with ``path`` attached read-only as the default catalog, its
    catalog checked, this code's views in front where the file's differ; None when the
    file's schema is older than this code's (it needs migrating)."""
    from mliapdb.dbfile import SAFE_CONFIG, check_catalog

    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        try:
            con.execute(f"ATTACH ? AS {DATA_CATALOG} (READ_ONLY)", [str(path)])
        except duckdb.Error as exc:
            raise _open_error(path, exc) from exc
        con.execute(f"USE {DATA_CATALOG}")
        have = _check_not_newer(con, str(path))
        if have < code_schema_version():
            con.close()
            return None
        check = check_catalog(con, DATA_CATALOG, have, str(path))
        if not check.views_current:
            overlay_views(con, DATA_CATALOG, check.foreign_views, str(path))
    except BaseException:
        con.close()
        raise
    return con


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


def lock_down(con: duckdb.DuckDBPyConnection, readable: Iterable[str | Path] = ()) -> None:
    """Make ``con`` unable to touch anything outside what it has attached: no file access but
    the ``readable`` paths (files or folders, read through table functions such as
    ``read_parquet``), no ATTACH of files, COPY, EXPORT, INSTALL or LOAD, and a locked
    configuration (no SET can undo it)."""
    files, folders = [], []
    for item in readable:
        p = Path(item).resolve()
        (folders if p.is_dir() else files).append(str(p) + ("/" if p.is_dir() else ""))
    if files:
        con.execute("SET allowed_paths = ?", [files])
    if folders:
        con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


@contextmanager
def opened(path: str | Path, read_only: bool = False,
           create: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """:func:`connect` for the length of a block, closed afterwards; a database file this
    call created is removed again when the block fails (a refused command leaves nothing)."""
    from mliapdb.remote import is_remote

    new = not read_only and create and not is_remote(path) and not Path(path).exists()
    con = connect(path, read_only=read_only, create=create)
    try:
        yield con
    except BaseException:
        con.close()
        if new:
            for leftover in (Path(path), Path(f"{path}.wal")):
                leftover.unlink(missing_ok=True)
        raise
    con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN ... COMMIT``, rolled back on any exception."""
    con.begin()
    try:
        yield con
    except BaseException:
        con.rollback()
        raise
    con.commit()


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Bulk-insert dict rows (keys = column names) through an Arrow table."""
    import pyarrow as pa

    rows = list(rows)
    if not rows:
        return 0
    columns = list(rows[0])
    _mliapdb_rows = pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows])  # noqa: F841
    # DuckDB's replacement scan reads the local Arrow table by name (no register(), which a
    # pending result of this connection would block).
    con.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM _mliapdb_rows"
    ).fetchall()
    return len(rows)


def duckdb_version(con: duckdb.DuckDBPyConnection) -> str:
    """The DuckDB release of this connection as SQL's ``version()`` gives it (stored with
    fingerprinted builds: ``hash()`` differs between releases)."""
    return str(con.execute("SELECT version()").fetchone()[0])


def now() -> datetime:
    """UTC now without tzinfo (DuckDB TIMESTAMP)."""
    return datetime.now(UTC).replace(tzinfo=None)
