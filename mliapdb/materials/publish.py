"""Move staged entry rows (:mod:`mliapdb.materials.streaming`) into the database: conflicts
first (nothing is written when one is found), then one transaction that inserts the new
materials, DFT entries and symmetry analyses, records the files and rebuilds the DFT hull."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store.database import insert_rows, now, transaction
from mliapdb.store.generations import Scope, bump

if TYPE_CHECKING:
    from mliapdb.materials.streaming import StreamOptions, StreamReport

_KEYS = {
    "mp_materials": ("dataset", "material_id"),
    "dft_entries": ("dataset", "material_id"),
    "symmetry_analyses": ("dataset", "material_id", "symprec", "method"),
    "wyckoff_orbits": ("dataset", "material_id", "symprec", "method"),
}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]).fetchall()]


def _stage_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'stage'").fetchall()}


def publish_staged(con: duckdb.DuckDBPyConnection, stage_file: str,
                   staged: list[tuple[str, str]], options: StreamOptions,
                   report: StreamReport) -> None:
    """Publish the staged rows of the files ``staged`` ((sha256, name) in ingest order) of
    ``options.dataset``; fills ``report`` (new, unchanged, symmetry, rejected, hull)."""
    quoted = stage_file.replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS stage (READ_ONLY)")
    try:
        _publish(con, staged, options, report)
    finally:
        con.execute("DETACH stage")


def _publish(con: duckdb.DuckDBPyConnection, staged: list[tuple[str, str]],
             options: StreamOptions, report: StreamReport) -> None:
    from mliapdb.materials.dft_hull import update_dft_hull
    from mliapdb.materials.ingest import missing_symmetry, symmetry_rows

    ds = options.dataset
    con.execute("CREATE OR REPLACE TEMP TABLE _ingest_files (sha VARCHAR, file_order INTEGER, "
                "path VARCHAR)")
    if staged:
        con.executemany("INSERT INTO _ingest_files VALUES (?, ?, ?)",
                        [[sha, i, name] for i, (sha, name) in enumerate(staged)])
    have = _stage_tables(con)
    if staged and "stage_mp_materials" in have:
        # every staged entry of this ingest, and the first of each material id
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _staged AS SELECT s._sha, s._idx, s.material_id, "
            "s.fingerprint, f.file_order, f.path, e.energy_raw FROM stage.stage_mp_materials s "
            "JOIN _ingest_files f ON f.sha = s._sha JOIN stage.stage_dft_entries e "
            "ON e._sha = s._sha AND e.dataset = s.dataset AND e.material_id = s.material_id "
            "WHERE s.dataset = ?", [ds])
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE _staged (_sha VARCHAR, _idx BIGINT, "
                    "material_id VARCHAR, fingerprint VARCHAR, file_order INTEGER, path "
                    "VARCHAR, energy_raw DOUBLE)")
    con.execute("CREATE OR REPLACE TEMP TABLE _firsts AS SELECT * FROM _staged QUALIFY "
                "row_number() OVER (PARTITION BY material_id ORDER BY file_order, _idx) = 1")
    clash = con.execute(
        "SELECT s.path, s.material_id, s.energy_raw, f.energy_raw, f.path FROM _staged s "
        "JOIN _firsts f USING (material_id) WHERE s.fingerprint <> f.fingerprint "
        "ORDER BY s.file_order, s._idx LIMIT 1").fetchone()
    if clash:
        raise MliapdbError(
            f"{clash[0]}: entry {clash[1]} differs from the one in {clash[4]} (raw energy "
            f"{clash[2]} vs {clash[3]} eV) - ingest the files into separate datasets with "
            "--dataset NAME (one MP snapshot per dataset)")
    clash = con.execute(
        "SELECT f.path, f.material_id FROM _firsts f JOIN mp_materials m ON m.dataset = ? "
        "AND m.material_id = f.material_id WHERE m.fingerprint <> f.fingerprint "
        "ORDER BY f.file_order, f._idx LIMIT 1", [ds]).fetchone()
    if clash:
        raise MliapdbError(
            f"{clash[0]}: entry {clash[1]} differs from the one already in dataset '{ds}' "
            "(other energy or structure) - ingest this file into another dataset with "
            "--dataset NAME (one MP snapshot per dataset)")
    con.execute("CREATE OR REPLACE TEMP TABLE _new AS SELECT f._sha, f.material_id FROM "
                "_firsts f WHERE NOT EXISTS (SELECT 1 FROM mp_materials m WHERE m.dataset = ? "
                "AND m.material_id = f.material_id)", [ds])
    (n_firsts,) = con.execute("SELECT count(*) FROM _firsts").fetchone()
    (n_new,) = con.execute("SELECT count(*) FROM _new").fetchone()
    report.n_new = n_new
    report.n_unchanged += n_firsts - n_new
    report.rejected = [tuple(r) for r in con.execute(
        "SELECT s.path, s.material_id, coalesce(e.compat_message, '') FROM _staged s "
        "JOIN stage.stage_dft_entries e ON e._sha = s._sha AND e.dataset = ? AND "
        "e.material_id = s.material_id WHERE e.compat_status <> 'ok' "
        "ORDER BY s.file_order, s._idx", [ds]).fetchall()] if n_firsts else []
    con.execute("CREATE OR REPLACE TEMP TABLE _sym (_sha VARCHAR, material_id VARCHAR, "
                "symprec DOUBLE, method VARCHAR)")
    with transaction(con):
        if n_firsts:
            for table in ("mp_materials", "dft_entries"):
                cols = ", ".join(_columns(con, table))
                con.execute(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage.stage_{table} s "
                    "WHERE s.dataset = ? AND EXISTS (SELECT 1 FROM _new n WHERE n._sha = s._sha "
                    "AND n.material_id = s.material_id)", [ds]).fetchall()
            # analyses of new materials, and of stored ones lacking one at a requested symprec
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _sym AS SELECT s._sha, s.material_id, s.symprec, "
                "s.method FROM stage.stage_symmetry_analyses s JOIN _firsts f ON "
                "f._sha = s._sha AND f.material_id = s.material_id WHERE s.dataset = ? AND NOT "
                "EXISTS (SELECT 1 FROM symmetry_analyses a WHERE a.dataset = s.dataset AND "
                "a.material_id = s.material_id AND a.symprec = s.symprec AND "
                "a.method = s.method)", [ds])
            for table in ("symmetry_analyses", "wyckoff_orbits"):
                if f"stage_{table}" not in _stage_tables(con):
                    continue
                cols = ", ".join(_columns(con, table))
                con.execute(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage.stage_{table} s "
                    "WHERE s.dataset = ? AND EXISTS (SELECT 1 FROM _sym y WHERE y._sha = s._sha "
                    "AND y.material_id = s.material_id AND y.symprec = s.symprec AND "
                    "y.method = s.method)", [ds]).fetchall()
            (report.n_symmetry,) = con.execute("SELECT count(*) FROM _sym").fetchone()
            stamp = now()
            files = con.execute(
                "SELECT f.sha, f.path, count(*) FROM _staged s JOIN _ingest_files f ON "
                "f.sha = s._sha GROUP BY ALL ORDER BY min(f.file_order)").fetchall()
            insert_rows(con, "source_files", [
                {"sha256": sha, "path": path, "dataset": ds, "n_entries": n,
                 "ingested_at": stamp} for sha, path, n in files])
        # stored materials of the dataset still without an analysis at a requested symprec
        sym_rows, orbit_rows = [], []
        for sp in options.symprecs:
            for mid, structure_json in missing_symmetry(con, ds, sp, options.method):
                from pymatgen.core import Structure

                structure = Structure.from_dict(json.loads(structure_json))
                row, orbits = symmetry_rows(ds, mid, structure, sp, options.method)
                sym_rows.append(row)
                orbit_rows.extend(orbits)
        insert_rows(con, "symmetry_analyses", sym_rows)
        insert_rows(con, "wyckoff_orbits", orbit_rows)
        report.n_symmetry += len(sym_rows)
        # generation marker: the chemical systems of new materials and of new analyses
        new_systems = {r[0] for r in con.execute(
            "SELECT DISTINCT chemsys FROM mp_materials m WHERE dataset = ? AND EXISTS "
            "(SELECT 1 FROM _new n WHERE n.material_id = m.material_id)", [ds]).fetchall()}
        systems = new_systems | {r[0] for r in con.execute(
            "SELECT DISTINCT chemsys FROM mp_materials m WHERE dataset = ? AND (EXISTS "
            "(SELECT 1 FROM _sym y WHERE y.material_id = m.material_id) OR m.material_id IN "
            "(SELECT unnest(?::VARCHAR[])))", [ds, [r["material_id"] for r in sym_rows]]
        ).fetchall()}
        if systems:
            bump(con, Scope(ds), systems)
        if n_new:
            update_dft_hull(con, ds, new_systems)
            (report.n_hull,) = con.execute(
                "SELECT count(*) FROM dft_hull WHERE dataset = ?", [ds]).fetchone()
    for name in ("_ingest_files", "_staged", "_firsts", "_new", "_sym"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
