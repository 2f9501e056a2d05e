"""The schema of a mliapdb database: numbered migrations applied once each, views re-applied.

Migrations live in ``schema/migrations/NNNN_name.sql`` (dbmate style); each runs in its own
transaction and is recorded in ``schema_migrations``. Views (``schema/views/*.sql``) are
``CREATE OR REPLACE`` and re-applied on every read-write open. A database whose schema is
newer than this code is refused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from mliapdb.config import schema_dir as shipped_schema_dir
from mliapdb.errors import MliapdbError

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(schema_dir: Path | None = None) -> list[Migration]:
    """The numbered migrations shipped with this code, in order."""
    schema_dir = schema_dir or shipped_schema_dir()
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
    return sorted(((schema_dir or shipped_schema_dir()) / "views").glob("*.sql"))


def db_schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """Highest applied migration of an open database (0 for an empty one)."""
    has_table = con.execute(
        "SELECT count(*) FROM system.main.duckdb_tables() WHERE table_name = "
        "'schema_migrations' AND schema_name = 'main' AND database_name = current_database()"
    ).fetchone()[0]
    if not has_table:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


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


