"""Incremental derived tables equal a rebuild from scratch, row by row.

Random (seeded) sequences of ingests of real MP entries (subsets of the shared files),
calculation results written through the path ``ingest relax`` uses (delete, then insert the
rows of one material in one transaction) and through ``ingest predictions``, and a merge of
two databases; after each step the derived tables the refresh left (DFT hull, model hulls,
stored error rows, touching only the changed chemical systems and their supersystems) are
compared with those of a copy whose derived tables are rebuilt whole. The DFT hull is also
compared with pymatgen's ``PhaseDiagram`` on a sample.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest

from mliapdb.analysis import error_rows, model_hull
from mliapdb.analysis.derived import refresh_derived
from mliapdb.compute.predictions import import_predictions
from mliapdb.materials import dft_hull
from mliapdb.materials.dft_hull import rebuild_dft_hull
from mliapdb.materials.entries import load_entry_files
from mliapdb.materials.ingest import ingest_parsed
from mliapdb.sharing.merge import merge
from mliapdb.store import database as db
from mliapdb.store.database import insert_rows, now, transaction
from mliapdb.store.tables import Calculation, ModelRow

FILES = ("Fe_Li_O_P_entries.json.gz", "Mn_O_Y_entries.json.gz")
MODELS = {"model-raw": "raw", "model-corr": "mp2020_corrected"}

TABLES = {
    "dft_hull": "SELECT * EXCLUDE (computed_at) FROM dft_hull",
    "model_hull": "SELECT * FROM model_hull",
    "model_hull_builds": "SELECT dataset, model, settings_hash, calc_kind, fingerprint, "
                         "n_entries, n_complete, n_filled, n_complete_filled, dft_generation, "
                         "calc_generation, model_signature FROM model_hull_builds",
    "ehull_error_rows": "SELECT * EXCLUDE (build_id) FROM ehull_error_rows",
    "ehull_error_builds": "SELECT dataset, model, settings_hash, calc_kind, n_rows, "
                          "dft_generation, calc_generation, settings FROM ehull_error_builds",
    "served": "SELECT * FROM ehull_errors_all",
}


@pytest.fixture(scope="module")
def parsed(mp_dir: Path) -> list:
    entries = load_entry_files([mp_dir / f for f in FILES])
    unique = {p.material_id: p for p in entries}
    return sorted(unique.values(), key=lambda p: p.material_id)


def _rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def _from_scratch(path: Path, work: Path) -> dict[str, list[tuple]]:
    """The derived tables of a copy of ``path`` rebuilt whole."""
    copy = work / f"scratch-{path.name}"
    shutil.copy(path, copy)
    with db.connect(copy) as con:
        with transaction(con):
            for table in ("model_hull", "model_hull_builds", "ehull_error_rows",
                          "ehull_error_builds"):
                con.execute(f"DELETE FROM {table}").fetchall()
            for (dataset,) in con.execute("SELECT DISTINCT dataset FROM dft_entries").fetchall():
                rebuild_dft_hull(con, dataset)
        refresh_derived(con)
        out = {name: _rows(con, sql) for name, sql in TABLES.items()}
    copy.unlink()
    return out


def _check(path: Path, work: Path, partial: list[int]) -> dict[str, list[tuple]]:
    """The refreshed derived tables of ``path`` equal a rebuild from scratch, exactly; every
    build is fresh and model_hull / dft_hull rows are unique (they have no primary key).
    ``partial`` gets how many builds were made for some materials only."""
    with db.connect(path) as con:
        built = refresh_derived(con)
        partial.append(sum(b.n_rebuilt is not None for b in built.hulls + built.rows))
        got = {name: _rows(con, sql) for name, sql in TABLES.items()}
        assert con.execute("SELECT count(*) FROM stg_error_row_status WHERE NOT fresh "
                           ).fetchone()[0] == 0
        assert got["served"] == _rows(con, "SELECT * FROM stg_ehull_errors_live")
        for table, key in (("model_hull", "dataset, model, settings_hash, calc_kind, refs, "
                            "material_id"), ("dft_hull", "dataset, material_id")):
            n, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
            assert n == distinct, table
    want = _from_scratch(path, work)
    for name in TABLES:
        assert got[name] == want[name], name
    return got


def _results(con, rng: random.Random, model: str, kind: str, share: float) -> int:
    """Results of ``model`` for a random ``share`` of the accepted entries (some already
    with a result: replaced), written as 'ingest relax' writes them: one material per
    transaction, delete then insert. A few relaxations fail (fill-ins)."""
    entries = con.execute(
        "SELECT dataset, material_id, n_atoms, energy_corrected, correction_mp2020 "
        "FROM dft_entries WHERE compat_status = 'ok' ORDER BY material_id").fetchall()
    chosen = [e for e in entries if rng.random() < share]
    for ds, mid, n, corrected, correction in chosen:
        e = corrected - (correction if MODELS[model] == "raw" else 0.0)
        e += rng.uniform(-0.08, 0.08) * n
        status = "failed" if kind == "relax" and rng.random() < 0.05 else "ok"
        row = Calculation(
            dataset=ds, material_id=mid, model=model, settings_hash=f"s-{kind}",
            settings="{}", status=status, n_atoms=n, energy_single_point=e + 0.01 * n,
            energy_relaxed=e if status == "ok" and kind == "relax" else None,
            n_steps=3, converged=status == "ok", created_at=now(), calc_kind=kind,
            spacegroup_before=225, spacegroup_after=225 if rng.random() < 0.7 else 123,
            rmsd=rng.random() * 0.1,
        ).model_dump()
        if kind == "single_point":
            row["energy_relaxed"] = None
        with transaction(con):
            con.execute("DELETE FROM calculations WHERE dataset = ? AND material_id = ? AND "
                        "model = ? AND settings_hash = ?",
                        [ds, mid, model, row["settings_hash"]]).fetchall()
            insert_rows(con, "calculations", [row])
    return len(chosen)


def _new_db(path: Path) -> None:
    with db.connect(path, create=True) as con:
        insert_rows(con, "models", [
            ModelRow(name=name, family="test", version="0", checkpoint="none",
                     energy_convention=conv, registered_at=now()).model_dump()
            for name, conv in MODELS.items()])


def _predictions(con, work: Path, rng: random.Random, name: str) -> None:
    """An 'ingest predictions' file of chgnet-0.3.0 energies for a random third of the
    accepted entries."""
    rows = con.execute("SELECT material_id, energy_corrected - coalesce(correction_mp2020, 0) "
                       "FROM dft_entries WHERE compat_status = 'ok' ORDER BY 1").fetchall()
    path = work / name
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["material_id", "energy"])
        for mid, e in rows:
            if rng.random() < 0.33:
                out.writerow([mid, repr(e * (1 + rng.uniform(-0.01, 0.01)))])
    import_predictions(con, path, "chgnet-0.3.0", "relax")


@pytest.mark.parametrize("seed", [0])
def test_incremental_derived_tables_equal_a_full_rebuild(parsed: list, tmp_path: Path,
                                                        seed: int, monkeypatch) -> None:
    # every build that can be partial is (the shared files are one connected system each,
    # where a change reaches more than INCREMENTAL_SHARE of the entries)
    for module in (dft_hull, error_rows, model_hull):
        monkeypatch.setattr(module, "INCREMENTAL_SHARE", 1.0)
    rng = random.Random(seed)
    order = list(parsed)
    rng.shuffle(order)
    # the elements first (every hull needs them), then big and small batches
    order.sort(key=lambda p: len(p.entry.composition) > 1)
    cuts = [350, 650, 660, 960, 975]
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    path = tmp_path / "a.duckdb"
    _new_db(path)
    steps = [
        ("ingest", 0), ("relax", "model-raw", 0.5), ("single_point", "model-corr", 0.5),
        ("ingest", 1), ("relax", "model-raw", 0.01), ("ingest", 2),
        ("predictions", "p1.csv"), ("single_point", "model-corr", 0.02), ("ingest", 3),
        ("relax", "model-corr", 0.3), ("ingest", 4), ("relax", "model-raw", 0.01),
    ]
    partial: list[int] = []
    for what, arg, *share in steps:
        with db.connect(path) as con:
            if what == "ingest":
                report = ingest_parsed(con, batches[arg])
                assert report.n_new == len(batches[arg])
            elif what == "predictions":
                _predictions(con, tmp_path, rng, arg)
            else:
                assert _results(con, rng, arg, what, share[0]) > 0
        _check(path, tmp_path, partial)
    assert sum(partial) >= 4, partial  # some builds were made for some materials only

    # a second database with the last batch and other results, merged, then changed again
    other = tmp_path / "b.duckdb"
    _new_db(other)
    with db.connect(other) as con:
        ingest_parsed(con, batches[-1])
        _results(con, rng, "model-raw", "single_point", 0.5)
    merged = tmp_path / "merged.duckdb"
    merge([path, other], merged)
    _check(merged, tmp_path, partial)
    with db.connect(merged) as con:
        _results(con, rng, "model-raw", "relax", 0.02)
    got = _check(merged, tmp_path, partial)
    with db.connect(merged, read_only=True) as con:
        n_materials = con.execute("SELECT count(*) FROM mp_materials").fetchone()[0]
    assert n_materials == len(parsed)
    assert len(got["model_hull"]) > 1000 and len(got["served"]) > 1000
    _phase_diagram_sample(merged, rng)


def _phase_diagram_sample(path: Path, rng: random.Random) -> None:
    """The DFT hull of 40 random entries equals pymatgen's PhaseDiagram over every accepted
    entry of its chemical system and subsystems (1e-6 eV/atom)."""
    import json

    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    with db.connect(path, read_only=True) as con:
        rows = con.execute(
            "SELECT m.material_id, m.composition, e.energy_corrected, h.e_above_hull "
            "FROM mp_materials m JOIN dft_entries e USING (dataset, material_id) "
            "JOIN dft_hull h USING (dataset, material_id) WHERE e.compat_status = 'ok' "
            "ORDER BY 1").fetchall()
    entries = {r[0]: ComputedEntry(Composition(json.loads(r[1])), r[2], entry_id=r[0])
               for r in rows}
    for mid, _, _, ehull in rng.sample(rows, 40):
        entry = entries[mid]
        elements = set(entry.composition.elements)
        pd = PhaseDiagram([e for e in entries.values()
                           if set(e.composition.elements) <= elements])
        assert ehull == pytest.approx(pd.get_e_above_hull(entry), abs=1e-6), mid
