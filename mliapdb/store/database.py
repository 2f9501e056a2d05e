"""Open a mliapdb DuckDB file (local, or a remote snapshot read-only), migrated to this code's
schema (:mod:`mliapdb.store.schema`) when opened read-write; transactions and row inserts.

DuckDB lets one process hold a file read-write, and that holder blocks every other process's
open, read-only ones too (readers share a lock that blocks writers). So every open that meets
a lock held by another process waits for it (:class:`LockWait`: up to 60 s by default,
``$MLIAPDB_LOCK_TIMEOUT``), with one status line on stderr, instead of failing; long runs hold
the file only while they commit (:class:`Holder`)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store.schema import code_schema_version
from mliapdb.store.upgrade import _check_not_newer, migrate, overlay_views

DATA_CATALOG = "data"
"""Name a local database opened read-only is attached under (the default catalog)."""

LOCK_TIMEOUT_ENV = "MLIAPDB_LOCK_TIMEOUT"
"""Environment variable: seconds an open waits for a file another process holds."""

DEFAULT_LOCK_TIMEOUT_S = 60.0
"""Seconds an open waits for a lock by default: longer than a commit of a batch of results
or an end-of-run refresh of the derived tables takes."""


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LockWait:
    """How an open waits for a database file another process holds (read-write, or, for a
    read-write open, read-only too): it retries every ``poll_s`` seconds for up to
    ``timeout_s`` (0: not at all), after one status line to ``on_wait`` (stderr by default);
    after the bound, a one-line :class:`MliapdbError` says what to do."""

    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    poll_s: float = 0.02
    on_wait: Callable[[str], None] = field(default=_stderr_line, compare=False)

    def __post_init__(self) -> None:
        if not self.timeout_s >= 0:  # NaN too
            raise MliapdbError(f"lock timeout must be 0 s or more, got {self.timeout_s}")


class DatabaseLocked(MliapdbError):
    """The database file stayed held by another process for the whole lock timeout."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


_LOCK_WAIT: ContextVar[LockWait | None] = ContextVar("mliapdb_lock_wait", default=None)


def lock_wait() -> LockWait:
    """The :class:`LockWait` of this context: the one :func:`waiting_for_locks` set (the CLI's
    ``--lock-timeout``), else ``$MLIAPDB_LOCK_TIMEOUT`` seconds, else 60 s."""
    chosen = _LOCK_WAIT.get()
    if chosen is not None:
        return chosen
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return LockWait()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise MliapdbError(f"${LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds (0 or "
                           f"more) - set it to e.g. 60, or unset it")
    return LockWait(timeout_s=seconds)


@contextmanager
def waiting_for_locks(wait: LockWait) -> Iterator[LockWait]:
    """Every open within the block waits for locks as ``wait`` says."""
    token = _LOCK_WAIT.set(wait)
    try:
        yield wait
    finally:
        _LOCK_WAIT.reset(token)


_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


def _is_lock_error(exc: BaseException) -> bool:
    return "could not set lock" in str(exc).lower()


def _waiting(path: Path, exc: BaseException, writing: bool, opener: Callable[[], Any],
             wait: LockWait) -> Any:
    """Retry ``opener`` while another process holds the lock of ``path`` (``exc``: the first
    lock error), up to ``wait.timeout_s`` seconds."""
    deadline = time.monotonic() + wait.timeout_s
    first = True
    while True:
        text = str(exc)
        pid = _HOLDER_PID.search(text)
        who = f"another process (PID {pid.group(1)})" if pid else "another process"
        doing = ("is reading it" if "read-only mode" in text else
                 "is writing it (a commit in progress)")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DatabaseLocked(
                f"{path} is in use by {who} (a running 'mliapdb ingest'?), still after "
                f"{wait.timeout_s:g} s - wait for it to finish and run again, wait longer with "
                f"--lock-timeout SECONDS (or ${LOCK_TIMEOUT_ENV}), or query a copy of the file",
                path) from exc
        if first:
            mode = "to write" if writing else "to read"
            wait.on_wait(f"waiting for {path} ({mode}): {who} {doing} - retrying for up to "
                         f"{wait.timeout_s:g} s")
            first = False
        time.sleep(min(wait.poll_s, left))
        try:
            return opener()
        except duckdb.Error as again:
            if not _is_lock_error(again):
                raise _open_error(path, again) from again
            exc = again



def connect(path: str | Path, read_only: bool = False, create: bool = False):
    """Open the database at ``path``; migrate it when opened read-write.

    The file is checked first (:mod:`mliapdb.store.file`): a DuckDB file whose catalog holds
    mliapdb's tables and no code, or a new path (``create=True``). A read-write open applies
    pending migrations and this code's views, and writes nothing to a current file. A
    read-only open never writes (an older schema is migrated first, where the file is
    writable); it uses the file's views only where their definitions are this code's, else
    this code's views from an in-memory overlay. An ``http(s)://`` URL opens a remote
    snapshot read-only (:mod:`mliapdb.store.remote`).
    """
    from mliapdb.store.file import check_database_file, check_writable_location
    from mliapdb.store.remote import is_remote

    if is_remote(path):
        from mliapdb.store.remote import open_remote

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
    from mliapdb.store.file import SAFE_CONFIG

    def opener() -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(path), config=SAFE_CONFIG)

    try:
        return opener()
    except duckdb.Error as exc:
        if _is_lock_error(exc):
            return _waiting(path, exc, True, opener, lock_wait())
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
    from mliapdb.store.file import SAFE_CONFIG, check_catalog

    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        def opener() -> None:
            con.execute(f"ATTACH ? AS {DATA_CATALOG} (READ_ONLY)", [str(path)])

        try:
            opener()
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise _open_error(path, exc) from exc
            _waiting(path, exc, False, opener, lock_wait())
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
    from mliapdb.store.remote import is_remote

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


class Holder:
    """How a long run reaches its database: ``with holder.held() as con:`` is a block with a
    read-write connection.

    ``Holder(path)`` opens the file read-write for each block (waiting for a lock another
    process holds, :class:`LockWait`) and closes it afterwards, so that other processes read
    it between blocks; ``Holder(con=con)`` lends an open connection for every block (the
    caller keeps the file and closes it)."""

    def __init__(self, path: str | Path | None = None,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
        if (path is None) == (con is None):
            raise ValueError("Holder takes exactly one of path and con")
        self.path = None if path is None else Path(path)
        self.con = con

    @classmethod
    def of(cls, target: Holder | duckdb.DuckDBPyConnection | str | Path) -> Holder:
        """``target`` as a Holder: a Holder as it is, a connection lent, a path opened per
        block."""
        if isinstance(target, Holder):
            return target
        if isinstance(target, str | Path):
            return cls(path=target)
        return cls(con=target)

    @property
    def short(self) -> bool:
        """True when each block opens and closes the file (other processes read between)."""
        return self.path is not None

    @contextmanager
    def held(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection for the block."""
        if self.con is not None:
            yield self.con
            return
        con = connect(self.path)
        try:
            yield con
        finally:
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
    """Bulk-insert dict rows (keys = column names) through an Arrow table; rows of
    ``calculations`` bump their generation markers (:mod:`mliapdb.store.generations`)."""
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
    if table == "calculations":  # every mliapdb write of results bumps their markers
        from mliapdb.store.generations import bump_calculations

        bump_calculations(con, rows)
    return len(rows)


def duckdb_version(con: duckdb.DuckDBPyConnection) -> str:
    """The DuckDB release of this connection as SQL's ``version()`` gives it (stored with
    fingerprinted builds: ``hash()`` differs between releases)."""
    return str(con.execute("SELECT version()").fetchone()[0])


def now() -> datetime:
    """UTC now without tzinfo (DuckDB TIMESTAMP)."""
    return datetime.now(UTC).replace(tzinfo=None)


READING_KINDS = ("SELECT", "EXPLAIN")
"""Statement types ``mliapdb sql`` runs (DuckDB's parser: SELECT also covers WITH, VALUES,
FROM-first, SHOW, DESCRIBE, SUMMARIZE and set operations)."""


def reading_statement(statement: str, label: str = "'mliapdb sql'"):
    """The one statement of ``statement``, parsed by DuckDB, if it is of a reading kind; a
    one-line error naming what was refused otherwise (``label``: who refuses)."""
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
            f"{label} runs exactly one statement, got {len(statements)} - run them one "
            "at a time")
    kind = statements[0].type.name
    if kind not in READING_KINDS:
        raise MliapdbError(
            f"{label} is read-only: {kind} statements are refused (only SELECT, WITH, "
            "VALUES, SHOW, DESCRIBE, SUMMARIZE and EXPLAIN run) - use the ingest commands to "
            "write, 'mliapdb snapshot' to copy")
    return statements[0]


def fetch_decoded(cursor: duckdb.DuckDBPyConnection) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of an executed statement, JSON columns decoded into Python lists
    and dicts (DuckDB hands them over as text), so that every output writes them as JSON."""
    import json

    columns = [d[0] for d in cursor.description]
    is_json = [str(d[1]) == "JSON" for d in cursor.description]
    rows = cursor.fetchall()
    if any(is_json):
        rows = [tuple(json.loads(v) if j and isinstance(v, str) else v
                      for v, j in zip(row, is_json, strict=True)) for row in rows]
    return columns, rows
