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
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        " AND table_schema = current_schema() AND table_catalog = current_database()"
    ).fetchone()[0]
    if not has_table:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def _check_not_newer(con: duckdb.DuckDBPyConnection, label: str) -> int:
    """The database's schema version; a clear error when it is newer than this code's."""
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
    """Apply pending migrations (each in one transaction) and re-apply every view."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    have = _check_not_newer(con, label)
    applied = []
    for mig in migrations():
        if mig.version <= have:
            continue
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
    apply_views(con)
    return applied


def views_sha256() -> str:
    """sha256 of this code's view definitions (stored in ``db_settings.views_sha256``)."""
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


def connect(path: str | Path, read_only: bool = False, create: bool = False):
    """Open the database at ``path``; migrate it when opened read-write.

    A read-only open needs an existing database at the current schema version; a read-write
    open of an older one migrates it. ``create=False`` refuses a missing file. An
    ``http(s)://`` URL opens a remote snapshot read-only (:mod:`mliapdb.remote`).
    """
    from mliapdb.remote import is_remote

    if is_remote(path):
        from mliapdb.remote import open_remote

        return open_remote(str(path), read_only=read_only)
    path = Path(path)
    if not path.exists() and not create:
        raise MliapdbError(
            f"no database at {path} - run 'mliapdb --db {path} ingest entries FILE...' "
            "to create one, or pass --db"
        )
    try:
        if read_only:
            _ensure_current(path)
            con = duckdb.connect(str(path), read_only=True)
            _check_not_newer(con, str(path))
            return con
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        first = str(exc).splitlines()[0]
        if "lock" in first.lower():
            raise MliapdbError(
                f"{path} is in use by another process (a running 'mliapdb ingest'?) - wait for "
                "it to finish, or query a copy of the file"
            ) from exc
        raise MliapdbError(f"cannot open {path}: {first}") from exc
    try:
        migrate(con, str(path))
    except Exception:
        con.close()
        raise
    return con


def _ensure_current(path: Path) -> None:
    """Bring an existing file up to the code's schema and views before a read-only open."""
    with duckdb.connect(str(path), read_only=True) as ro:
        have = _check_not_newer(ro, str(path))
        current_views = have > 0 and stored_views_sha256(ro) == views_sha256()
    if have == code_schema_version():
        if current_views:
            return  # leave the file byte-for-byte untouched
        try:  # views from older code: refresh them if the file is writable
            with duckdb.connect(str(path)) as rw:
                apply_views(rw)
        except duckdb.Error:
            pass
        return
    with duckdb.connect(str(path)) as rw:
        migrate(rw, str(path))


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
