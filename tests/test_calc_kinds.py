"""Calculation kinds (single point, relaxation, symmetry-constrained relaxation) with real
CHGNet on real MP structures, the symmetry change and RMSD of a relaxation, the r2SCAN
refusal, and migration 0002 on a database written before it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure

from mliapdb.cli.main import cli
from mliapdb.compute.calculations import check_functional
from mliapdb.compute.models import get_model_spec
from mliapdb.compute.relaxation import RelaxSettings, internal_rmsd
from mliapdb.config import schema_dir
from mliapdb.errors import MliapdbError
from mliapdb.store import database as db
from mliapdb.store import schema

MODEL = "chgnet-0.3.0"
# fcc Mn (1 atom), zincblende MnO (2 atoms), MnO2 P-3m1 (3 atoms)
IDS = ("mp-8634", "mp-1238899", "mp-25223")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- settings and RMSD (no model) -------------------------------------------------------------


def test_kinds_map_to_settings_and_keep_the_default_hash() -> None:
    relax = RelaxSettings.for_kind("relax")
    assert relax.calc_kind == "relax"
    assert relax.settings_hash() == "88a0386881573a17"  # rows stored before kinds existed
    sp = RelaxSettings.for_kind("single_point", {"fmax": 0.02})
    assert (sp.calc_kind, sp.max_steps, sp.fmax) == ("single_point", 0, 0.02)
    fix = RelaxSettings.for_kind("relax_fixsym")
    assert fix.calc_kind == "relax_fixsym" and fix.fix_symmetry
    assert len({relax.settings_hash(), sp.settings_hash(), fix.settings_hash()}) == 3
    with pytest.raises(ValueError, match="unknown calculation kind"):
        RelaxSettings.for_kind("md")
    with pytest.raises(ValueError, match="max_steps 0 is a single point"):
        RelaxSettings.for_kind("relax_fixsym", {"max_steps": 0})
    # --max-steps 0 (before kinds existed, the way to ask for single points) still is one
    assert RelaxSettings.for_kind("relax", {"max_steps": 0}) == sp.__class__(
        **{**sp.to_dict(), "fmax": 0.05})


def test_internal_rmsd() -> None:
    rocksalt = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    strained = rocksalt.copy()
    strained.apply_strain([0.05, -0.02, 0.03])
    assert internal_rmsd(rocksalt, strained) == pytest.approx(0.0, abs=1e-12)
    shifted = rocksalt.copy()  # a rigid translation, across the cell boundary
    shifted.translate_sites([0, 1], [-0.1, 0.2, 0.0], to_unit_cell=True)
    assert internal_rmsd(rocksalt, shifted) == pytest.approx(0.0, abs=1e-12)
    moved = rocksalt.copy()  # one atom 0.2 A along x: both move 0.1 A about the centre
    moved.translate_sites([1], [0.2, 0, 0], frac_coords=False)
    assert internal_rmsd(rocksalt, moved) == pytest.approx(0.1)
    big = Structure(Lattice.cubic(8.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    wrapped = big.copy()  # Na moved by -0.05 (0.4 A), written as 0.95: nearest image used
    wrapped.replace(0, "Na", [0.95, 0, 0])
    assert internal_rmsd(big, wrapped) == pytest.approx(0.2)  # +-0.2 A about the centre


def test_non_pbe_models_are_refused_unless_forced() -> None:
    spec = dataclasses.replace(get_model_spec(MODEL), name="r2scan-test", functional="r2SCAN")
    with pytest.raises(MliapdbError) as err:
        check_functional(spec)
    assert str(err.value) == (
        "model r2scan-test predicts r2SCAN energies, but the stored DFT entries and hulls are "
        "GGA/GGA+U (PBE): its errors would measure the functional, not the model - use a PBE "
        "model, or pass --force to store it anyway"
    )
    check_functional(spec, force=True)
    check_functional(get_model_spec(MODEL))


# --- real CHGNet, three kinds -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kinds_db(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("kinds") / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")
               ).exit_code == 0
    ids = [arg for mid in IDS for arg in ("--material-id", mid)]
    for kind in ("single-point", "relax", "relax-fixsym"):
        result = run("--db", str(path), "ingest", "relax", "--model", MODEL, "--kind", kind,
                     *ids, "--format", "csv")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[1].split(",")[2:7] == ["3", "0", "3", "0", "0"], kind
    return path


@pytest.mark.slow
def test_three_kinds_are_stored_side_by_side(kinds_db: Path) -> None:
    with duckdb.connect(str(kinds_db), read_only=True) as con:
        rows = con.execute(
            "SELECT material_id, calc_kind, engine, energy_single_point, energy_relaxed, n_steps,"
            " spacegroup_before, spacegroup_after, rmsd, volume_ratio, "
            " (settings->>'fix_symmetry')::BOOLEAN, (settings->>'max_steps')::INTEGER "
            "FROM calculations ORDER BY material_id, calc_kind"
        ).fetchall()
    assert len(rows) == 9
    by = {(r[0], r[1]): r for r in rows}
    for mid in IDS:
        sp, relax, fix = by[mid, "single_point"], by[mid, "relax"], by[mid, "relax_fixsym"]
        assert sp[4] is None and sp[5] == 0 and sp[7] is None and sp[8] is None and sp[11] == 0
        # the same model on the same structure: the single point of every kind agrees
        assert sp[3] == pytest.approx(relax[3], abs=1e-6)
        assert sp[3] == pytest.approx(fix[3], abs=1e-6)
        assert fix[10] is True and relax[10] is False
        assert fix[7] == fix[6]  # FixSymmetry keeps the space group of the DFT structure
        for row in (relax, fix):
            assert row[2] == "ase" and row[4] <= row[3] + 1e-3 and 0 <= row[8] < 0.5
            assert 0.8 < row[9] < 1.25
        assert sp[6] == relax[6] == fix[6] and 1 <= sp[6] <= 230


@pytest.mark.slow
def test_views_pick_the_energy_of_each_kind(kinds_db: Path) -> None:
    with db.connect(kinds_db, read_only=True) as con:
        rows = con.execute(
            "SELECT e.material_id, e.calc_kind, e.e_per_atom_model, "
            "c.energy_single_point / c.n_atoms, c.energy_relaxed / c.n_atoms, "
            "e.e_above_hull, d.e_above_hull, e.e_per_atom_model - d.e_per_atom "
            "FROM model_energies e JOIN calculations c USING (dataset, material_id, model, "
            "settings_hash) JOIN dft_stability d USING (dataset, material_id)"
        ).fetchall()
        n_errors = con.execute(
            "SELECT calc_kind, count(*) FROM ehull_errors WHERE convention = 'dft-hull' "
            "GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert len(rows) == 9
    for _mid, kind, model_e, sp_e, relaxed_e, model_ehull, dft_ehull, e_err in rows:
        expected = sp_e if kind == "single_point" else relaxed_e
        assert model_e == pytest.approx(expected, abs=1e-12)  # CHGNet: mp2020_corrected
        assert model_ehull - dft_ehull == pytest.approx(e_err, abs=1e-9)  # fixed DFT hull
    assert n_errors == [("relax", 3), ("relax_fixsym", 3), ("single_point", 3)]


@pytest.mark.slow
def test_query_by_kind(kinds_db: Path) -> None:
    out = {}
    for kind in ("single-point", "relax", "relax-fixsym"):
        result = run("--db", str(kinds_db), "query", "ehull-mae", "--by", "model", "--kind",
                     kind, "--format", "csv")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == ("model,n,mae_meV,rmse_meV,mean_signed_error_meV,"
                            "median_signed_error_meV,frac_underpredicted")
        assert lines[1].split(",")[:2] == [MODEL, "3"]
        out[kind] = float(lines[1].split(",")[2])
    with duckdb.connect(str(kinds_db), read_only=True) as con:
        raw = con.execute(
            "SELECT c.calc_kind, c.energy_single_point, c.energy_relaxed, c.n_atoms, "
            "d.energy_corrected / d.n_atoms FROM calculations c "
            "JOIN dft_entries d USING (dataset, material_id)"
        ).fetchall()
    direct = {}
    for kind in out:
        errors = [
            (sp if k == "single_point" else relaxed) / n - dft
            for k, sp, relaxed, n, dft in raw if k == kind.replace("-", "_")
        ]
        direct[kind] = 1000 * float(np.mean(np.abs(errors)))
    # fixed DFT hull: |Ehull error| = |formation-energy error| = |total-energy error|
    for kind, mae in out.items():
        assert mae == pytest.approx(direct[kind], abs=0.01), kind


def test_symmetry_change_against_point_group_orders(tmp_path: Path) -> None:
    """kept / lowered / raised / changed in the view, against pymatgen's point groups."""
    from pymatgen.symmetry.groups import PointGroup, SpaceGroup

    def order(n: int) -> int:
        return len(PointGroup(SpaceGroup.from_int_number(n).point_group).symmetry_ops)

    path = tmp_path / "x.duckdb"
    pairs = [(225, 225), (225, 123), (123, 225), (225, 221), (62, 14), (2, 1), (1, 2)]
    with db.connect(path, create=True) as con:
        mats = []
        for i, (before, after) in enumerate(pairs):
            mats.append((f"mp-{i}", before, after))
        n_groups = con.execute("SELECT count(*), sum(point_group_order) FROM space_groups"
                               ).fetchone()
        orders = dict(con.execute("SELECT number, point_group_order FROM space_groups"
                                  ).fetchall())
    assert n_groups[0] == 230
    assert all(orders[n] == order(n) for n in range(1, 231))
    expected = {}
    for mid, before, after in mats:
        if before == after:
            expected[mid] = "kept"
        elif order(after) < order(before):
            expected[mid] = "lowered"
        elif order(after) > order(before):
            expected[mid] = "raised"
        else:
            expected[mid] = "changed"
    assert sorted(set(expected.values())) == ["changed", "kept", "lowered", "raised"]
    # the view's CASE over space_groups, evaluated on the same pairs
    with duckdb.connect(str(path), read_only=True) as con:
        got = dict(con.execute(
            "SELECT t.mid, CASE WHEN t.after = t.before THEN 'kept' "
            "WHEN ga.point_group_order < gb.point_group_order THEN 'lowered' "
            "WHEN ga.point_group_order > gb.point_group_order THEN 'raised' ELSE 'changed' END "
            "FROM (SELECT unnest(?) AS mid, unnest(?) AS before, unnest(?) AS after) t "
            "JOIN space_groups gb ON gb.number = t.before "
            "JOIN space_groups ga ON ga.number = t.after",
            [[m[0] for m in mats], [m[1] for m in mats], [m[2] for m in mats]],
        ).fetchall())
    assert got == expected
    view_sql = next(p for p in schema.view_files() if p.name == "10_staging.sql").read_text()
    assert "WHEN ga.point_group_order < gb.point_group_order THEN 'lowered'" in view_sql


@pytest.mark.slow
def test_symmetry_change_of_real_relaxations(kinds_db: Path) -> None:
    with db.connect(kinds_db, read_only=True) as con:
        rows = con.execute(
            "SELECT calc_kind, spacegroup_before, spacegroup_after, symmetry_change "
            "FROM model_energies ORDER BY material_id, calc_kind"
        ).fetchall()
    for kind, before, after, change in rows:
        if kind == "single_point":
            assert change is None
        elif kind == "relax_fixsym":
            assert change == "kept" and before == after
        else:
            assert change == ("kept" if before == after else change) and change is not None


def test_migration_0002_backfills_old_rows(tmp_path: Path) -> None:
    """A database written by schema version 1 gets calc_kind and spacegroup_before."""
    path = tmp_path / "v1.duckdb"
    sql = (schema_dir() / "migrations" / "0001_initial.sql").read_text()
    with duckdb.connect(str(path)) as con:
        con.execute(sql)
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        con.execute("INSERT INTO schema_migrations VALUES (1, 'initial', now())")
        con.execute(
            "INSERT INTO symmetry_analyses VALUES "
            "('mp', 'mp-1', 0.1, 'moyopy', NULL, 'x', 225, 'Fm-3m', 'cubic', 'cF8', 'x', 1, 0, "
            "1), ('mp', 'mp-1', 0.01, 'moyopy', NULL, 'x', 221, 'Pm-3m', 'cubic', 'cP2', 'x', "
            "1, 0, 1)"
        )
        for mid, settings in (("mp-1", '{"max_steps": 500, "fix_symmetry": false}'),
                              ("mp-1", '{"max_steps": 0, "fix_symmetry": false}'),
                              ("mp-1", '{"max_steps": 500, "fix_symmetry": true}')):
            con.execute(
                "INSERT INTO calculations (dataset, material_id, model, settings_hash, settings,"
                " status, n_atoms, converged, created_at) VALUES ('mp', ?, 'm', md5(?), ?, 'ok',"
                " 1, true, now())", [mid, settings, settings])
    with db.connect(path) as con:
        version = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        rows = con.execute(
            "SELECT calc_kind, engine, spacegroup_before FROM calculations ORDER BY calc_kind"
        ).fetchall()
    assert version >= 2
    assert rows == [("relax", "ase", 225), ("relax_fixsym", "ase", 225),
                    ("single_point", "ase", 225)]

