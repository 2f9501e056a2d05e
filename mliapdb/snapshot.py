"""Shared snapshots: publish a database as a compacted ``.duckdb`` (storage version pinned so
that older DuckDB releases read it), a Parquet copy of every table and a JSON manifest; verify
files against their manifest (sha256, size, schema version).

A published snapshot ``NAME`` is three things in one folder::

    NAME.duckdb           the database (COPY FROM DATABASE into a fresh file, checkpointed)
    NAME.parquet/T.parquet  every table T (for tools that do not read DuckDB files)
    NAME.manifest.json    name, sha256 and size of every file, schema and package versions,
                          row counts, models and settings, data license (docs/snapshots.md)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.errors import MliapdbError

STORAGE_VERSION = "v1.0.0"
"""DuckDB storage version of published files: written by DuckDB 2.0 and read by every DuckDB
release from 1.1.0 on (checked with 1.1.0, 1.1.3 and 1.2.2; 1.0.0 cannot read it)."""

MIN_DUCKDB_VERSION = "1.1.0"
"""Oldest DuckDB release that reads a file of :data:`STORAGE_VERSION`."""

MANIFEST_FORMAT = "mliapdb-snapshot"
MANIFEST_VERSION = 1
MP_LICENSE = {
    "data": "Materials Project data (entries, structures, DFT energies)",
    "license": "CC BY 4.0",
    "license_url": "https://creativecommons.org/licenses/by/4.0/",
    "citation": "A. Jain, S. P. Ong, G. Hautier, W. Chen, W. D. Richards, S. Dacek, S. Cholia, "
    "D. Gunter, D. Skinner, G. Ceder and K. A. Persson, The Materials Project: A materials "
    "genome approach to accelerating materials innovation, APL Materials 1, 011002 (2013), "
    "doi:10.1063/1.4812323",
    "models": "each model's own license and citation are in models[]",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (``progress(n)`` after each)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


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


# --- publish -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    manifest_path: Path
    manifest: dict


def publish(db_path: str | Path, out_dir: Path, name: str | None = None,
            on_status: Callable[[str], None] = lambda s: None) -> Published:
    """Write ``NAME.duckdb``, ``NAME.parquet/`` and ``NAME.manifest.json`` into ``out_dir``.

    The source is only read (a read-only file publishes too): stale model hulls and stored
    error rows are rebuilt in the copy. Nothing is left behind when a step fails.
    """
    from mliapdb import db
    from mliapdb.remote import is_remote

    if is_remote(str(db_path)):
        raise MliapdbError(f"{db_path} is remote - 'mliapdb snapshot pull' it, then publish "
                           "the local copy")
    src = Path(db_path)
    db.connect(src, read_only=True).close()  # exists, readable, current schema and views
    name = name or src.name.removesuffix(".duckdb")
    if not _NAME.match(name):
        raise MliapdbError(f"snapshot name {name!r}: use letters, digits, '.', '_' and '-' "
                           "(--name)")
    made = [] if out_dir.exists() else [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MliapdbError(f"cannot create {out_dir}: {exc.strerror or exc} - pass an --out "
                           "folder you can write") from exc
    database = out_dir / f"{name}.duckdb"
    parquet = out_dir / f"{name}.parquet"
    manifest_path = out_dir / f"{name}.manifest.json"
    for path in (database, parquet, manifest_path, Path(f"{database}.wal")):
        if path.exists():
            raise MliapdbError(f"{path} exists - remove it, or pass another --out or --name")
    try:
        tables = _copy(src, database, parquet, on_status)
        manifest = _manifest(name, database, parquet, tables)
        tmp = manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.replace(manifest_path)
    except BaseException as exc:
        import shutil

        for path in (database, Path(f"{database}.wal"), manifest_path.with_suffix(".json.tmp")):
            path.unlink(missing_ok=True)
        shutil.rmtree(parquet, ignore_errors=True)
        for folder in made:  # the folders this call created, innermost first
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError | duckdb.IOException):
            raise MliapdbError(f"cannot write the snapshot into {out_dir}: {exc} - nothing was "
                               "left there; pass an --out folder you can write") from exc
        raise
    return Published(manifest_path, manifest)


def _copy(src: Path, database: Path, parquet: Path,
          on_status: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    """COPY FROM DATABASE into a fresh file of the pinned storage version; in that copy (never
    in the source) drop views this code does not define, bring mliapdb's views and stale
    derived tables up to date, checkpoint; write each table to Parquet. Returns the row count
    of every table."""
    from mliapdb import db
    from mliapdb.dbfile import SAFE_CONFIG, reference_catalog
    from mliapdb.derived import refresh_derived

    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(src)])
        con.execute(f"ATTACH ? AS snap (STORAGE_VERSION '{STORAGE_VERSION}')", [str(database)])
        con.execute("COPY FROM DATABASE src TO snap")
        con.execute("DETACH snap")
    finally:
        con.close()
    con = db.connect(database)
    try:
        ours = reference_catalog().views
        for (view,) in con.execute(
            "SELECT view_name FROM system.main.duckdb_views() WHERE NOT internal "
            "AND database_name = system.main.current_database()").fetchall():
            if view not in ours:
                con.execute(f'DROP VIEW "{view}"')
        refresh_derived(con, on_status)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    con = duckdb.connect(config=SAFE_CONFIG)
    try:
        con.execute("ATTACH ? AS snap (READ_ONLY)", [str(database)])
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'snap' "
            "AND schema_name = 'main' ORDER BY table_name").fetchall()]
        parquet.mkdir()
        counts = {}
        for table in tables:
            counts[table] = con.execute(f'SELECT count(*) FROM snap.main."{table}"').fetchone()[0]
            con.execute(f'COPY snap.main."{table}" TO ? (FORMAT parquet, COMPRESSION zstd)',
                        [str(parquet / f"{table}.parquet")])
        con.execute("DETACH snap")
    finally:
        con.close()
    return counts


def _manifest(name: str, database: Path, parquet: Path, tables: dict[str, int]) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from mliapdb import __version__

    def package(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    con = duckdb.connect(str(database), read_only=True)
    try:
        from mliapdb.db import db_schema_version, stored_views_sha256

        schema_version = db_schema_version(con)
        views = stored_views_sha256(con)
        models = _records(con, "SELECT * EXCLUDE (registered_at) FROM models ORDER BY name")
        for m in models:
            if isinstance(m.get("package_versions"), str):
                m["package_versions"] = json.loads(m["package_versions"])
        calculations = _records(
            con,
            "SELECT model, calc_kind, settings_hash, any_value(settings) AS settings, dataset, "
            "count(*) AS n, count(*) FILTER (status = 'ok') AS ok, "
            "count(*) FILTER (status = 'not_converged') AS not_converged, "
            "count(*) FILTER (status = 'failed') AS failed "
            "FROM calculations GROUP BY ALL ORDER BY ALL",
        )
        for c in calculations:
            c["settings"] = json.loads(c["settings"])
        datasets = _records(
            con,
            "SELECT dataset, count(*) AS n_materials, count(DISTINCT chemsys) AS n_chemsys "
            "FROM mp_materials GROUP BY dataset ORDER BY dataset",
        )
        sources = _records(con, "SELECT dataset, path, sha256, n_entries FROM source_files "
                                "ORDER BY dataset, path")
    finally:
        con.close()
    for d in datasets:
        d["source_files"] = [
            {"file": Path(s["path"]).name, "sha256": s["sha256"], "n_entries": s["n_entries"]}
            for s in sources if s["dataset"] == d["dataset"]
        ]
    files = [database, *sorted(parquet.iterdir())]
    return {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "database": database.name,
        "files": [
            {"path": f.relative_to(database.parent).as_posix(), "size": f.stat().st_size,
             "sha256": sha256_file(f)}
            for f in files
        ],
        "schema_version": schema_version,
        "views_sha256": views,
        "readable_by": {  # the oldest readers
            "mliapdb": __version__,
            "mliapdb_schema_version": schema_version,
            "duckdb": MIN_DUCKDB_VERSION,
        },
        "storage_version": STORAGE_VERSION,
        "software": {
            "mliapdb": __version__,
            "duckdb": duckdb.__version__,
            "pymatgen": package("pymatgen"),
            "moyopy": package("moyopy"),
        },
        "tables": tables,
        "datasets": datasets,
        "models": models,
        "calculations": calculations,
        "license": MP_LICENSE,
    }


def _records(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cur = con.execute(sql)
    columns = [d[0] for d in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


# --- verify ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    path: str
    size: int | None
    sha256: str | None
    status: str  # ok | absent | size differs | sha256 differs
    is_database: bool = False


def read_manifest(path: Path) -> dict:
    """The manifest at ``path`` (a clear error if missing or not ours)."""
    if not path.is_file():
        raise MliapdbError(f"no manifest at {path} - 'mliapdb snapshot publish' writes "
                           "NAME.manifest.json beside NAME.duckdb; pass --manifest if it lies "
                           "elsewhere")
    if path.stat().st_size > _MAX_MANIFEST:
        raise MliapdbError(f"{path} is larger than {_MAX_MANIFEST >> 20} MiB: not a manifest")
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise MliapdbError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, nesting
        text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise MliapdbError(f"{path} is not valid JSON ({text}) - fetch the manifest "
                           "again") from exc
    return check_manifest(data, str(path))


_MAX_MANIFEST = 16 << 20


def verify(database: Path, manifest_path: Path | None = None) -> tuple[dict, list[FileCheck]]:
    """Check ``database`` (and the other files of its manifest, where present) against the
    manifest: size, sha256, schema version and row counts. Returns (manifest, checks)."""
    from mliapdb.db import check_not_newer

    if not database.is_file():
        raise MliapdbError(f"no file at {database}")
    manifest_path = manifest_path or Path(manifest_location(str(database)))
    manifest = read_manifest(manifest_path)
    db_entry = database_entry(manifest, str(manifest_path))
    root = manifest_path.parent
    paths = {id(e): database if e is db_entry else _inside(root, e["path"], manifest_path)
             for e in manifest["files"]}  # every path checked before any file is read
    checks = []
    for entry in manifest["files"]:
        is_db = entry is db_entry
        path = paths[id(entry)]
        if not path.is_file():
            checks.append(FileCheck(entry["path"], None, None, "absent", is_db))
            continue
        size = path.stat().st_size
        digest = sha256_file(path)
        state = ("size differs" if size != entry["size"] else
                 "sha256 differs" if digest != entry["sha256"] else "ok")
        if is_db and state == "ok":
            with duckdb.connect(str(database), read_only=True) as con:
                check_not_newer(con, str(database))
        checks.append(FileCheck(str(path) if is_db else entry["path"], size, digest, state,
                                is_db))
    return manifest, checks


def _inside(root: Path, relative: str, manifest_path: Path) -> Path:
    """``root / relative``, refused when it (through a symlink, say) leads out of ``root``
    (``relative`` itself was checked by :func:`check_manifest`)."""
    path = root / relative
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise MliapdbError(f"{manifest_path}: files entry {relative!r} leads outside "
                           f"{root} (through a symbolic link) - refused; verify only files "
                           "of the snapshot's own folder") from None
    except OSError as exc:  # a symlink loop
        raise MliapdbError(f"{manifest_path}: files entry {relative!r}: {exc.strerror or exc}"
                           " - refused") from exc
    return path
