"""A database file is data, never code: what mliapdb checks before it runs any SQL over a file
it did not write in this process (any ``--db``, a pulled or remote snapshot, a merge input).

- The file must be a DuckDB file (its header says so) or a new path: a JSON, CSV, Parquet or
  SQLite file is refused before DuckDB sees it (DuckDB would open it as an in-memory view, or
  try to download an extension).
- Every connection is made with extension auto-install and auto-load off: nothing is ever
  downloaded.
- The file's catalog is compared with the one this code's migrations make (an in-memory
  reference database, built once per process): each table mliapdb knows must be a table with
  its columns (a table replaced by a view, or with other columns, is refused); macros,
  sequences, types and schemas other than ``main`` are refused (mliapdb writes none, and a
  macro named like a builtin would change what mliapdb's own views compute).
- Views are compared by definition with this code's: identical ones are this code's SQL; any
  other view of the file is never used (a read-write open replaces mliapdb's own views, a
  read-only open puts this code's views in an overlay in front of the file and shadows the
  file's unknown views with views that fail with a message).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store import schema

SAFE_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
"""Configuration of every connection mliapdb makes: no extension is installed or loaded
behind its back (the only extension it loads is httpfs for remote snapshots, offline)."""

DUCKDB_MAGIC = b"DUCK"
"""Bytes 8..11 of every DuckDB database file."""

_HEADER_HINTS = (
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "a gzip file (an entries file? 'mliapdb ingest entries' reads it)"),
    (b"PK\x03\x04", "a zip file"),
)


def check_database_file(path: Path) -> None:
    """Refuse a file that is not a DuckDB database, by its first bytes (nothing is parsed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except IsADirectoryError as exc:
        raise MliapdbError(f"{path} is a folder, not a database file - pass --db FILE") from exc
    except OSError as exc:
        raise MliapdbError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(head) >= 12 and head[8:12] == DUCKDB_MAGIC:
        return
    what = next((hint for magic, hint in _HEADER_HINTS if head.startswith(magic)), None)
    if what is None:
        stripped = head.lstrip()
        what = ("an empty file" if not head else
                "a JSON file" if stripped[:1] in (b"{", b"[") else "not a DuckDB database")
    raise MliapdbError(f"{path} is {what}, not a DuckDB database - pass a mliapdb .duckdb "
                       "file, or a new path to create one")


def check_writable_location(path: Path) -> None:
    """Refuse a local database path that is not valid UTF-8, whose folder does not exist, is
    not a folder, or cannot be written (tried: a file created and removed there, which works
    for root too)."""
    import os
    import tempfile

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MliapdbError(
            f"--db {path}: the path is not valid UTF-8 - pass a --db with another name"
        ) from exc
    folder = Path(path).parent
    try:
        if not folder.exists():
            raise MliapdbError(f"cannot create {path}: the folder {folder} does not exist - "
                               "create it first, or pass another --db")
        if not folder.is_dir():
            raise MliapdbError(f"cannot create {path}: {folder} is not a folder - pass "
                               "another --db")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mliapdb-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MliapdbError(
            f"cannot write {path}: the folder {folder} is not writable "
            f"({exc.strerror or exc}) - pass a --db in a folder you can write"
        ) from exc


# --- the reference catalog ---------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """The objects of one DuckDB catalog that matter to mliapdb."""

    tables: dict[str, tuple[tuple[str, str], ...]]  # name -> ((column, type), ...)
    views: dict[str, str]  # name -> definition (duckdb_views().sql)
    others: list[str] = field(default_factory=list)  # "macro abs", "sequence s", ...


_S = "system.main."  # builtins by their full name: a file's macros cannot shadow them
_OTHERS = (
    f"SELECT function_type || ' function', schema_name || '.' || function_name "
    f"FROM {_S}duckdb_functions() WHERE database_name = $1 AND NOT internal "
    f"UNION ALL SELECT 'sequence', schema_name || '.' || sequence_name "
    f"FROM {_S}duckdb_sequences() WHERE database_name = $1 "
    f"UNION ALL SELECT 'type', schema_name || '.' || type_name "
    f"FROM {_S}duckdb_types() WHERE database_name = $1 AND NOT internal "
    f"UNION ALL SELECT 'schema', schema_name "
    f"FROM {_S}duckdb_schemas() WHERE database_name = $1 AND NOT internal "
    f"AND schema_name <> 'main' "
    f"UNION ALL SELECT 'view', schema_name || '.' || view_name "
    f"FROM {_S}duckdb_views() WHERE database_name = $1 AND NOT internal "
    f"AND schema_name <> 'main' "
    f"UNION ALL SELECT 'table', schema_name || '.' || table_name "
    f"FROM {_S}duckdb_tables() WHERE database_name = $1 AND schema_name <> 'main' ORDER BY ALL"
)


def read_catalog(con: duckdb.DuckDBPyConnection, catalog: str, code: bool = True) -> Catalog:
    """The tables, views and (``code``: about 30 ms, DuckDB lists every builtin function to
    find them) other user objects of ``catalog``; never executes a view, reads only the
    builtin ``system.main.duckdb_*()`` functions."""
    tables: dict[str, list[tuple[str, str]]] = {
        name: [] for (name,) in con.execute(
            f"SELECT table_name FROM {_S}duckdb_tables() WHERE database_name = $1 "
            "AND schema_name = 'main'", [catalog]).fetchall()}
    for table, column, dtype in con.execute(
        f"SELECT table_name, column_name, data_type FROM {_S}duckdb_columns() "
        "WHERE database_name = $1 AND schema_name = 'main' ORDER BY table_name, column_index",
        [catalog],
    ).fetchall():
        if table in tables:  # views have columns too
            tables[table].append((column, dtype))
    views = dict(con.execute(
        f"SELECT view_name, sql FROM {_S}duckdb_views() WHERE database_name = $1 "
        "AND NOT internal AND schema_name = 'main'", [catalog]).fetchall())
    others = [f"{kind} {name}" for kind, name in con.execute(_OTHERS, [catalog]).fetchall()
              ] if code else []
    return Catalog({name: tuple(cols) for name, cols in tables.items()}, views, others)


@functools.cache
def reference_catalog(version: int | None = None) -> Catalog:
    """The catalog this code's migrations 1..``version`` (default: all) and views make, in an
    in-memory database (about 0.1 s, once per process)."""

    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        for mig in schema.migrations():
            if version is None or mig.version <= version:
                con.execute(mig.path.read_text())
        if version is None or version == schema.code_schema_version():
            for path in schema.view_files():
                con.execute(path.read_text())
        return read_catalog(con, "memory", code=False)
    finally:
        con.close()


# --- checking a file's catalog -----------------------------------------------------------------


def refuse_code(have: Catalog, label: str) -> None:
    """Refuse a catalog holding macros, sequences, types or other schemas (mliapdb writes none;
    a macro named like a builtin would change what mliapdb's own SQL computes)."""
    if have.others:
        shown = ", ".join(have.others[:3]) + (f" and {len(have.others) - 3} more"
                                              if len(have.others) > 3 else "")
        raise MliapdbError(
            f"{label} holds {shown}, which mliapdb never writes - a database file is data, "
            "and a macro or other object could change what queries compute; refusing to open "
            "it (drop them in a DuckDB client if the file is yours)")


def check_no_code(con: duckdb.DuckDBPyConnection, catalog: str, label: str) -> None:
    """:func:`refuse_code` on ``catalog`` of ``con``: the first check of every open, before any
    SQL touches the file's tables."""
    refuse_code(read_catalog(con, catalog), label)


@dataclass(frozen=True)
class CatalogCheck:
    """What an open needs to know about a checked catalog."""

    views_current: bool  # every view of this code is in the file with this code's definition
    stale_views: list[str]  # this code's views the file lacks or defines otherwise
    foreign_views: list[str]  # views of the file that this code does not define


def check_catalog(con: duckdb.DuckDBPyConnection, catalog: str, version: int,
                  label: str) -> CatalogCheck:
    """Refuse a catalog whose tables are not mliapdb's (one-line errors naming ``label``);
    report how its views compare with this code's. Code (macros, ...) is refused before, by
    :func:`check_no_code`, which :func:`mliapdb.store.database.check_not_newer` runs."""

    have = read_catalog(con, catalog, code=False)
    if version == 0 and (have.tables or have.views):
        raise MliapdbError(
            f"{label} is a DuckDB database but not mliapdb's (no schema_migrations table; it "
            f"holds {', '.join(sorted([*have.tables, *have.views])[:3])}) - pass a mliapdb "
            "database, or a new path to create one")
    ref = reference_catalog(version if version < schema.code_schema_version() else None)
    for name, columns in ref.tables.items():
        if name in have.tables:
            if have.tables[name] != columns:
                missing = [c for c, _ in columns if c not in dict(have.tables[name])]
                what = (f"lacks column(s) {', '.join(missing[:3])}" if missing
                        else "has other columns or types")
                raise MliapdbError(
                    f"{label}: table {name} {what} than mliapdb's schema version {version} "
                    "makes - the file was altered or not written by mliapdb; refusing to open "
                    "it")
            continue
        if name in have.views:
            raise MliapdbError(
                f"{label}: {name} is a view, not mliapdb's table - a database file is data, "
                "and this view's SQL would run in mliapdb's queries; refusing to open it")
        if version > 0:
            raise MliapdbError(f"{label}: table {name} is missing (schema version {version}) - "
                               "the file was altered or not written by mliapdb")
    code_views = reference_catalog().views
    stale = sorted(name for name, sql in code_views.items() if have.views.get(name) != sql)
    foreign = sorted(name for name in have.views if name not in code_views)
    return CatalogCheck(views_current=not stale and not foreign, stale_views=stale,
                        foreign_views=foreign)
