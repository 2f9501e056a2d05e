"""Import and export model predictions in Matbench Discovery's layout: one row per material,
``material_id``, the model's energy (eV per cell, e.g. ``energy`` or ``<model>_energy``; or
eV/atom) and optionally its relaxed structure (a pymatgen ``Structure`` dict).

An imported file becomes ``calculations`` rows of a known model under settings of their own
(``{"source": "predictions", "sha256": ..., ...}``): their settings hash differs from every
locally computed run, so they are never pooled with them (docs/conventions.md, "Imported
predictions")."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store.database import insert_rows, now, transaction

SOURCE = "predictions"
KINDS = {"relax": "relax", "relax-fixsym": "relax_fixsym", "single-point": "single_point"}
"""``--kind`` of an import: calculation kind stored."""
ENERGY_UNITS = ("eV", "eV/atom")
"""eV per cell (Matbench Discovery's ``<model>_energy``) or eV per atom."""
MAX_FILE_BYTES = 1 << 30
SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz", ".parquet")
_PER_CELL_NAMES = ("energy", "e_pred")
_PER_ATOM_NAMES = ("energy_per_atom", "e_per_atom", "e_pred_per_atom")


def file_kind(path: Path | str) -> str:
    """``csv``, ``json`` or ``parquet`` from the name (``.gz`` allowed for csv and json)."""
    name = str(path).lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".").removesuffix(".gz")
    raise MliapdbError(f"{path}: unknown file type - use one of {', '.join(SUFFIXES)}")


def read_table(path: Path) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(sha256 of the bytes, column names, records) of a predictions file; one-line errors
    for a missing, unreadable or malformed file."""
    kind = file_kind(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise MliapdbError(f"{path}: larger than 1 GiB - split it into several files")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise MliapdbError(f"no such file: {path}") from exc
    sha = hashlib.sha256(data).hexdigest()
    try:
        if str(path).lower().endswith(".gz"):
            data = gzip.decompress(data)
        if kind == "csv":
            text = data.decode("utf-8-sig")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = list(reader.fieldnames or [])
            records = [dict(r) for r in reader]
            if any(None in r for r in records):
                bad = next(i for i, r in enumerate(records, 1) if None in r)
                raise MliapdbError(f"{path}: row {bad}: more cells than the header has columns")
        elif kind == "json":
            columns, records = _json_records(path, json.loads(data))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            columns, records = list(table.column_names), table.to_pylist()
    except MliapdbError:
        raise
    except (OSError, EOFError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise MliapdbError(f"{path}: not a readable {kind} file ({str(exc)[:200]})") from exc
    except Exception as exc:  # pyarrow's own errors
        raise MliapdbError(f"{path}: not a readable {kind} file ({str(exc)[:200]})") from exc
    if not records:
        raise MliapdbError(f"{path}: no rows - nothing to import")
    return sha, columns, records


def _json_records(path: Path, raw: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Records of pandas ``to_json`` output: orient ``records`` (a list of objects) or
    ``columns`` (an object of columns, each an object index -> value)."""
    if isinstance(raw, list) and all(isinstance(r, dict) for r in raw):
        columns: list[str] = []
        for r in raw:
            columns += [c for c in r if c not in columns]
        return columns, raw
    if isinstance(raw, dict) and raw and all(isinstance(v, dict) for v in raw.values()):
        index = list(next(iter(raw.values())))
        for col, values in raw.items():
            if list(values) != index:
                raise MliapdbError(f"{path}: column {col} has other rows than the first column "
                                   "- write it with pandas to_json(orient='records')")
        return list(raw), [{c: raw[c][i] for c in raw} for i in index]
    raise MliapdbError(f"{path}: JSON is neither a list of row objects (orient 'records') nor an "
                       "object of columns (orient 'columns')")


@dataclass(frozen=True)
class Layout:
    """Which columns of a file hold what, and the energy unit."""

    energy_column: str
    energy_unit: str
    structure_column: str | None
    single_point_column: str | None = None
    """Relaxations: the energy on the DFT structure (same unit), e.g. for the suspicious
    energy-drop flag (``energy_single_point`` or ``<model>_energy_single_point``)."""


def _given_column(path: Path, columns: list[str], name: str, option: str, shown: str) -> str:
    """``name`` (given with ``option``) if the file has that column, else a one-line error."""
    if name not in columns:
        raise MliapdbError(f"{path}: no column {name!r} ({option}; columns: {shown})")
    return name

def find_layout(path: Path, columns: list[str], model: str, kind: str,
                energy_column: str | None = None, energy_unit: str | None = None,
                structure_column: str | None = None) -> Layout:
    """The energy and structure columns, given or recognised: ``energy``, ``e_pred``,
    ``<model>_energy`` or the one column ending in ``_energy`` (eV per cell); else
    ``energy_per_atom`` / ``e_per_atom`` (eV/atom). Several candidates need the option."""
    shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
    if "material_id" not in columns:
        raise MliapdbError(f"{path}: no material_id column (columns: {shown}) - the file needs "
                           "one MP material id per row")
    if energy_column is not None:
        col = _given_column(path, columns, energy_column, "--energy-column", shown)
    else:
        tiers = [
            [c for c in (*_PER_CELL_NAMES, f"{model}_energy") if c in columns],
            [c for c in columns if c.endswith("_energy") and c != "uncorrected_energy"
             and not c.startswith(("e_form", "dft_"))],
            [c for c in (*_PER_ATOM_NAMES, f"{model}_energy_per_atom") if c in columns],
        ]
        found = next((t for t in tiers if t), [])
        if len(found) != 1:
            forms = [c for c in columns if c.startswith("e_form")]
            if forms and not found:
                raise MliapdbError(
                    f"{path}: only formation energies ({', '.join(forms)}), which need the "
                    "model's own elemental references - import the model's total energies "
                    "(e.g. <model>_energy, eV per cell)")
            why = ("several energy columns: " + ", ".join(found)) if found else (
                f"no energy column (energy, e_pred, {model}_energy, energy_per_atom; columns: "
                f"{shown})")
            raise MliapdbError(f"{path}: {why} - name the model's energy column with "
                               "--energy-column")
        col = found[0]
    if col.startswith("e_form"):
        raise MliapdbError(f"{path}: column {col} is a formation energy, which needs the model's "
                           "own elemental references - import the model's total energy")
    unit = energy_unit or ("eV/atom" if "per_atom" in col else "eV")
    struct = None
    if kind != "single-point":
        if structure_column is not None:
            struct = _given_column(path, columns, structure_column, "--structure-column", shown)
        else:
            named = [c for c in ("relaxed_structure", f"{model}_structure") if c in columns]
            named = named or [c for c in columns if c.endswith("_structure")
                              and not c.startswith(("initial", "dft"))]
            if len(named) > 1:
                raise MliapdbError(f"{path}: several structure columns ({', '.join(named)}) - "
                                   "name the relaxed one with --structure-column")
            struct = named[0] if named else None
    single = None
    if kind != "single-point":
        single = next((c for c in ("energy_single_point", f"{model}_energy_single_point")
                       if c in columns), None)
    return Layout(col, unit, struct, single)


@dataclass(frozen=True)
class ImportModel:
    """The model imported rows are filed under: its name, checkpoint sha256 (recorded per
    row), and the ``models`` row to insert when the database has none (else None)."""

    name: str
    checkpoint_sha256: str
    new_row: dict | None


def import_model(con: duckdb.DuckDBPyConnection, name: str) -> ImportModel:
    """A model of ``mliapdb/compute/models/*.toml`` (its metadata and published checkpoint sha256)
    or one registered in the database (e.g. by ``ingest relax --as``); anything else is
    refused: imported energies are only as meaningful as the metadata they are filed under."""
    from mliapdb.compute.calculations import check_functional, check_identity
    from mliapdb.compute.models.registry import UnknownModelError, get_model_spec
    from mliapdb.store.tables import ModelRow

    row = con.execute("SELECT checkpoint_sha256, functional FROM models WHERE name = ?",
                      [name]).fetchone()
    try:
        spec = get_model_spec(name)
    except UnknownModelError:
        spec = None
    if spec is None and row is None:
        raise MliapdbError(
            f"unknown model {name!r}: predictions are filed under a model of 'mliapdb models' "
            "or one registered in this database (ingest relax --as) - its metadata (energy "
            "convention, functional) decides how its energies are compared")
    if spec is not None:
        try:
            check_functional(spec)
        except MliapdbError as exc:
            raise MliapdbError(str(exc).split(" - ")[0] + " - import predictions of a PBE "
                               "model") from exc
        check_identity(con, spec, row[0] if row else spec.checkpoint_sha256)
    if row is not None:
        if spec is None and not str(row[1] or "").upper().startswith("PBE"):
            raise MliapdbError(f"model {name} predicts {row[1]} energies, not PBE: its errors "
                               "against the GGA/GGA+U hull would measure the functional")
        return ImportModel(name, row[0], None)
    if not spec.checkpoint_sha256:
        raise MliapdbError(
            f"model {name} has no published checkpoint sha256 and is not registered in this "
            f"database - run 'mliapdb ingest relax --model {name} --checkpoint FILE' once (it "
            "records the checkpoint), then import its predictions")
    fields = dict(
        name=spec.name, family=spec.family, version=spec.version,
        checkpoint=str(spec.checkpoint), checkpoint_sha256=spec.checkpoint_sha256,
        training_set=spec.training_set, functional=spec.functional,
        energy_convention=spec.energy_convention, package_versions="{}",
        license=spec.license, citation=spec.citation, registered_at=now(), base_model=None,
    )
    # the metadata columns later migrations add, as ingest relax writes them
    fields.update({key: getattr(spec, key) for key in ModelRow.model_fields
                   if key not in fields and hasattr(spec, key)})
    new = ModelRow(**fields).model_dump()
    return ImportModel(name, spec.checkpoint_sha256, new)


def _number(value: Any) -> float | None:
    """A finite float of a cell, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class ImportReport:
    path: str
    sha256: str
    model: str
    settings_hash: str
    calc_kind: str
    n_rows: int
    n_new: int
    already_from: str | None = None
    """The file's bytes were imported before (from this path): nothing written."""


def settings_of(sha: str, path: Path, kind: str, layout: Layout) -> dict:
    return {"source": SOURCE, "file": str(Path(path).resolve()), "sha256": sha,
            "calc_kind": KINDS[kind], "energy_column": layout.energy_column,
            "energy_unit": layout.energy_unit, "structure_column": layout.structure_column,
            **({"single_point_column": layout.single_point_column}
               if layout.single_point_column else {})}


def _previous(con, model: str, dataset: str, sha: str, kind: str, layout: Layout):
    return con.execute(
        "SELECT any_value(settings_hash), any_value(settings->>'file'), count(*) "
        "FROM calculations WHERE model = ? AND (? IS NULL OR dataset = ?) AND calc_kind = ? "
        "AND settings->>'source' = ? AND settings->>'sha256' = ? "
        "AND settings->>'energy_column' = ? AND settings->>'energy_unit' = ?",
        [model, dataset, dataset, KINDS[kind], SOURCE, sha, layout.energy_column,
         layout.energy_unit],
    ).fetchone()


def import_predictions(con: duckdb.DuckDBPyConnection, path: Path, model: str, kind: str,
                       dataset: str = "mp", energy_column: str | None = None,
                       energy_unit: str | None = None,
                       structure_column: str | None = None) -> ImportReport:
    """Check every row of ``path`` and store them all in one transaction, or nothing: an
    unknown or rejected material id, a duplicate id, a missing or non-finite energy, an
    energy per atom outside :data:`mliapdb.materials.entries.ENERGY_PER_ATOM_RANGE` or a structure
    of
    other atoms is a one-line :class:`MliapdbError` naming the file and row. The same bytes
    imported again (same model, dataset, kind and columns) write nothing."""
    from mliapdb.materials.entries import ENERGY_PER_ATOM_RANGE

    if kind not in KINDS:
        raise MliapdbError(f"--kind {kind}: use one of {', '.join(KINDS)}")
    if energy_unit is not None and energy_unit not in ENERGY_UNITS:
        raise MliapdbError(f"--energy-unit {energy_unit}: use one of {', '.join(ENERGY_UNITS)}")
    target = import_model(con, model)
    sha, columns, records = read_table(path)
    layout = find_layout(path, columns, model, kind, energy_column, energy_unit,
                         structure_column)
    per_row = "dataset" in columns  # rows name their dataset (a file of several snapshots)
    prev = _previous(con, model, None if per_row else dataset, sha, kind, layout)
    if prev and prev[2]:
        return ImportReport(str(path), sha, model, prev[0], KINDS[kind], len(records), 0,
                            already_from=prev[1])
    settings = settings_of(sha, path, kind, layout)
    text = json.dumps(settings, sort_keys=True)
    shash = hashlib.sha256(text.encode()).hexdigest()[:16]
    materials = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT m.dataset, m.material_id, e.n_atoms, e.compat_status, m.composition FROM "
        "mp_materials m JOIN dft_entries e USING (dataset, material_id) "
        "WHERE ? OR m.dataset = ?", [per_row, dataset]).fetchall()}
    seen: dict[tuple[str, str], int] = {}
    rows = []
    created = now()
    for i, rec in enumerate(records, 1):
        mid = rec.get("material_id")
        mid = mid.strip() if isinstance(mid, str) else mid
        where = f"{path}: row {i}"
        if not isinstance(mid, str) or not mid:
            raise MliapdbError(f"{where}: no material id - every row needs its MP id")
        where = f"{path}: row {i} ({mid})"
        row_dataset = dataset
        if per_row:
            row_dataset = rec.get("dataset")
            row_dataset = row_dataset.strip() if isinstance(row_dataset, str) else row_dataset
            if not isinstance(row_dataset, str) or not row_dataset:
                raise MliapdbError(f"{where}: no dataset - the file has a dataset column, so "
                                   "every row names its dataset")
        key = (row_dataset, mid)
        if key in seen:
            raise MliapdbError(f"{where}: material id {mid} appears twice (rows {seen[key]} and "
                               f"{i}) - keep one prediction per material")
        seen[key] = i
        if key not in materials:
            raise MliapdbError(f"{where}: material id {mid} is not in dataset '{row_dataset}' "
                               "of the database - ingest its entries first, or fix the id")
        n_atoms, compat, composition = materials[key]
        if compat != "ok":
            raise MliapdbError(f"{where}: {mid} has no accepted DFT entry (rejected by MP2020) - "
                               "its prediction cannot be compared; leave the row out")
        energy = _cell_energy(where, rec, layout.energy_column, layout.energy_unit, n_atoms,
                              ENERGY_PER_ATOM_RANGE)
        single_point = None
        if layout.single_point_column is not None:
            single_point = _cell_energy(where, rec, layout.single_point_column,
                                        layout.energy_unit, n_atoms, ENERGY_PER_ATOM_RANGE,
                                        optional=True)
        structure = None
        if layout.structure_column is not None:
            structure = _structure(where, rec.get(layout.structure_column),
                                   layout.structure_column, n_atoms, composition)
        row = _row(row_dataset, mid, model, shash, text, kind, n_atoms, energy, structure,
                   created, target.checkpoint_sha256)
        if single_point is not None:
            row["energy_single_point"] = single_point
        rows.append(row)
    _add_symmetry(con, rows)
    with transaction(con):
        if target.new_row is not None:
            insert_rows(con, "models", [target.new_row])
        insert_rows(con, "calculations", rows)
    return ImportReport(str(path), sha, model, shash, KINDS[kind], len(records), len(rows))


def _structure(where: str, value: Any, column: str, n_atoms: int, composition: str):
    """The pymatgen Structure of a cell (dict or JSON text), or None for an empty cell."""
    from pymatgen.core import Composition, Structure

    from mliapdb.materials.entries import _structure_problem

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        raw = json.loads(value) if isinstance(value, str) else value
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        structure = Structure.from_dict(raw)
    except Exception as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else (
            str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        raise MliapdbError(f"{where}: {column} is no pymatgen Structure dict ({why})") from exc
    problem = _structure_problem(structure)
    if problem:
        raise MliapdbError(f"{where}: {column}: {problem}")
    if len(structure) != n_atoms or not structure.composition.almost_equals(
            Composition(json.loads(composition))):
        raise MliapdbError(f"{where}: {column} is {structure.composition.formula} "
                           f"({len(structure)} sites), not the material's "
                           f"{Composition(json.loads(composition)).formula} - wrong row?")
    return structure


def _row(dataset, mid, model, shash, settings, kind, n_atoms, energy, structure, created,
         sha) -> dict:
    from mliapdb.store.tables import Calculation

    single = kind == "single-point"
    return Calculation(
        dataset=dataset, material_id=mid, model=model, settings_hash=shash, settings=settings,
        status="ok", error=None, n_atoms=n_atoms,
        energy_single_point=energy if single else None,
        energy_relaxed=None if single else energy,
        n_steps=None, converged=True, max_force=None, stress=None,
        relaxed_structure=json.dumps(structure.as_dict()) if structure is not None else None,
        spacegroup_after=None, wall_time_s=None, device=SOURCE, created_at=created,
        calc_kind=KINDS[kind], engine=SOURCE, spacegroup_before=None, rmsd=None,
        volume_ratio=None, checkpoint_sha256=sha,
    ).model_dump()


def _cell_energy(where: str, rec: dict, column: str, unit: str, n_atoms: int,
                 bounds: tuple[float, float], optional: bool = False) -> float | None:
    """The energy of ``rec[column]`` in eV per cell (``unit`` eV or eV/atom), within
    ``bounds`` eV/atom; an empty cell is None where ``optional``."""
    value = rec.get(column)
    energy = _number(value)
    if energy is None:
        if optional and value in (None, ""):
            return None
        raise MliapdbError(f"{where}: {column} is {value!r:.40}, not a finite number"
                           + (" (or leave the cell empty)" if optional else ""))
    if unit == "eV/atom":
        energy *= n_atoms
    lo, hi = bounds
    if not lo <= energy / n_atoms <= hi:
        raise MliapdbError(
            f"{where}: {column} gives {energy / n_atoms:.4g} eV/atom ({n_atoms} atoms), "
            f"outside {lo:g} to {hi:g} eV/atom - check the column and --energy-unit (eV per "
            "cell or eV/atom)")
    return energy


def _add_symmetry(con, rows: list[dict]) -> None:
    """Space group before (the DFT structure) and after (the given relaxed structure), RMSD
    and volume ratio of the relaxations that carry a structure, as for local runs."""
    from pymatgen.core import Structure

    from mliapdb.compute.relaxation import _spacegroup, internal_rmsd

    todo = [r for r in rows if r["relaxed_structure"] is not None]
    if not todo:
        return
    dft = {(d, m): s for d, m, s in con.execute(
        "SELECT dataset, material_id, structure FROM mp_materials WHERE material_id IN "
        "(SELECT unnest(?))", [[r["material_id"] for r in todo]]).fetchall()}
    for r in todo:
        before = Structure.from_dict(json.loads(dft[(r["dataset"], r["material_id"])]))
        after = Structure.from_dict(json.loads(r["relaxed_structure"]))
        r["spacegroup_before"] = _spacegroup(before)
        r["spacegroup_after"] = _spacegroup(after)
        r["volume_ratio"] = after.volume / before.volume
        if [s.species for s in before] == [s.species for s in after]:
            r["rmsd"] = internal_rmsd(before, after)


# ---------------------------------------------------------------- export


def export_kind(path: Path | str) -> str:
    """``csv``, ``parquet`` or ``json`` of an output name (``.csv.gz`` and ``.json.gz``
    too)."""
    return file_kind(path)


def check_relation(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """``name`` if it is a table or view of the database's catalog (schema main), as a
    quoted identifier; a one-line error listing them otherwise. Nothing else ever reaches
    SQL."""
    names = sorted({r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog NOT IN ('system', 'temp')").fetchall()})
    if name not in names:
        raise MliapdbError(f"no table or view {name!r} in the database - export one of: "
                           f"predictions, {', '.join(names)}")
    return '"' + name.replace('"', '""') + '"'


def relation_rows(con: duckdb.DuckDBPyConnection, name: str):
    """(columns, rows) of a checked table or view."""
    cur = con.execute(f"SELECT * FROM {check_relation(con, name)}")
    return [d[0] for d in cur.description], cur.fetchall()


def prediction_rows(con: duckdb.DuckDBPyConnection, model: str, kind: str = "relax",
                    dataset: str | None = None, settings_hash: str | None = None):
    """(columns, rows) of one model's usable results in the layout the import reads:
    ``material_id``, ``formula``, ``n_atoms``, ``energy`` (the model's raw energy, eV per
    cell: the single point, or the converged relaxed energy), ``relaxed_structure`` (JSON;
    relaxations only)."""
    ckind = KINDS.get(kind)
    if ckind is None:
        raise MliapdbError(f"--kind {kind}: use relax, relax-fixsym or single-point")
    where = "c.model = ? AND c.calc_kind = ? AND c.status = 'ok'"
    params: list = [model, ckind]
    for column, value in (("dataset", dataset), ("settings_hash", settings_hash)):
        if value is not None:
            where += f" AND c.{column} = ?"
            params.append(value)
    groups = con.execute(
        f"SELECT c.dataset, c.settings_hash, count(*) FROM calculations c WHERE {where} "
        "GROUP BY ALL ORDER BY ALL", params).fetchall()
    if not groups:
        raise MliapdbError(f"no {kind} results of model {model}"
                           + (f" in dataset '{dataset}'" if dataset else "")
                           + (f" with settings {settings_hash}" if settings_hash else "")
                           + " in the database - see 'mliapdb sql \"SELECT model, calc_kind, "
                           "settings_hash, count(*) FROM calculations GROUP BY ALL\"'")
    if len(groups) > 1:
        names = ", ".join(f"{d}/{s}" for d, s, _ in groups)
        raise MliapdbError(f"model {model} has {kind} results of several datasets/settings "
                           f"({names}) - pick one with --dataset and --settings")
    energy = "c.energy_single_point" if ckind == "single_point" else "c.energy_relaxed"
    structure = ", c.relaxed_structure" if ckind != "single_point" else ""
    cur = con.execute(
        f"SELECT c.material_id, m.formula_full AS formula, c.n_atoms, {energy} AS energy"
        f"{structure} FROM calculations c JOIN mp_materials m USING (dataset, material_id) "
        f"WHERE {where} AND {energy} IS NOT NULL ORDER BY c.material_id", params)
    return [d[0] for d in cur.description], cur.fetchall()


def write_rows(out: Path, columns: list[str], rows: list[tuple]) -> None:
    """Write ``rows`` to ``out`` (CSV, CSV.gz, JSON records, Parquet by name) atomically: a
    temporary file in the same folder, renamed when complete."""
    kind = export_kind(out)
    folder = out.parent
    if not folder.is_dir():
        raise MliapdbError(f"cannot write {out}: the folder {folder} does not exist - create "
                           "it first, or pass another --out")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    from mliapdb.render import csv_value, json_value

    try:
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([dict(zip(columns, r, strict=True))
                                                 for r in rows]) if rows else
                           pa.table({c: pa.array([], pa.null()) for c in columns}), tmp)
        else:
            if kind == "csv":
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\n")
                writer.writerow(columns)
                writer.writerows([[csv_value(v) for v in r] for r in rows])
                data = buf.getvalue().encode()
            else:
                data = json.dumps([dict(zip(columns, map(json_value, r), strict=True))
                                   for r in rows]).encode()
            if str(out).lower().endswith(".gz"):
                data = gzip.compress(data, mtime=0)
            Path(tmp).write_bytes(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
