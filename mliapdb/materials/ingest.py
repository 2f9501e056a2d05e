"""Ingest MP entries: validate every file first, analyse symmetry, then write everything,
update the dataset's DFT hull (the touched chemical systems and their supersystems) and bump
its generation marker in ONE transaction (a failure leaves the database as it was)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from sqlmodel import SQLModel

from mliapdb.config import DEFAULT_SYMPREC, SYMPREC_RANGE
from mliapdb.errors import MliapdbError
from mliapdb.materials.dft_hull import rebuild_dft_hull, update_dft_hull  # noqa: F401 (moved)
from mliapdb.materials.entries import ParsedEntry, load_entry_files
from mliapdb.progress import Progress, no_progress
from mliapdb.store.database import insert_rows, now, transaction
from mliapdb.store.generations import Scope, bump
from mliapdb.store.tables import (
    DftEntry,
    MpMaterial,
    SourceFile,
    SymmetryAnalysisRow,
    WyckoffOrbitRow,
)


@dataclass
class IngestReport:
    """What an ingest did (counts of entries)."""

    dataset: str
    n_read: int = 0
    n_new: int = 0
    n_unchanged: int = 0
    n_symmetry: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # file, id, reason
    n_hull: int = 0


def _dedupe_batch(parsed: list[ParsedEntry]) -> list[ParsedEntry]:
    """One entry per material id across the files of one ingest; conflicting ones fail."""
    by_id: dict[str, ParsedEntry] = {}
    for entry in parsed:
        prev = by_id.get(entry.material_id)
        if prev is None:
            by_id[entry.material_id] = entry
        elif prev.fingerprint != entry.fingerprint:
            raise MliapdbError(
                f"{entry.source_file}: entry {entry.material_id} differs from the one in "
                f"{prev.source_file} (raw energy {entry.energy_raw} vs {prev.energy_raw} eV) - "
                f"ingest the files into separate datasets with --dataset NAME "
                f"(one MP snapshot per dataset)"
            )
    return list(by_id.values())


def _material_row(dataset: str, p: ParsedEntry) -> dict:
    s = p.entry.structure
    comp = s.composition
    return MpMaterial(
        dataset=dataset,
        material_id=p.material_id,
        formula=comp.reduced_formula,
        formula_full=comp.formula.replace(" ", ""),
        chemsys=comp.chemical_system,
        nelements=len(comp.elements),
        nsites=len(s),
        composition=json.dumps(comp.get_el_amt_dict(), sort_keys=True),
        structure=json.dumps(s.as_dict()),
        fingerprint=p.fingerprint,
    ).model_dump()


def _entry_row(dataset: str, p: ParsedEntry) -> dict:
    params = p.entry.parameters or {}
    potcar = params.get("potcar_spec") or params.get("potcar_symbols")
    corrected = p.energy_raw + p.correction_mp2020 if p.correction_mp2020 is not None else None
    return DftEntry(
        dataset=dataset,
        material_id=p.material_id,
        entry_id=p.entry_id,
        task_id=p.task_id,
        n_atoms=len(p.entry.structure),
        energy_raw=p.energy_raw,
        correction_mp2020=p.correction_mp2020,
        energy_corrected=corrected,
        correction_in_source=p.correction_in_source,
        compat_status=p.compat_status,
        compat_message=p.compat_message,
        run_type=params.get("run_type"),
        is_hubbard=params.get("is_hubbard"),
        hubbards=json.dumps(params.get("hubbards") or {}, sort_keys=True),
        potcar_spec=json.dumps(potcar) if potcar is not None else None,
        oxide_type=(p.entry.data or {}).get("oxide_type"),
        mp_last_updated=p.mp_last_updated,
        source_file=p.source_file,
        source_sha256=p.source_sha256,
    ).model_dump()


def _model_row(table: type[SQLModel], obj: object, key: dict) -> dict:
    """A row of ``table`` from the dataclass ``obj``'s matching fields plus ``key``."""
    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    values = {name: fields[name] for name in table.model_fields if name in fields}
    return table(**{**values, **key}).model_dump()


def symmetry_rows(
    dataset: str, material_id: str, structure, symprec: float, method: str
) -> tuple[dict, list[dict]]:
    """One ``symmetry_analyses`` row and its ``wyckoff_orbits`` rows for a structure."""
    from mliapdb.materials.symmetry import analyze_symmetry

    try:
        sym = analyze_symmetry(structure, symprec=symprec, method=method)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also a Rust panic of moyopy (pyo3 PanicException)
        raise MliapdbError(
            f"{dataset}/{material_id}: symmetry analysis failed at symprec {symprec} "
            f"({exc}) - try another --symprec"
        ) from exc
    key = {"dataset": dataset, "material_id": material_id, "symprec": symprec, "method": method}
    row = _model_row(SymmetryAnalysisRow, sym, key)
    orbits = [_model_row(WyckoffOrbitRow, o, key) for o in sym.orbits]
    return row, orbits


def missing_symmetry(
    con: duckdb.DuckDBPyConnection, dataset: str, symprec: float, method: str
) -> list[tuple[str, str]]:
    """(material_id, structure JSON) of stored materials without an analysis at symprec."""
    return con.execute(
        "SELECT m.material_id, m.structure FROM mp_materials m "
        "WHERE m.dataset = ? AND NOT EXISTS (SELECT 1 FROM symmetry_analyses s "
        "WHERE s.dataset = m.dataset AND s.material_id = m.material_id "
        "AND s.symprec = ? AND s.method = ?) ORDER BY m.material_id",
        [dataset, symprec, method],
    ).fetchall()


def check_dataset_name(dataset: str) -> None:
    """Refuse a dataset name other than letters, digits, '-', '_', '.'."""
    if not dataset or not dataset.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise MliapdbError(f"bad dataset name {dataset!r} - use letters, digits, '-', '_', '.'")


def check_symprecs(symprecs: Sequence[float]) -> None:
    """Refuse a symmetry tolerance outside :data:`mliapdb.config.SYMPREC_RANGE` (or NaN)."""
    lo, hi = SYMPREC_RANGE
    for sp in symprecs:
        if not (isinstance(sp, int | float) and lo <= sp <= hi):
            shown = f"{sp:g}" if isinstance(sp, int | float) else repr(sp)
            raise MliapdbError(
                f"symprec {shown} is outside the accepted range [{lo:g}, {hi:g}] Angstrom - "
                f"pass --symprec between {lo:g} and {hi:g} (default {DEFAULT_SYMPREC})"
            )


def ingest_entry_files(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], dataset: str = "mp", **options: Any
) -> IngestReport:
    """Read, validate and store MP entry files (:func:`ingest_parsed` takes ``options``);
    idempotent for identical data.

    A conflicting entry (same dataset and material id, other energy or structure), a bad
    file or a bad entry raises ``MliapdbError`` before anything is written.
    """
    check_dataset_name(dataset)
    check_symprecs(options.get("symprecs", (DEFAULT_SYMPREC,)))
    return ingest_parsed(con, load_entry_files([Path(p) for p in paths]), dataset, **options)


def ingest_parsed(
    con: duckdb.DuckDBPyConnection,
    parsed: list[ParsedEntry],
    dataset: str = "mp",
    symprecs: Sequence[float] = (DEFAULT_SYMPREC,),
    method: str = "moyopy",
    progress: Progress = no_progress,
    extra_rows: Mapping[str, Sequence[dict]] | None = None,
    rebuild_hull: bool = True,
) -> IngestReport:
    """Store validated entries (from :func:`mliapdb.materials.entries.load_entries`) with their
    symmetry
    and rebuild the dataset's DFT hull, in one transaction that also inserts ``extra_rows``
    (table -> rows, e.g. the record of an MP API fetch). Conflicts raise before any write.
    ``rebuild_hull=False`` leaves the hull to the caller (``ingest mp --all`` stores page
    after page and rebuilds it once, with :func:`rebuild_dft_hull`, at the end)."""
    from pymatgen.core import Structure

    check_dataset_name(dataset)
    check_symprecs(symprecs)
    report = IngestReport(dataset=dataset)
    report.n_read = len(parsed)
    report.rejected = [
        (p.source_file, p.material_id, p.compat_message or "")
        for p in parsed
        if p.compat_status != "ok"
    ]
    batch = _dedupe_batch(parsed)
    stored = dict(
        con.execute(
            "SELECT material_id, fingerprint FROM mp_materials WHERE dataset = ?", [dataset]
        ).fetchall()
    )
    new: list[ParsedEntry] = []
    for p in batch:
        fp = stored.get(p.material_id)
        if fp is None:
            new.append(p)
        elif fp == p.fingerprint:
            report.n_unchanged += 1
        else:
            raise MliapdbError(
                f"{p.source_file}: entry {p.material_id} differs from the one already in "
                f"dataset '{dataset}' (other energy or structure) - ingest this file into "
                f"another dataset with --dataset NAME (one MP snapshot per dataset)"
            )
    report.n_new = len(new)

    # Symmetry of new materials, and of stored ones lacking an analysis at a requested symprec.
    todo: list[tuple[str, object, float]] = [
        (p.material_id, p.entry.structure, sp) for p in new for sp in symprecs
    ]
    for sp in symprecs:
        for mid, structure_json in missing_symmetry(con, dataset, sp, method):
            todo.append((mid, Structure.from_dict(json.loads(structure_json)), sp))
    sym_rows, orbit_rows = [], []
    for mid, structure, sp in progress(todo, len(todo), "symmetry"):
        row, orbits = symmetry_rows(dataset, mid, structure, sp, method)
        sym_rows.append(row)
        orbit_rows.extend(orbits)
    report.n_symmetry = len(sym_rows)

    known_files = {
        r[0]
        for r in con.execute(
            "SELECT sha256 FROM source_files WHERE dataset = ?", [dataset]
        ).fetchall()
    }
    file_rows = {}
    for p in parsed:
        if p.source_sha256 not in known_files and p.source_sha256 not in file_rows:
            file_rows[p.source_sha256] = SourceFile(
                sha256=p.source_sha256,
                path=p.source_file,
                dataset=dataset,
                n_entries=sum(q.source_sha256 == p.source_sha256 for q in parsed),
                ingested_at=now(),
            ).model_dump()

    material_rows, entry_rows = [], []
    for p in new:  # every row is built before the transaction
        try:
            material_rows.append(_material_row(dataset, p))
            entry_rows.append(_entry_row(dataset, p))
        except (TypeError, ValueError, RecursionError) as exc:
            raise MliapdbError(
                f"{p.label}: cannot store it ({str(exc)[:200]}) - check the entry's fields"
            ) from exc
    with transaction(con):
        insert_rows(con, "source_files", file_rows.values())
        insert_rows(con, "mp_materials", material_rows)
        insert_rows(con, "dft_entries", entry_rows)
        insert_rows(con, "symmetry_analyses", sym_rows)
        insert_rows(con, "wyckoff_orbits", orbit_rows)
        for table, rows in (extra_rows or {}).items():
            insert_rows(con, table, rows)
        if new or sym_rows:
            # the chemical systems of the new entries and of new symmetry analyses
            systems = {row["chemsys"] for row in material_rows}
            if sym_rows:
                systems |= _chemsys_of(con, dataset, {row["material_id"] for row in sym_rows})
            bump(con, Scope(dataset), systems)
        if new and rebuild_hull:
            update_dft_hull(con, dataset, {row["chemsys"] for row in material_rows})
            (report.n_hull,) = con.execute(
                "SELECT count(*) FROM dft_hull WHERE dataset = ?", [dataset]).fetchone()
    return report


def _chemsys_of(con: duckdb.DuckDBPyConnection, dataset: str, material_ids: set[str]
                ) -> set[str]:
    """The chemical systems of stored materials of ``dataset``."""
    import pyarrow as pa

    _mliapdb_ids = pa.table({"material_id": sorted(material_ids)})  # noqa: F841
    return {r[0] for r in con.execute(
        "SELECT DISTINCT chemsys FROM mp_materials WHERE dataset = ? AND material_id IN "
        "(SELECT material_id FROM _mliapdb_ids)", [dataset]).fetchall()}
