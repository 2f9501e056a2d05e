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

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mliapdb.digest import sha256_file
from mliapdb.errors import MliapdbError
from mliapdb.store.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    check_manifest,
    database_entry,
    manifest_location,
)

STORAGE_VERSION = "v1.0.0"
"""DuckDB storage version of published files: written by DuckDB 2.0 and read by every DuckDB
release from 1.1.0 on (checked with 1.1.0, 1.1.3 and 1.2.2; 1.0.0 cannot read it)."""

MIN_DUCKDB_VERSION = "1.1.0"
"""Oldest DuckDB release that reads a file of :data:`STORAGE_VERSION`."""

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
    from mliapdb.store import database as db
    from mliapdb.store.remote import is_remote

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
    from mliapdb.analysis.derived import refresh_derived
    from mliapdb.store import database as db
    from mliapdb.store.file import SAFE_CONFIG, reference_catalog

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
        from mliapdb.store.schema import db_schema_version, stored_views_sha256

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
    from mliapdb.store.upgrade import check_not_newer

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
