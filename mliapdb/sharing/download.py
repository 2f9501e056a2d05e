"""Find and pull snapshots: the index (``snapshots/index.json``), resumable downloads over
HTTP(S) (stdlib urllib, Range requests into ``DEST.part``) or from a file path, sha256 checked
before the file is renamed into place.

Every transfer is bounded: a download stops at the size the index or manifest gives (a longer
body is refused and its ``.part`` removed), and gives up below a minimum transfer rate and
after an overall deadline (:class:`TransferLimits`); index and manifest files are read up to
16 MiB within :data:`SMALL_DEADLINE_S` seconds."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mliapdb.config import snapshots_dir
from mliapdb.errors import MliapdbError, printable
from mliapdb.store.remote import _local, is_remote, read_small


def default_index() -> Path:
    """The snapshot index shipped with this code (``snapshots/index.json``)."""
    return snapshots_dir() / "index.json"
INDEX_FORMAT = "mliapdb-snapshot-index"
_CHUNK = 1 << 16
_TIMEOUT_S = 60
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class TransferLimits:
    """When a snapshot download gives up (``snapshot pull --deadline/--min-rate/--rate-window``).

    ``deadline_s``: seconds the whole pull may take, resumes after lost connections included;
    ``min_rate``: bytes per second that must arrive on average over every ``window_s`` seconds
    (also the longest wait for a single byte). The size bound needs no setting: the index or
    manifest says how many bytes the file has.
    """

    deadline_s: float = 3600.0
    min_rate: float = 1024.0
    window_s: float = 30.0

    def __post_init__(self) -> None:
        for option, value, positive in (("--deadline", self.deadline_s, True),
                                        ("--rate-window", self.window_s, True),
                                        ("--min-rate", self.min_rate, False)):
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise MliapdbError(f"{option} {value!r}: give a finite number "
                                   + ("above 0" if positive else "of at least 0"))


Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""
ProgressFactory = Callable[[str, int | None, int], AbstractContextManager[Progress]]
"""``factory(description, total, already_done)`` -> a context manager giving a Progress."""


def no_progress(description: str, total: int | None, done: int) -> AbstractContextManager:
    return nullcontext(lambda n: None)


# --- small files: index, manifest --------------------------------------------------------------


def _join(base: str, ref: str) -> str:
    """``ref`` (URL or path) relative to the index or manifest at ``base``."""
    if is_remote(ref) or ref.startswith("file://") or Path(ref).is_absolute():
        return ref
    if is_remote(base):
        return urllib.parse.urljoin(base, ref)
    return str(Path(_local(base)).parent / ref)


@dataclass(frozen=True)
class IndexEntry:
    name: str
    url: str
    sha256: str | None
    size: int | None
    description: str
    index: str


def load_index(location: str | Path) -> list[IndexEntry]:
    """The entries of one index (JSON ``{"format": "mliapdb-snapshot-index", "snapshots":
    [...]}``); relative URLs are resolved against the index's own location.

    Each entry is checked: ``name`` and ``url`` non-empty strings without control characters,
    ``sha256`` 64 hex digits, ``size`` a non-negative integer, ``description`` a string. A
    remote index may only point at http(s) URLs (absolute, or relative to the index); a local
    index may also name files."""
    location = str(location)
    try:
        data = json.loads(read_small(location))
    except FileNotFoundError as exc:
        raise MliapdbError(f"no snapshot index at {location}") from exc
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, nesting
        raise MliapdbError(f"{location} is not valid JSON ({_short(exc)})") from exc
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise MliapdbError(f"{location} is not a snapshot index (no \"format\": "
                           f"\"{INDEX_FORMAT}\"; see snapshots/README.md)")
    items = data.get("snapshots", [])
    if not isinstance(items, list):
        raise MliapdbError(f"{location}: \"snapshots\" must be a list of entries - fix the "
                           "index (see snapshots/README.md)")
    return [_index_entry(location, i, item) for i, item in enumerate(items)]


def _index_entry(location: str, i: int, item: object) -> IndexEntry:
    """Entry ``i`` of the index at ``location``, checked (see :func:`load_index`)."""
    if not isinstance(item, dict) or not {"name", "url"} <= set(item):
        raise MliapdbError(f"{location}: snapshot #{i + 1} needs at least a name and a url")
    name, url = item["name"], item["url"]
    what = f"{location}: snapshot #{i + 1}"
    for key, value in (("name", name), ("url", url)):
        if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
            raise MliapdbError(f"{what}: {key} {printable(repr(value))} must be a non-empty "
                               "string without control characters - fix the index")
    what = f"{location}: snapshot {name!r}"
    sha256, size = item.get("sha256"), item.get("size")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        raise MliapdbError(f"{what}: sha256 {printable(repr(sha256))[:80]} is not 64 lowercase "
                           "hex digits - fix the index")
    if size is not None and (type(size) is not int or size < 0):
        raise MliapdbError(f"{what}: size {printable(repr(size))[:80]} is not a number of "
                           "bytes - fix the index")
    description = item.get("description", "")
    if not isinstance(description, str):
        raise MliapdbError(f"{what}: description must be a string - fix the index")
    return IndexEntry(name=name, url=_index_url(location, url, what), sha256=sha256, size=size,
                      description=description, index=location)


def _index_url(index: str, url: str, what: str) -> str:
    """The URL an index entry names, resolved against the index; a remote index may only
    name http(s) URLs (a local file is never reached from someone else's index)."""
    if not is_remote(index):
        return _join(index, url)
    resolved = urllib.parse.urljoin(index, url)
    if urllib.parse.urlparse(resolved).scheme.lower() not in ("http", "https"):
        raise MliapdbError(f"{what}: url {url!r} is not http(s) - a remote index may only "
                           "name http(s) URLs, absolute or relative to the index; refused")
    return resolved


def _short(exc: BaseException) -> str:
    """The first line of an exception's text, at most 120 characters, printable."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return printable(text[:120])


def load_indexes(extra: tuple[str, ...] | list[str] = ()) -> list[IndexEntry]:
    """The repository's index (if present) and every ``extra`` one, in that order."""
    index = default_index()
    found = load_index(index) if index.is_file() else []
    for location in extra:
        found += load_index(location)
    return found


# --- pull --------------------------------------------------------------------------------------


@dataclass
class Source:
    """What to pull and what it must hash to."""

    url: str
    sha256: str | None
    size: int | None
    manifest: dict | None
    label: str
    size_origin: str = "index"
    """Who says ``size`` (bytes): "index" or "manifest"."""


def resolve(name_or_url: str, indexes: tuple[str, ...] | list[str] = ()) -> Source:
    """A snapshot by index name, URL or path, with its sha256 from the index or from the
    manifest published beside it (both, if both exist, must agree)."""
    from mliapdb.store.manifest import check_manifest, database_entry, manifest_location

    entry = None
    looks_like_file = (is_remote(name_or_url) or name_or_url.startswith("file://")
                       or Path(name_or_url).exists() or name_or_url.endswith(".duckdb"))
    if not looks_like_file:
        entries = load_indexes(indexes)
        matches = [e for e in entries if e.name == name_or_url]
        if not matches:
            known = ", ".join(sorted({e.name for e in entries})) or "none"
            raise MliapdbError(f"no snapshot named {name_or_url!r} in the index (known: {known})"
                               " - 'mliapdb snapshot list' shows them; pass a URL or --index")
        entry = matches[0]
    url = entry.url if entry else name_or_url
    where = manifest_location(url)
    try:
        manifest = check_manifest(json.loads(read_small(where)), where)
    except FileNotFoundError:
        manifest = None
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, nesting
        raise MliapdbError(f"{where} is not valid JSON ({_short(exc)}) - fetch the manifest "
                           "again or tell its publisher") from exc
    sha256 = entry.sha256 if entry else None
    size = entry.size if entry else None
    origin = "index"
    if manifest is not None:
        db_entry = database_entry(manifest, where)
        if sha256 and sha256 != db_entry["sha256"]:
            raise MliapdbError(f"the index says {url} has sha256 {sha256} but its manifest "
                               f"{where} says {db_entry['sha256']} - the index is out of date")
        if sha256 and size is not None and size != db_entry["size"]:
            raise MliapdbError(f"the index says {url} has {size} bytes but its manifest "
                               f"{where} says {db_entry['size']} - the index is out of date")
        sha256, size, origin = db_entry["sha256"], db_entry["size"], "manifest"
    if not sha256:
        raise MliapdbError(f"no sha256 known for {url}: neither an index entry nor a manifest "
                           f"at {where} - publish it with 'mliapdb snapshot publish', or add "
                           "it to an index with its sha256")
    if size is None:  # a pull is bounded by the size: never read an unknown amount
        raise MliapdbError(f"no size known for {url}: its index entry gives a sha256 but no "
                           f"\"size\" and there is no manifest at {where} - add \"size\" "
                           "(bytes) to the index entry")
    return Source(url=url, sha256=sha256, size=size, manifest=manifest,
                  label=entry.name if entry else url, size_origin=origin)


def destination(source: Source, to: Path | None) -> Path:
    """``--to`` (a folder gets the source's file name), else the file name in the cwd."""
    name = Path(urllib.parse.urlparse(source.url).path if is_remote(source.url)
                else _local(source.url)).name or "snapshot.duckdb"
    if to is None:
        return Path(name)
    return to / name if to.is_dir() else to


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def pull(source: Source, dest: Path, progress: ProgressFactory = no_progress,
         retries: int = 3, on_status: Callable[[str], None] = lambda s: None,
         limits: TransferLimits = TransferLimits()) -> Path:
    """Download ``source`` to ``dest``: into ``dest.part`` (resumed if one is there), sha256
    checked, schema checked, renamed into place; with the manifest beside it if there is one.

    A failed check, or a body longer than ``source.size``, removes the ``.part``; an
    interrupted transfer, or one given up under ``limits`` (too slow, past the deadline),
    keeps a non-empty ``.part`` for the next try to resume."""
    import duckdb

    from mliapdb.digest import sha256_file
    from mliapdb.store.manifest import manifest_location
    from mliapdb.store.schema import code_schema_version
    from mliapdb.store.upgrade import check_not_newer

    if source.manifest and source.manifest.get("schema_version", 0) > code_schema_version():
        from mliapdb import __version__

        raise MliapdbError(
            f"{source.label} has schema version {source.manifest['schema_version']} but this "
            f"mliapdb ({__version__}) understands up to {code_schema_version()} - upgrade "
            "mliapdb to open it")
    if dest.exists():
        if sha256_file(dest) == source.sha256:
            on_status(f"{dest} is already there with sha256 {source.sha256}")
            return dest
        raise MliapdbError(f"{dest} exists and differs from {source.label} - remove it or "
                           "pass another --to")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    _download(source, part, progress, retries, on_status, _Clock(limits))
    size = part.stat().st_size
    if source.size is not None and size != source.size:
        part.unlink()
        raise MliapdbError(f"{source.label}: got {size} bytes, expected {source.size} - the "
                           "file on the server is truncated or was replaced; nothing was kept")
    with progress(f"sha256 {dest.name}", size, 0) as advance:
        digest = sha256_file(part, advance)
    if digest != source.sha256:
        part.unlink()
        raise MliapdbError(f"{source.label}: sha256 {digest} does not match the expected "
                           f"{source.sha256} - the download is corrupt or the file was replaced;"
                           " nothing was kept, pull it again")
    try:
        with duckdb.connect(str(part), read_only=True) as con:
            check_not_newer(con, source.label)
    except MliapdbError:
        part.unlink()
        raise
    except duckdb.Error as exc:
        part.unlink()
        raise MliapdbError(f"{source.label} is not a DuckDB database this DuckDB reads: "
                           f"{str(exc).splitlines()[0]}") from exc
    os.replace(part, dest)
    if source.manifest is not None:
        Path(manifest_location(str(dest))).write_text(json.dumps(source.manifest, indent=2)
                                                      + "\n")
    return dest


_NETWORK_ERRORS = (ConnectionError, TimeoutError, http.client.HTTPException, urllib.error.URLError)


class _Oversize(MliapdbError):
    """The server sends more bytes than the index or manifest says the file has."""


class _GiveUp(Exception):
    """A transfer below the minimum rate or past the deadline (``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Clock:
    """The deadline and rate window of one pull (:class:`TransferLimits`), in seconds of
    ``time.monotonic``."""

    def __init__(self, limits: TransferLimits) -> None:
        self.limits = limits
        self.start = time.monotonic()
        self.window_start, self.window_bytes = self.start, 0

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.limits.deadline_s - (time.monotonic() - self.start)

    def socket_timeout(self) -> float:
        """Seconds one read may wait: a rate window, never past the deadline."""
        return max(0.05, min(_TIMEOUT_S, self.limits.window_s, self.remaining()))

    def new_window(self) -> None:
        self.window_start, self.window_bytes = time.monotonic(), 0

    def advance(self, n: int) -> None:
        """``n`` bytes just arrived: give up past the deadline or under the minimum rate."""
        now = time.monotonic()
        if now - self.start > self.limits.deadline_s:
            raise _GiveUp(f"past --deadline {self.limits.deadline_s:g} s")
        self.window_bytes += n
        elapsed = now - self.window_start
        if elapsed >= self.limits.window_s:
            rate = self.window_bytes / elapsed
            if rate < self.limits.min_rate:
                raise _GiveUp(f"{self.window_bytes} bytes in {elapsed:.3g} s, under --min-rate "
                              f"{self.limits.min_rate:g} bytes/s")
            self.new_window()

    def silent(self, waited: float) -> _GiveUp:
        """The give-up of a read that waited ``waited`` seconds for nothing."""
        if self.remaining() <= 0:
            return _GiveUp(f"past --deadline {self.limits.deadline_s:g} s")
        return _GiveUp(f"no byte in {waited:.3g} s, under --min-rate {self.limits.min_rate:g} "
                       "bytes/s")


def _download(source: Source, part: Path, progress: ProgressFactory, retries: int,
              on_status: Callable[[str], None], clock: _Clock) -> None:
    """Bring ``part`` up to the whole file, resuming from its size; up to ``retries`` resumes
    after a lost connection, all within ``clock``'s deadline and minimum rate."""
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if source.size is not None and have >= source.size:
            return  # complete (or too long: the size check says so)
        if have:
            on_status(f"resuming {source.label} at byte {have}")
        try:
            if clock.remaining() <= 0:
                raise _GiveUp(f"past --deadline {clock.limits.deadline_s:g} s")
            _transfer(source, part, have, progress, clock)
            return
        except _Oversize:
            part.unlink(missing_ok=True)
            raise
        except _GiveUp as exc:
            got = part.stat().st_size if part.exists() else 0
            if not got:
                part.unlink(missing_ok=True)
            then = (f"resume from {part}" if got else "retry")
            raise MliapdbError(
                f"download of {source.label} given up at byte {got} of {source.size} "
                f"({exc.reason}) - run the same 'mliapdb snapshot pull' again to {then}, or "
                "change --min-rate/--deadline") from None
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing after `have`: the checks decide
                return
            if not have:
                part.unlink(missing_ok=True)
            raise MliapdbError(f"{source.url}: HTTP {exc.code} {_short(exc.reason)}"
                               + (" - check the URL" if exc.code in (403, 404, 410) else "")
                               ) from exc
        except _NETWORK_ERRORS as exc:
            got = part.stat().st_size if part.exists() else 0
            attempt += 1
            reason = _short(getattr(exc, "reason", None) or exc or type(exc).__name__)
            if attempt > retries:
                if not got:
                    part.unlink(missing_ok=True)
                then = f"resume from {part}" if got else "retry"
                raise MliapdbError(
                    f"download of {source.label} interrupted at byte {got} ({reason}) - run "
                    f"the same 'mliapdb snapshot pull' again to {then}") from exc
            on_status(f"connection lost at byte {got} ({reason}); retrying")


def _transfer(source: Source, part: Path, have: int, progress: ProgressFactory,
              clock: _Clock) -> None:
    """Append to ``part`` from byte ``have`` on (or rewrite it if the server ignores Range),
    never past ``source.size`` bytes."""
    with _open_source(source.url, have, clock.socket_timeout()) as (stream, start, length):
        if start not in (0, have):
            raise MliapdbError(f"{source.url}: asked for bytes from {have} on, the server sent "
                               f"them from {start} - pull it again after removing {part}")
        size = source.size
        if size is not None and length is not None and start + length > size:
            has = "the server announces" if is_remote(source.url) else "the file has"
            raise _Oversize(f"{source.label}: {has} {start + length} bytes but the "
                            f"{source.size_origin} says {size} - it is not the published "
                            "file; nothing was kept, check the URL or tell the publisher")
        total = start + length if length is not None else size
        got = 0
        read = getattr(stream, "read1", stream.read)  # what has arrived, not a full buffer
        clock.new_window()
        with (open(part, "ab" if start else "wb") as out,
              progress(f"pull {part.name[:-5]}", total, start) as step):
            while True:
                asked = time.monotonic()
                try:
                    chunk = read(_CHUNK)
                except TimeoutError as exc:
                    if clock.limits.min_rate == 0 and clock.remaining() > 0:
                        raise  # no minimum rate: a stalled connection, retried
                    raise clock.silent(time.monotonic() - asked) from exc
                if not chunk:
                    break
                if size is not None and start + got + len(chunk) > size:
                    raise _Oversize(f"{source.label}: the server sent more than the {size} "
                                    f"bytes the {source.size_origin} says - it is not the "
                                    "published file; nothing was kept, check the URL or tell "
                                    "the publisher")
                out.write(chunk)
                got += len(chunk)
                step(len(chunk))
                clock.advance(len(chunk))
        if length is not None and got < length:
            raise ConnectionError(f"connection closed after {start + got} of {start + length} "
                                  "bytes")


@contextmanager
def _open_source(url: str, offset: int, timeout: float = _TIMEOUT_S) -> Iterator[tuple]:
    """(stream, offset it starts at, bytes to come or None) of a URL or path; ``timeout``:
    seconds a connection or read may wait."""
    if not is_remote(url):
        path = Path(_local(url))
        if not path.is_file():
            raise MliapdbError(f"no file at {path}")
        with open(path, "rb") as f:
            size = path.stat().st_size
            start = min(offset, size)
            f.seek(start)
            yield f, start, size - start
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        start = 0
        if offset and resp.status == 206:
            found = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
            if not found:
                raise MliapdbError(f"{url}: the server answered a Range request without a "
                                   "valid Content-Range - remove the .part and pull again")
            start = int(found.group(1))
        length = resp.headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            raise MliapdbError(f"{url}: the server sent Content-Length "
                               f"{printable(length)[:40]!r}, not a number of bytes")
        yield resp, start, int(length) if length is not None else None
