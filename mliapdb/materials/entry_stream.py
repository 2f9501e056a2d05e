"""Read the entry dicts of an entry file one at a time, in bounded memory.

Layouts: a JSON list of ComputedStructureEntry dicts; JSON Lines (one entry dict per line);
or a pandas DataFrame written by ``to_json`` with an ``entry`` column of entry dicts and
optionally a ``material_id`` column (orients ``columns``, ``index``, ``records`` and
``split``): Matbench Discovery's MP dump ``2023-02-07-mp-computed-structure-entries.json.gz``
is one. Plain or gzip (detected by content).

Every value is decoded by the standard library's own JSON decoder (``raw_decode``, C speed,
its errors and limits); only the one or two outer levels (the list, the DataFrame's columns
or rows) are walked here, so memory holds one entry (plus a DataFrame's small columns), not
the file. ``bench/bench_ingest.py`` compares it with ``json.loads`` of the whole file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mliapdb.errors import MliapdbError

BLOCK_BYTES = 1 << 20
"""Bytes read (decompressed) per refill of the decoding buffer."""

MAX_ENTRY_BYTES = 256 << 20
"""Largest accepted single entry (or small DataFrame column), decoded text: 256 MiB (MP's
largest entries hold a few hundred kB)."""

EXPECTED = ("expected a JSON list of ComputedStructureEntry dicts, JSON Lines of them, or a "
            "pandas DataFrame JSON with an 'entry' column")

_ID_SUFFIX = re.compile(r"-(GGA\+U|GGA|R2SCAN|r2SCAN|SCAN)$")

_WS = " \t\n\r"
_DECODE = json.JSONDecoder().raw_decode


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes as stored (compressed, if gzip), read in blocks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(BLOCK_BYTES), b""):
                digest.update(block)
    except OSError as exc:
        raise MliapdbError(f"{path}: cannot read ({exc.strerror or exc}) - check the path") \
            from exc
    return digest.hexdigest()


class _Text:
    """Decoded text of a (possibly gzip) file, read block by block into ``buf``."""

    def __init__(self, fh: BinaryIO, where: str, position: list[int] | None = None) -> None:
        self.where = where
        self.fh = fh
        self.position = position if position is not None else [0]
        head = fh.read(2)
        fh.seek(0)
        self.raw: Any = gzip.GzipFile(fileobj=fh) if head == b"\x1f\x8b" else fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Read one more block; False at the end of the file."""
        if self.eof:
            return False
        try:
            block = self.raw.read(BLOCK_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise MliapdbError(f"{self.where}: corrupt gzip data ({exc}) - re-download it") \
                from exc
        try:
            text = self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            raise MliapdbError(f"{self.where}: not JSON ({exc}) - {EXPECTED}") from exc
        if self.pos > BLOCK_BYTES:  # drop what was consumed
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += text
        self.position[0] = self.fh.tell()
        if not block:
            self.eof = True
        if len(self.buf) - self.pos > MAX_ENTRY_BYTES:
            raise MliapdbError(f"{self.where}: one value holds more than "
                               f"{MAX_ENTRY_BYTES >> 20} MiB of JSON - not an entry file")
        return True

    def peek(self) -> str:
        """The next character that is no whitespace ('' at the end), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, allowed: str) -> str:
        """Consume the next non-whitespace character, one of ``allowed``."""
        char = self.peek()
        if not char or char not in allowed:
            shown = repr(char) if char else "the end of the file"
            raise MliapdbError(f"{self.where}: not JSON (expected one of {allowed!r}, found "
                               f"{shown}) - {EXPECTED}")
        self.pos += 1
        return char

    def value(self, what: str = "not JSON") -> Any:
        """Decode the next JSON value (reading more while it is incomplete)."""
        decode = _DECODE
        self.peek()
        while True:
            try:
                obj, end = decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.buf) - 64 or exc.msg.startswith("Unterminated")
                if cut and self.more():
                    continue  # the value may go on in the next block
                raise MliapdbError(f"{self.where}: {what} ({exc.msg}) - {EXPECTED}") from exc
            except RecursionError as exc:
                raise MliapdbError(f"{self.where}: not an entry file (JSON nested too deeply) "
                                   f"- {EXPECTED}") from exc
            except ValueError as exc:  # too many digits
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MliapdbError(f"{self.where}: {what} ({message}) - {EXPECTED}") from exc
            if end == len(self.buf) and self.more():
                continue  # a number may go on in the next block
            self.pos = end
            return obj

    def key(self) -> str:
        key = self.value()
        if not isinstance(key, str):  # pragma: no cover - the decoder refuses first
            raise MliapdbError(f"{self.where}: not JSON (object key {key!r}) - {EXPECTED}")
        self.take(":")
        return key

    def members(self) -> Iterator[str]:
        """Keys of the object whose '{' was just consumed; the caller reads each value."""
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            yield self.key()
            if self.take(",}") == "}":
                return

    def items(self) -> Iterator[None]:
        """One step per element of the array whose '[' was just consumed (the caller reads
        the element)."""
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield None
            if self.take(",]") == "]":
                return


def material_id_of(raw: dict) -> str | None:
    """MP id from ``data.material_id``, else ``entry_id`` without a ``-GGA``-style suffix."""
    data = raw.get("data") or {}
    mid = data.get("material_id") if isinstance(data, dict) else None
    if not mid:
        mid = raw.get("entry_id")
    if not mid or not isinstance(mid, str):
        return None
    return _ID_SUFFIX.sub("", mid)


def with_id(entry: Any, material_id: Any, where: str, row: Any) -> Any:
    """``entry`` with ``data.material_id`` set from a DataFrame's ``material_id`` cell (a
    cell that names another material than the entry is an error)."""
    if material_id is None or not isinstance(entry, dict):
        return entry
    if not isinstance(material_id, str):
        raise MliapdbError(f"{where}: row {row}: material_id {material_id!r:.40} is not a "
                           "string - fix the file")
    data = entry.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return entry  # parse_entry names the bad data field
    named = data.get("material_id")
    if named not in (None, material_id):
        raise MliapdbError(f"{where}: row {row}: the material_id column says {material_id} but "
                           f"its entry says {named} - fix the file")
    return {**entry, "data": {**data, "material_id": material_id}}


def _is_row(value: Any) -> bool:
    """A DataFrame row (records or index orient): an object with an ``entry`` object."""
    return isinstance(value, dict) and "@class" not in value and isinstance(
        value.get("entry"), dict)


def iter_entry_dicts(path: Path, where: str | None = None,
                     position: list[int] | None = None) -> Iterator[Any]:
    """The raw entry dicts of the file at ``path`` in file order (see the module doc); a
    file that is none of the layouts raises a one-line ``MliapdbError`` naming ``where``
    (default: the path). ``position[0]``, when given, follows the bytes of the file (as
    stored, compressed) read so far."""
    where = where or str(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, the generator may stop early
    except OSError as exc:
        raise MliapdbError(f"{where}: cannot read ({exc.strerror or exc}) - check the path") \
            from exc
    with fh:
        text = _Text(fh, where, position)
        first = text.peek()
        if not first:
            raise MliapdbError(f"{where}: empty file - expected a JSON list of "
                               "ComputedStructureEntry dicts")
        if first == "[":
            text.pos += 1
            records = None
            for i, _ in enumerate(text.items()):
                value = text.value()
                if records is None:
                    records = _is_row(value)
                yield with_id(value["entry"], value.get("material_id"), where, i) \
                    if records and _is_row(value) else value
            _only_whitespace_left(text)
        elif first == "{":
            yield from _object_layout(text)
        else:
            value = text.value()
            raise MliapdbError(f"{where}: {EXPECTED}, got a JSON {type(value).__name__}")


def _only_whitespace_left(text: _Text) -> None:
    if text.peek():
        raise MliapdbError(f"{text.where}: not JSON (Extra data after the list) - {EXPECTED}")


def _object_layout(text: _Text) -> Iterator[Any]:
    """A top-level object: a DataFrame (columns, index or split orient), or the first line
    of a JSON Lines file."""
    where = text.where
    text.take("{")
    pairs: dict[str, Any] = {}  # the object's members other than a streamed column
    ids: dict | None = None
    columns: list | None = None
    streamed: list[tuple[Any, Any]] = []  # (row key, entry's own id) of rows before the ids
    n_rows = 0
    mode = None
    for key in text.members():
        if key == "entry" and text.peek() == "{":  # orient="columns": stream the column
            mode = "columns"
            text.pos += 1
            for row in text.members():
                entry = text.value()
                if ids is None:
                    streamed.append((row, _own_id(entry)))
                    yield entry
                else:
                    yield with_id(entry, ids.get(row), where, row)
                n_rows += 1
        elif key == "data" and columns is not None and text.peek() == "[":  # orient="split"
            mode = "split"
            text.pos += 1
            for i, _ in enumerate(text.items()):
                row = text.value()
                if isinstance(row, list):
                    cells = dict(zip(columns, row, strict=False))
                    yield with_id(cells.get("entry"), cells.get("material_id"), where, i)
                    n_rows += 1
        else:
            value = text.value()
            if key == "material_id" and mode != "index":
                if not isinstance(value, dict):
                    raise MliapdbError(f"{where}: the material_id column is not an object "
                                       f"keyed like the entry column - {EXPECTED}")
                ids = value
                for row, own in streamed:  # rows read before the column: check them now
                    with_id({"data": {"material_id": own}}, ids.get(row), where, row)
                streamed = []
            elif key == "columns" and isinstance(value, list) and "entry" in value:
                columns = value
            elif _is_row(value) and mode in (None, "index"):  # orient="index"
                mode = "index"
                yield with_id(value["entry"], value.get("material_id"), where, key)
                n_rows += 1
            else:
                pairs[key] = value
    if text.peek():  # more values follow: JSON Lines, and that object was its first line
        yield from _json_lines(text, pairs)
        return
    if mode is None or (mode == "index" and pairs):
        raise MliapdbError(f"{where}: {EXPECTED}, got a JSON dict")


def _own_id(entry: Any) -> Any:
    """The material id a streamed row was read under (its ``data.material_id``, else its
    ``entry_id``), to check against a ``material_id`` column that comes after it."""
    return material_id_of(entry) if isinstance(entry, dict) else None


def _json_lines(text: _Text, first: dict) -> Iterator[Any]:
    """The lines of a JSON Lines file whose first line (an object) was read into ``first``."""
    yield first
    number = 1
    while text.peek():
        number += 1
        yield text.value(f"line {number} of a JSON Lines file is not JSON")
