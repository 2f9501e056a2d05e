"""The manifest published beside a database file (``NAME.manifest.json``): where it lies, what
a well-formed one holds. It is data from a publisher: every field is checked before use."""

from __future__ import annotations

import re
from typing import Any

from mliapdb.errors import MliapdbError

MANIFEST_FORMAT = "mliapdb-snapshot"


MANIFEST_VERSION = 1


def manifest_location(database: str) -> str:
    """Where the manifest of a database file or URL lies: ``NAME.duckdb`` ->
    ``NAME.manifest.json`` beside it."""
    stem = database[: -len(".duckdb")] if database.endswith(".duckdb") else database
    return stem + ".manifest.json"


def check_manifest(manifest: Any, where: str) -> dict:
    """The manifest as a dict, or a clear error when it is not one of ours or is malformed.

    Checked: ``format``, ``manifest_version`` and ``schema_version`` (integers), ``name`` and
    ``database`` (strings without control characters), and every ``files`` entry (see
    :func:`_check_file_entry`)."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise MliapdbError(f"{where} is not a mliapdb snapshot manifest (no \"format\": "
                           f"\"{MANIFEST_FORMAT}\") - publish with 'mliapdb snapshot publish'")
    fix = "fetch it again or tell its publisher"
    for key in ("manifest_version", "schema_version"):
        value = manifest.get(key, 0)
        if type(value) is not int or value < 0:
            raise MliapdbError(f"{where}: {key} {_shown(value)} is not a non-negative integer - "
                               f"{fix}")
    if manifest.get("manifest_version", 0) > MANIFEST_VERSION:
        raise MliapdbError(f"{where} has manifest version {manifest['manifest_version']}, newer "
                           "than this mliapdb reads - upgrade mliapdb")
    for key in ("name", "database"):
        value = manifest.get(key)
        if not isinstance(value, str) or not value or _CONTROL.search(value):
            raise MliapdbError(f"{where}: {key} {_shown(value)} is not a string without control "
                               f"characters - {fix}")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise MliapdbError(f"{where}: \"files\" is {_shown(files)}, not a list of entries - "
                           f"{fix}")
    for i, entry in enumerate(files):
        _check_file_entry(entry, f"{where}: files entry #{i + 1}", fix)
    return manifest


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _shown(value: Any) -> str:
    """``repr(value)``, at most 60 characters, control characters escaped."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _check_file_entry(entry: Any, what: str, fix: str) -> None:
    """One ``files`` entry: ``path`` relative, ``/``-separated, inside the manifest's folder
    (no ``..``, no absolute path, no drive, no control characters), ``size`` a non-negative
    integer (bytes), ``sha256`` 64 lowercase hex digits."""
    if not isinstance(entry, dict):
        raise MliapdbError(f"{what} is {_shown(entry)}, not an object with path, size and "
                           f"sha256 - {fix}")
    path = entry.get("path")
    if not isinstance(path, str) or not path or _CONTROL.search(path):
        raise MliapdbError(f"{what}: path {_shown(path)} is not a file name - {fix}")
    what = f"{what} ({path!r})"
    parts = path.split("/")
    if (path.startswith("/") or "\\" in path or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise MliapdbError(f"{what}: the path must be relative and inside the manifest's "
                           f"folder (no '..', no absolute path) - refused; {fix}")
    for key in ("size", "sha256"):
        if key not in entry:
            raise MliapdbError(f"{what} has no {key} - {fix}")
    if type(entry["size"]) is not int or entry["size"] < 0:
        raise MliapdbError(f"{what}: size {_shown(entry['size'])} is not a number of bytes - "
                           f"{fix}")
    if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
        raise MliapdbError(f"{what}: sha256 {_shown(entry['sha256'])} is not 64 lowercase hex "
                           f"digits - {fix}")


def database_entry(manifest: dict, where: str) -> dict:
    """The manifest's entry (path, size, sha256) of its database file (``manifest`` checked by
    :func:`check_manifest`)."""
    for entry in manifest["files"]:
        if entry["path"] == manifest["database"]:
            return entry
    raise MliapdbError(f"{where} lists no sha256 for its database {manifest.get('database')!r}")

