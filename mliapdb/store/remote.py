"""Open a snapshot on an HTTP(S) server read-only, without downloading it.

DuckDB reads the file by HTTP range requests: through its ``httpfs`` extension when that loads
offline (installed in DuckDB's extension folder, or shipped for this DuckDB version by the PyPI
package ``duckdb-extension-httpfs``), otherwise through :class:`RangeFileSystem`, a small
fsspec filesystem over urllib that DuckDB calls back into. Either way the database is attached
``READ_ONLY`` and made the default catalog, so every view and query works and every write is
refused. A snapshot whose views are older than this code's gets this code's views from a
read-only overlay catalog in front of it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store import schema, upgrade

CATALOG = "snapshot"
"""Name the remote database is attached under."""

_PROTOCOL = "mliapdbhttp"
_TIMEOUT_S = 60
_CHUNK = 1 << 16


def is_remote(path: str | Path) -> bool:
    """True for an ``http://`` or ``https://`` URL (a :class:`~pathlib.Path` never is)."""
    return isinstance(path, str) and path.lower().startswith(("http://", "https://"))


def open_remote(url: str, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the snapshot at ``url`` attached read-only as the default
    catalog, checked to be at this code's schema version."""
    if not read_only:
        raise MliapdbError(
            f"{url} is a remote snapshot and opens read-only - 'mliapdb snapshot pull {url}' "
            "downloads a copy you can write to"
        )
    from mliapdb.store.file import SAFE_CONFIG

    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        try:  # the reason DuckDB would hide ("does not exist")
            size = remote_size(url)
        except OSError as exc:
            reason = ("not found (HTTP 404)" if isinstance(exc, FileNotFoundError)
                      else str(exc).removeprefix(f"{url}: "))
            raise MliapdbError(f"cannot open {url}: {reason}") from exc
        _check_size(url, size)
        target = url if load_httpfs(con) else _register_range_fs(con, url)
        try:
            con.execute(f"ATTACH ? AS {CATALOG} (READ_ONLY)", [target])
        except duckdb.Error as exc:
            raise MliapdbError(f"cannot open {url}: {_first_line(exc)} - check the URL "
                               "('mliapdb snapshot list' shows published ones)") from exc
        con.execute(f"USE {CATALOG}")
        _check_schema(con, url)
    except BaseException:
        con.close()
        raise
    return con


def _check_size(url: str, size: int) -> None:
    """Compare the file's size with the manifest published beside it, where there is one: a
    file read in ranges is never hashed whole, so its size is what can be checked."""
    import json

    from mliapdb.store.manifest import check_manifest, database_entry, manifest_location

    where = manifest_location(url)
    try:
        manifest = check_manifest(json.loads(read_small(where)), where)
    except (FileNotFoundError, MliapdbError, ValueError):
        return  # no manifest (or none of ours): the schema check still applies
    expected = database_entry(manifest, where).get("size")
    if isinstance(expected, int) and expected != size:
        raise MliapdbError(f"cannot open {url}: it has {size} bytes but its manifest {where} "
                           f"says {expected} - the file was replaced or is being uploaded; "
                           "try again later, or 'mliapdb snapshot pull' it (sha256-checked)")


def load_httpfs(con: duckdb.DuckDBPyConnection) -> bool:
    """Load DuckDB's httpfs extension without the network: the installed one, else the one
    the ``duckdb-extension-httpfs`` package ships for this DuckDB version. False if neither."""
    try:
        con.execute("LOAD httpfs")
        return True
    except duckdb.Error:
        pass
    try:
        import duckdb_extension_httpfs
    except ImportError:
        return False
    ext = (Path(duckdb_extension_httpfs.__file__).parent / "extensions"
           / f"v{duckdb.__version__}" / "httpfs.duckdb_extension")
    if not ext.is_file():
        return False
    try:
        con.execute("INSTALL '{}'".format(str(ext).replace("'", "''")))
        con.execute("LOAD httpfs")
    except duckdb.Error:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    """The message of a DuckDB error (the last line of a Python traceback it relays)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _check_schema(con: duckdb.DuckDBPyConnection, url: str) -> None:
    """Refuse a schema newer or older than this code's, or a catalog that carries code or
    whose tables are not mliapdb's; serve this code's views from an in-memory overlay where
    the snapshot's definitions differ (its own views never run)."""
    from mliapdb.store.file import check_catalog

    have = upgrade.check_not_newer(con, url)
    know = schema.code_schema_version()
    if have < know:
        raise MliapdbError(
            f"{url} has schema version {have}, older than this mliapdb's {know}, and a remote "
            f"snapshot cannot be migrated - 'mliapdb snapshot pull {url}' downloads a copy that "
            "is migrated when opened"
        )
    check = check_catalog(con, CATALOG, have, url)
    if not check.views_current:
        upgrade.overlay_views(con, CATALOG, check.foreign_views, url)


# --- small documents: manifests and indexes ----------------------------------------------------


_MAX_SMALL = 16 << 20  # index and manifest files


SMALL_DEADLINE_S = 60.0
"""Seconds an index or manifest file may take to arrive, in all."""


def read_small(location: str) -> bytes:
    """The bytes of an index or manifest at a URL or path (FileNotFoundError if absent)."""
    if is_remote(location):
        try:
            with urllib.request.urlopen(location, timeout=_TIMEOUT_S) as resp:
                data = _read_small_body(resp, location)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise FileNotFoundError(location) from exc
            raise MliapdbError(f"{location}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise MliapdbError(f"cannot reach {location}: {getattr(exc, 'reason', exc)} - check "
                               "the URL and your network") from exc
    else:
        path = Path(_local(location))
        if not path.is_file():
            raise FileNotFoundError(location)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_SMALL + 1)
        except OSError as exc:
            raise MliapdbError(f"cannot read {location}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_SMALL:
        raise MliapdbError(f"{location} is larger than {_MAX_SMALL >> 20} MiB: not an index or "
                           "manifest")
    return data


def _read_small_body(stream, location: str) -> bytes:
    """At most ``_MAX_SMALL + 1`` bytes of ``stream``, within :data:`SMALL_DEADLINE_S`."""
    end = time.monotonic() + SMALL_DEADLINE_S
    chunks: list[bytes] = []
    got = 0
    while got <= _MAX_SMALL and (chunk := stream.read1(_CHUNK)):
        chunks.append(chunk)
        got += len(chunk)
        if time.monotonic() > end:
            raise MliapdbError(f"{location} did not arrive within {SMALL_DEADLINE_S:g} s "
                               f"({got} bytes so far) - the server is too slow; try again later")
    return b"".join(chunks)


def _local(location: str) -> str:
    """A ``file://`` URL as a path; anything else unchanged."""
    if location.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(location).path)
    return location



# --- the fallback: HTTP range requests from Python ---------------------------------------------


def _register_range_fs(con: duckdb.DuckDBPyConnection, url: str) -> str:
    """Register :class:`RangeFileSystem` on ``con``; the path DuckDB opens ``url`` by."""
    con.register_filesystem(range_filesystem())
    return f"{_PROTOCOL}://{url}"


def range_filesystem():
    """A read-only fsspec filesystem for ``mliapdbhttp://<http(s) URL>`` paths that reads by
    HTTP range requests (urllib), 1 MiB blocks cached."""
    from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

    class RangeFile(AbstractBufferedFile):
        def _fetch_range(self, start: int, end: int) -> bytes:
            end = min(end, self.size)
            if start >= end:
                return b""
            data = _get(self.fs.url(self.path), f"bytes={start}-{end - 1}")
            if len(data) != end - start:
                raise OSError(f"{self.fs.url(self.path)}: asked for {end - start} bytes at "
                              f"{start}, got {len(data)}")
            return data

    class RangeFileSystem(AbstractFileSystem):
        protocol = (_PROTOCOL,)
        cachable = False

        @classmethod
        def _strip_protocol(cls, path):
            return str(path).removeprefix(f"{_PROTOCOL}://")

        @staticmethod
        def url(path: str) -> str:
            return str(path).removeprefix(f"{_PROTOCOL}://")

        def info(self, path, **kwargs):
            url = self.url(path)
            return {"name": url, "size": remote_size(url), "type": "file"}

        def ls(self, path, detail=True, **kwargs):
            return [self.info(path)] if detail else [self.url(path)]

        def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None,
                  **kwargs):
            if mode != "rb":
                raise PermissionError(f"{self.url(path)} is read-only")
            return RangeFile(self, self.url(path), mode, block_size=block_size or 1 << 20,
                             cache_type="blockcache", cache_options={"maxblocks": 64},
                             size=remote_size(self.url(path)))

    return RangeFileSystem()


def remote_size(url: str) -> int:
    """Size of the file at ``url`` from a one-byte range request (FileNotFoundError on 404;
    OSError if the server ignores ranges)."""
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
            content_range = resp.headers.get("Content-Range", "")
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise FileNotFoundError(url) from exc
        if exc.code == 416:  # an empty file
            return 0
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    if resp.status != 206 or "/" not in content_range:
        raise OSError(f"{url}: the server does not answer range requests - download it with "
                      f"'mliapdb snapshot pull {url}'")
    return int(content_range.rsplit("/", 1)[1])


def _get(url: str, byte_range: str) -> bytes:
    request = urllib.request.Request(url, headers={"Range": byte_range})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
        if resp.status != 206:
            raise OSError(f"{url}: the server ignored a range request")
        return resp.read()
