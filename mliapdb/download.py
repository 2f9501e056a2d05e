"""Find and pull snapshots: the index (``snapshots/index.json``), resumable downloads over
HTTP(S) (stdlib urllib, Range requests into ``DEST.part``) or from a file path, sha256 checked
before the file is renamed into place."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mliapdb.config import REPO_ROOT
from mliapdb.errors import MliapdbError
from mliapdb.remote import is_remote

DEFAULT_INDEX = REPO_ROOT / "snapshots" / "index.json"
INDEX_FORMAT = "mliapdb-snapshot-index"
_CHUNK = 1 << 16
_TIMEOUT_S = 60
_MAX_SMALL = 16 << 20  # index and manifest files

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""
ProgressFactory = Callable[[str, int | None, int], AbstractContextManager[Progress]]
"""``factory(description, total, already_done)`` -> a context manager giving a Progress."""


def no_progress(description: str, total: int | None, done: int) -> AbstractContextManager:
    return nullcontext(lambda n: None)


# --- small files: index, manifest --------------------------------------------------------------


def read_small(location: str) -> bytes:
    """The bytes of an index or manifest at a URL or path (FileNotFoundError if absent)."""
    if is_remote(location):
        try:
            with urllib.request.urlopen(location, timeout=_TIMEOUT_S) as resp:
                data = resp.read(_MAX_SMALL + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise FileNotFoundError(location) from exc
            raise MliapdbError(f"{location}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise MliapdbError(f"cannot reach {location}: {getattr(exc, 'reason', exc)} - check "
                               "the URL and your network") from exc
    else:
        data = Path(_local(location)).read_bytes()
    if len(data) > _MAX_SMALL:
        raise MliapdbError(f"{location} is larger than {_MAX_SMALL >> 20} MiB: not an index or "
                           "manifest")
    return data


def _local(location: str) -> str:
    """A ``file://`` URL as a path; anything else unchanged."""
    if location.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(location).path)
    return location


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
    [...]}``); relative URLs are resolved against the index's own location."""
    location = str(location)
    try:
        data = json.loads(read_small(location))
    except FileNotFoundError as exc:
        raise MliapdbError(f"no snapshot index at {location}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MliapdbError(f"{location} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise MliapdbError(f"{location} is not a snapshot index (no \"format\": "
                           f"\"{INDEX_FORMAT}\"; see snapshots/README.md)")
    entries = []
    for i, item in enumerate(data.get("snapshots", [])):
        if not isinstance(item, dict) or not {"name", "url"} <= set(item):
            raise MliapdbError(f"{location}: snapshot #{i + 1} needs at least a name and a url")
        entries.append(IndexEntry(
            name=item["name"], url=_join(location, item["url"]), sha256=item.get("sha256"),
            size=item.get("size"), description=item.get("description", ""), index=location,
        ))
    return entries


def load_indexes(extra: tuple[str, ...] | list[str] = ()) -> list[IndexEntry]:
    """The repository's index (if present) and every ``extra`` one, in that order."""
    found = load_index(DEFAULT_INDEX) if DEFAULT_INDEX.is_file() else []
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


def resolve(name_or_url: str, indexes: tuple[str, ...] | list[str] = ()) -> Source:
    """A snapshot by index name, URL or path, with its sha256 from the index or from the
    manifest published beside it (both, if both exist, must agree)."""
    from mliapdb.snapshot import check_manifest, database_entry, manifest_location

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
    except json.JSONDecodeError as exc:
        raise MliapdbError(f"{where} is not valid JSON ({exc})") from exc
    sha256 = entry.sha256 if entry else None
    size = entry.size if entry else None
    if manifest is not None:
        db_entry = database_entry(manifest, where)
        if sha256 and sha256 != db_entry["sha256"]:
            raise MliapdbError(f"the index says {url} has sha256 {sha256} but its manifest "
                               f"{where} says {db_entry['sha256']} - the index is out of date")
        sha256, size = db_entry["sha256"], db_entry["size"]
    if not sha256:
        raise MliapdbError(f"no sha256 known for {url}: neither an index entry nor a manifest "
                           f"at {where} - publish it with 'mliapdb snapshot publish', or add "
                           "it to an index with its sha256")
    return Source(url=url, sha256=sha256, size=size, manifest=manifest,
                  label=entry.name if entry else url)


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
         retries: int = 3, on_status: Callable[[str], None] = lambda s: None) -> Path:
    """Download ``source`` to ``dest``: into ``dest.part`` (resumed if one is there), sha256
    checked, schema checked, renamed into place; with the manifest beside it if there is one.
    A failed check removes the ``.part``; an interrupted transfer keeps it for the next try."""
    import duckdb

    from mliapdb.db import check_not_newer, code_schema_version
    from mliapdb.snapshot import manifest_location, sha256_file

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
    _download(source, part, progress, retries, on_status)
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


def _download(source: Source, part: Path, progress: ProgressFactory, retries: int,
              on_status: Callable[[str], None]) -> None:
    """Bring ``part`` up to the whole file, resuming from its size; up to ``retries`` resumes
    after a lost connection."""
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if source.size is not None and have >= source.size:
            return  # complete (or too long: the size check says so)
        if have:
            on_status(f"resuming {source.label} at byte {have}")
        try:
            _transfer(source, part, have, progress)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing after `have`: the checks decide
                return
            raise MliapdbError(f"{source.url}: HTTP {exc.code} {exc.reason}"
                               + (" - check the URL" if exc.code in (403, 404, 410) else "")
                               ) from exc
        except _NETWORK_ERRORS as exc:
            got = part.stat().st_size if part.exists() else 0
            attempt += 1
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            if attempt > retries:
                raise MliapdbError(
                    f"download of {source.label} interrupted at byte {got} ({reason}) - run "
                    f"the same 'mliapdb snapshot pull' again to resume from {part}") from exc
            on_status(f"connection lost at byte {got} ({reason}); retrying")


def _transfer(source: Source, part: Path, have: int, progress: ProgressFactory) -> None:
    """Append to ``part`` from byte ``have`` on (or rewrite it if the server ignores Range)."""
    with _open_source(source.url, have) as (stream, start, length):
        if start not in (0, have):
            raise MliapdbError(f"{source.url}: asked for bytes from {have} on, the server sent "
                               f"them from {start} - pull it again after removing {part}")
        total = start + length if length is not None else source.size
        got = 0
        with (open(part, "ab" if start else "wb") as out,
              progress(f"pull {part.name[:-5]}", total, start) as step):
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                got += len(chunk)
                step(len(chunk))
        if length is not None and got < length:
            raise ConnectionError(f"connection closed after {start + got} of {start + length} "
                                  "bytes")


@contextmanager
def _open_source(url: str, offset: int) -> Iterator[tuple]:
    """(stream, offset it starts at, bytes to come or None) of a URL or path."""
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
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
        start = 0
        if offset and resp.status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
        length = resp.headers.get("Content-Length")
        yield resp, start, int(length) if length is not None else None
