"""The synthetic MP-scale database of ``bench/synthetic_db.py`` (used by bench/bench_stats.py):
a tiny one (300 materials x 2 models) keeps the invariants the benchmark relies on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from mliapdb.store.database import connect

N_MATERIALS = 300
N_MODELS = 2
TOL = 1e-6  # eV/atom


def _load_generator():
    path = Path(__file__).resolve().parents[1] / "bench" / "synthetic_db.py"
    spec = importlib.util.spec_from_file_location("synthetic_db", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["synthetic_db"] = module
    spec.loader.exec_module(module)
    return module


synthetic_db = _load_generator()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.duckdb"
    synthetic_db.generate(path, N_MATERIALS, N_MODELS, seed=1, log=None)
    return path


@pytest.fixture(scope="module")
def con(db: Path):
    con = connect(db, read_only=True)
    yield con
    con.close()


def test_row_counts(con) -> None:
    n = con.execute("SELECT count(*) FROM mp_materials").fetchone()[0]
    assert N_MATERIALS <= n <= N_MATERIALS + 100  # extra unaries only to complete systems
    for table in ("dft_entries", "symmetry_analyses", "dft_hull"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n, table
    assert con.execute("SELECT count(*) FROM models").fetchone()[0] == N_MODELS
    conventions = {r[0] for r in con.execute("SELECT energy_convention FROM models").fetchall()}
    assert conventions == {"raw", "mp2020_corrected"}
    kinds = dict(con.execute(
        "SELECT calc_kind, count(*) FROM calculations GROUP BY calc_kind").fetchall())
    assert kinds == {"relax": n * N_MODELS, "single_point": n * N_MODELS}
    # one symmetry analysis per material, at the database default tolerance
    assert con.execute(
        "SELECT count(*) FROM symmetry_analyses s, stg_defaults d "
        "WHERE s.symprec = d.symprec AND s.method = d.method").fetchone()[0] == n


def test_every_chemical_system_has_its_elemental_references(con) -> None:
    rows = con.execute("SELECT composition FROM mp_materials").fetchall()
    unaries = {
        el for (comp,) in rows for el in json.loads(comp) if len(json.loads(comp)) == 1
    }
    elements = {el for (comp,) in rows for el in json.loads(comp)}
    assert elements == unaries
    assert con.execute(
        "SELECT count(*) FROM dft_hull WHERE e_ref_per_atom IS NULL OR e_above_hull IS NULL"
    ).fetchone()[0] == 0


def test_columns_are_consistent(con) -> None:
    bad = con.execute(
        "SELECT count(*) FROM symmetry_analyses s JOIN space_groups g "
        "ON g.number = s.spacegroup_number WHERE g.crystal_system <> s.crystal_system "
        "OR g.symbol <> s.spacegroup_symbol OR s.dof <> s.lattice_dof + s.wyckoff_dof "
        "OR s.wyckoff_dof < 0").fetchone()[0]
    assert bad == 0
    bad = con.execute(
        "SELECT count(*) FROM mp_materials m JOIN dft_entries e USING (dataset, material_id) "
        "WHERE m.nsites <> e.n_atoms OR m.nsites < 1 OR m.nsites > 200 "
        "OR abs(e.energy_raw + e.correction_mp2020 - e.energy_corrected) > 1e-9 "
        "OR e.correction_mp2020 > 0 OR e.compat_status <> 'ok' "
        "OR m.nelements <> len(string_split(m.chemsys, '-'))").fetchone()[0]
    assert bad == 0
    # failed relaxations have no energies; converged ones do
    bad = con.execute(
        "SELECT count(*) FROM calculations WHERE calc_kind = 'relax' AND ("
        "(status = 'failed' AND energy_relaxed IS NOT NULL) "
        "OR (status = 'ok' AND (energy_relaxed IS NULL OR NOT converged)) "
        "OR (status = 'not_converged' AND converged))").fetchone()[0]
    assert bad == 0


def test_distributions_roughly_mp(con) -> None:
    share = dict(con.execute(
        "SELECT nelements, count(*) / sum(count(*)) OVER () FROM mp_materials GROUP BY 1"
    ).fetchall())
    assert share[1] < 0.2
    assert 0.3 < share[3] < 0.6
    assert 0.1 < share[2] < 0.35
    median_sites, median_dof = con.execute(
        "SELECT median(nsites), (SELECT median(dof) FROM symmetry_analyses) FROM mp_materials"
    ).fetchone()
    assert 8 <= median_sites <= 40
    assert 3 <= median_dof <= 20
    on_hull, median_above, frac_neg, lo, hi = con.execute(
        "SELECT avg((e_above_hull = 0)::INT), median(e_above_hull) FILTER (e_above_hull > 0), "
        "avg((e_form_per_atom < 0)::INT), min(e_per_atom), max(e_per_atom) FROM dft_hull"
    ).fetchone()
    assert 0.2 < on_hull < 0.45
    assert 0.015 < median_above < 0.1
    assert frac_neg > 0.5  # tiny DB: few competing phases, so more Ef > 0 than at MP scale
    assert lo > -14 and hi < -1
    ok = con.execute(
        "SELECT avg((status = 'ok')::INT) FROM calculations WHERE calc_kind = 'relax'"
    ).fetchone()[0]
    assert 0.9 < ok < 1.0


def test_dft_hull_matches_pymatgen(con) -> None:
    """The stored hull equals pymatgen's PhaseDiagram of the ten biggest chemical systems
    with three or more elements (every entry of every subsystem)."""
    rows = con.execute(
        "SELECT m.material_id, m.composition, e.energy_corrected / e.n_atoms, "
        "h.e_above_hull, h.e_form_per_atom FROM mp_materials m "
        "JOIN dft_entries e USING (dataset, material_id) "
        "JOIN dft_hull h USING (dataset, material_id)"
    ).fetchall()
    comps = [json.loads(r[1]) for r in rows]
    by_system: dict[frozenset, list[int]] = {}
    for i, c in enumerate(comps):
        by_system.setdefault(frozenset(c), []).append(i)
    big = sorted((s for s in by_system if len(s) >= 3), key=lambda s: -len(by_system[s]))[:10]
    assert big
    for system in big:
        members = [i for i, c in enumerate(comps) if set(c) <= system]
        entries = [
            PDEntry(Composition(comps[i]), rows[i][2] * sum(comps[i].values())) for i in members
        ]
        pd = PhaseDiagram(entries)
        ref_hull = np.array([pd.get_e_above_hull(e) for e in entries])
        ref_form = np.array([pd.get_form_energy_per_atom(e) for e in entries])
        np.testing.assert_allclose([rows[i][3] for i in members], ref_hull, atol=TOL, rtol=0)
        np.testing.assert_allclose([rows[i][4] for i in members], ref_form, atol=TOL, rtol=0)


def test_views_have_rows(con) -> None:
    from mliapdb.analysis import queries

    result = queries.ehull_mae(con, by="dof")
    assert result.rows
    n = con.execute(
        "SELECT count(*) FROM ehull_errors WHERE convention = 'dft-hull' AND calc_kind = 'relax'"
    ).fetchone()[0]
    n_ok = con.execute(
        "SELECT count(*) FROM calculations WHERE status = 'ok' AND calc_kind = 'relax'"
    ).fetchone()[0]
    assert n == n_ok
    # model errors are non-trivial but sane (eV/atom)
    mae = con.execute(
        "SELECT avg(abs(e_above_hull_error)) FROM ehull_errors WHERE convention = 'dft-hull'"
    ).fetchone()[0]
    assert 0.005 < mae < 0.3


def test_same_seed_same_materials() -> None:
    a = synthetic_db.draw_materials(200, np.random.default_rng(3))
    b = synthetic_db.draw_materials(200, np.random.default_rng(3))
    np.testing.assert_array_equal(a.amounts, b.amounts)
