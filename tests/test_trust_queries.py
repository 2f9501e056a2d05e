"""Trust, query and report side: inputs that cannot mean anything are refused with one
``Error:`` line (nothing opened for writing, the database byte-identical), and an empty
result says why and what fixes it (issue 10, items 5 and 6).

The database is made with the real CLI: the Mn-O entries, then CHGNet 0.3.0 single points of
the three smallest cells (Mn and two O2 polymorphs: elements only, so the model hulls are
incomplete and the DFT-reference hull has no rows)."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from trust import assert_one_line_error, run, unchanged

from mliapdb.store.database import insert_rows, now
from mliapdb.store.generations import bump_calculations
from mliapdb.store.tables import Calculation

SP = "--kind", "single-point"
HEADER = (
    "model  dof  n  mae_meV  rmse_meV  mean_signed_error_meV  median_signed_error_meV  "
    "frac_underpredicted\n"
    "-----  ---  -  -------  --------  ---------------------  -----------------------  "
    "-------------------\n"
)
DESCRIPTION = (
    "Ehull error = model - DFT (meV/atom), {hull}, single points on the DFT structures{near}; "
    "symmetry at symprec 0.1 A (moyopy); frac_underpredicted = share of materials with model "
    "Ehull < DFT Ehull{note}\n"
)
DFT_HULL = "fixed DFT hull (MP2020-corrected)"
STALE_NOTE = ("; {n} result set(s) changed since their error rows were stored, their rows are "
              "left out - run 'mliapdb ingest hulls'")
STALE_HINT = (
    "the stored error rows of 1 result set(s) (chgnet-0.3.0 single-point {h} (mp)) are out of "
    "date, so they are left out: the calculations changed after the rows were stored (an "
    "interrupted 'ingest relax'?) - run 'mliapdb ingest hulls' to store them again"
)
INCOMPLETE = (
    "no material with usable results lies in a complete chemical system under model-hull "
    "(every entry of every subsystem needs a usable model energy): 2 incomplete system(s): "
    "O (18 of 20 entries without a usable model energy), Mn (5 of 6 entries without a usable "
    "model energy) - relax the missing materials of those systems (e.g. 'mliapdb ingest relax "
    "--model chgnet-0.3.0 --kind single-point --chemsys O'){fill}, or use --convention dft-hull"
)


@pytest.fixture(scope="module")
def db(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("trust_queries") / "db.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    assert result.exit_code == 0, result.output
    result = run("--db", path, "ingest", "relax", "--model", "chgnet-0.3.0", *SP,
                 "--max-sites", "4", "--limit", "3")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def settings(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        (h,) = con.execute("SELECT DISTINCT settings_hash FROM calculations").fetchone()
    return h


def query(db: Path, *args: object):
    """``mliapdb --db DB query ARGS``, asserting that the database file is unchanged."""
    with unchanged(db):
        return run("--db", db, "query", *args)


# --- item 5: inputs that cannot apply are refused -------------------------------------------

NEAR = ("give the DFT Ehull (eV/atom) below which a material counts as near the hull: a "
        "number above 0, e.g. 0.05")


@pytest.mark.parametrize("args, line", [
    (("ehull-mae", "--near-hull", "nan"), f"Error: bad --near-hull nan - {NEAR}"),
    (("ehull-mae", "--near-hull", "-1"), f"Error: bad --near-hull -1 - {NEAR}"),
    (("ehull-mae", "--near-hull", "0"), f"Error: bad --near-hull 0 - {NEAR}"),
    (("ehull-mae", "--near-hull", "inf"), f"Error: bad --near-hull inf - {NEAR}"),
    (("near-hull", "--threshold", "nan"), f"Error: bad --threshold nan - {NEAR}"),
    (("near-hull", "--threshold", "-0.05"), f"Error: bad --threshold -0.05 - {NEAR}"),
    (("near-hull", "--threshold", "-inf"), f"Error: bad --threshold -inf - {NEAR}"),
])
def test_thresholds_must_be_finite_and_positive(db: Path, args, line) -> None:
    result = query(db, *args)
    assert assert_one_line_error(result) == line
    assert result.stdout == ""


@pytest.mark.parametrize("value, shown", [
    ("1e9", "1e+09"), ("0", "0"), ("-0.1", "-0.1"), ("nan", "nan"), ("inf", "inf"),
    ("1e-6", "1e-06"), ("1.5", "1.5"),
])
def test_symprec_outside_the_range_is_refused(db: Path, value: str, shown: str) -> None:
    from mliapdb.config import SYMPREC_RANGE

    assert SYMPREC_RANGE == (1e-5, 1.0)
    result = query(db, "ehull-mae", "--symprec", value)
    assert assert_one_line_error(result) == (
        f"Error: bad --symprec {shown} - give a symmetry tolerance from 1e-05 to 1 A, e.g. 0.1")


@pytest.mark.parametrize("args, shown", [
    (("--symprec", "0.01"), "0.01 A (moyopy)"),
    (("--symprec", "1"), "1 A (moyopy)"),
    (("--symmetry-method", "spglib"), "0.1 A (spglib)"),
])
def test_tolerance_without_analyses_names_the_stored_ones(db: Path, args, shown) -> None:
    symprec, method = shown.split(" A (")
    result = query(db, "ehull-mae", *SP, *args)
    assert assert_one_line_error(result) == (
        f"Error: no symmetry analyses at symprec {shown} (stored: 0.1 A (moyopy)) - pick one "
        "with --symprec/--symmetry-method, or store it with 'mliapdb ingest entries FILE "
        f"--symprec {symprec} --symmetry-method {method.rstrip(')')}'")


def test_symprec_of_a_stored_analysis_is_accepted(db: Path) -> None:
    result = query(db, "ehull-mae", *SP, "--symprec", "0.1", "--by", "model")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split()[:2] == ["chgnet-0.3.0", "3"]


BAD_BINS = "write increasing integers like 1,2,4,8,16"


@pytest.mark.parametrize("bins", ["1,nan", "4,2", "1,1", "-1,2", "1,2.5", "1,inf", "",
                                  "1,1000001"])
def test_bad_bins_are_refused(db: Path, bins: str) -> None:
    result = query(db, "ehull-mae", "--by", "dof-bin", "--bins", bins)
    assert assert_one_line_error(result) == f"Error: bad --bins {bins!r} - {BAD_BINS}"


@pytest.mark.parametrize("by", ["dof", "model", "crystal-system", "nelements"])
def test_bins_only_with_the_dof_bin_grouping(db: Path, by: str) -> None:
    result = query(db, "ehull-mae", "--by", by, "--bins", "1,2")
    assert assert_one_line_error(result) == (
        f"Error: --bins applies to --by dof-bin only (got --by {by}) - add --by dof-bin or "
        "leave --bins out")


def test_bins_with_dof_bin(db: Path) -> None:
    result = query(db, "ehull-mae", *SP, "--by", "dof-bin", "--bins", "1,2", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [line.split(",")[1:3] for line in result.stdout.splitlines()[1:]] == [
        ["1", "1"], ["2+", "2"]]
    assert result.stderr.endswith("; DOF bins from 1,2\n")


def test_library_refuses_the_same(db: Path) -> None:
    from mliapdb.analysis.queries import ehull_mae, near_hull
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as dbmod

    con = dbmod.connect(db, read_only=True)
    try:
        with pytest.raises(MliapdbError, match="--bins applies to --by dof-bin only"):
            ehull_mae(con, by="dof", bins=[1, 2])
        with pytest.raises(MliapdbError, match=r"bad --bins '2,1'"):
            ehull_mae(con, by="dof-bin", bins=[2, 1])
        with pytest.raises(MliapdbError, match="bad --near-hull nan"):
            ehull_mae(con, near_hull=float("nan"))
        with pytest.raises(MliapdbError, match="bad --threshold -1"):
            near_hull(con, threshold=-1.0)
        with pytest.raises(MliapdbError, match="bad --symprec 2"):
            ehull_mae(con, symprec=2.0)
    finally:
        con.close()


def test_unknown_settings_and_dataset_name_the_stored_ones(db: Path, settings: str) -> None:
    result = query(db, "ehull-mae", *SP, "--settings", "zzz")
    assert assert_one_line_error(result) == (
        f"Error: no calculations with settings hash 'zzz' (stored: {settings} (chgnet-0.3.0 "
        "single-point)) - pick one with --settings HASH, or leave it out")
    result = query(db, "ehull-mae", *SP, "--dataset", "mp2")
    assert assert_one_line_error(result) == (
        "Error: no dataset 'mp2' in the database (stored: mp) - pick one with --dataset NAME")
    result = query(db, "ehull-mae", *SP, "--settings", settings, "--by", "model")
    assert result.exit_code == 0 and "chgnet-0.3.0" in result.stdout


# --- item 6: empty results name the real reason ---------------------------------------------


def test_threshold_below_every_material(db: Path) -> None:
    result = query(db, "ehull-mae", *SP, "--near-hull", "0.001")
    assert result.exit_code == 0, result.output
    assert result.stdout == HEADER
    assert result.stderr == DESCRIPTION.format(
        hull=DFT_HULL, near=", near-hull materials (DFT Ehull < 1 meV/atom)", note=""
    ) + ("no material with usable results has a DFT Ehull below 1 meV/atom (the lowest is "
         "145.464 meV/atom) - raise --near-hull\n")
    result = query(db, "near-hull", *SP, "--threshold", "0.1")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == (
        "no material with usable results has a DFT Ehull below 100 meV/atom (the lowest is "
        "145.464 meV/atom) - raise --threshold")


def test_kind_not_computed(db: Path) -> None:
    result = query(db, "ehull-mae")
    assert result.exit_code == 0 and result.stdout == HEADER
    assert result.stderr.splitlines()[-1] == (
        "no usable relax calculations (usable stored: single-point 3) - run 'mliapdb ingest "
        "relax --kind relax --model MODEL'")
    result = query(db, "ehull-mae", "--model", "chgnet-0.3.0", "--kind", "relax-fixsym")
    assert result.stderr.splitlines()[-1] == (
        "no usable relax-fixsym calculations of model 'chgnet-0.3.0' (usable stored: "
        "single-point 3) - run 'mliapdb ingest relax --kind relax-fixsym --model "
        "chgnet-0.3.0'")
    for command in ("energy-error", "stability", "relax-effect"):
        result = query(db, command)
        assert result.exit_code == 0, result.output
        assert result.stderr.splitlines()[-1] == (
            "no usable relax calculations (usable stored: single-point 3) - run 'mliapdb "
            "ingest relax --kind relax --model MODEL'"), command
    result = query(db, "symmetry")
    assert result.stderr.splitlines()[-1] == (
        "no usable relaxations (single points keep the structure) - run 'mliapdb ingest relax "
        "--kind relax --model MODEL'")


def test_model_hull_names_the_incomplete_systems(db: Path) -> None:
    result = query(db, "ehull-mae", *SP, "--convention", "model-hull")
    assert result.exit_code == 0, result.output
    assert result.stdout == HEADER
    assert result.stderr == DESCRIPTION.format(
        hull="model hull (model's own energies and elemental references; complete chemical "
        "systems)", near="", note="") + INCOMPLETE.format(fill="") + "\n"
    # the stability query: the same reason
    result = query(db, "stability", *SP, "--convention", "model-hull")
    assert result.stderr.splitlines()[-1] == INCOMPLETE.format(fill="")
    # elements only: the DFT-reference hull has no rows at all
    result = query(db, "ehull-mae", *SP, "--convention", "model-hull-dft-refs")
    assert result.stderr.splitlines()[-1] == (
        "model-hull-dft-refs has no rows for elemental materials (the DFT elemental references "
        "are their hull) and every material of the 3 usable single-point calculations is an "
        "element - relax compounds too, or use --convention model-hull")


def test_report_names_the_incomplete_systems(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with unchanged(db, out):
        result = run("--db", db, "report", "--out", out, *SP, "--convention", "model-hull")
    assert assert_one_line_error(result) == (
        "Error: no complete model-hull results for single-point calculations of chgnet-0.3.0: "
        + INCOMPLETE.format(fill=""))


def _calc(ds: str, mid: str, n: int, e_total: float, status: str = "ok") -> dict:
    return Calculation(
        dataset=ds, material_id=mid, model="chgnet-0.3.0", settings_hash="handmade",
        settings="{}", status=status, n_atoms=n, energy_single_point=e_total,
        energy_relaxed=e_total if status == "ok" else None, n_steps=3,
        converged=status == "ok", created_at=now(), calc_kind="relax",
    ).model_dump()


def test_fill_ins_suggested_where_they_complete_a_system(db: Path, tmp_path: Path) -> None:
    """Every Mn entry relaxed but one, whose relaxation failed after its single point: the Mn
    system is complete only once fill-ins count, so the hint names --hull-coverage filled."""
    path = tmp_path / "filled.duckdb"
    shutil.copy(db, path)
    with duckdb.connect(str(path)) as con:
        mn = con.execute(
            "SELECT dataset, material_id, n_atoms, energy_corrected FROM dft_entries "
            "JOIN mp_materials USING (dataset, material_id) WHERE chemsys = 'Mn' "
            "AND compat_status = 'ok' ORDER BY material_id").fetchall()
        rows = [_calc(ds, mid, n, e) for ds, mid, n, e in mn[1:]]
        rows.append(_calc(*mn[0][:3], mn[0][3] + 0.01, status="failed"))
        insert_rows(con, "calculations", rows)
    assert run("--db", path, "ingest", "hulls").exit_code == 0
    args = ("ehull-mae", "--convention", "model-hull", "--by", "model")
    result = query(path, *args)
    assert result.stdout.count("\n") == 2
    assert result.stderr.splitlines()[-1] == (
        "no material with usable results lies in a complete chemical system under model-hull "
        "(every entry of every subsystem needs a usable model energy): 1 incomplete system(s): "
        "Mn (1 of 6 entries without a usable model energy) - relax the missing materials of "
        "those systems (e.g. 'mliapdb ingest relax --model chgnet-0.3.0 --kind relax --chemsys "
        "Mn'), count fill-ins with --hull-coverage filled, or use --convention dft-hull")
    result = query(path, *args, "--hull-coverage", "filled", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("chgnet-0.3.0,5,")


def test_interrupted_relaxation_points_at_ingest_hulls(db: Path, settings: str,
                                                       tmp_path: Path) -> None:
    """A calculation changed after the hulls and error rows were stored (what a killed
    'ingest relax' leaves): every query says 'ingest hulls', which fixes it."""
    path = tmp_path / "killed.duckdb"
    shutil.copy(db, path)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE calculations SET energy_single_point = energy_single_point - 0.1 "
                    "WHERE material_id = (SELECT min(material_id) FROM calculations)")
        # with its generation marker, as each commit of 'ingest relax' writes it
        bump_calculations(con, con.execute(
            "SELECT * FROM calculations WHERE material_id = (SELECT min(material_id) FROM "
            "calculations)").to_arrow_table())
        # and a relaxation that failed before the run was killed
        ds, mid, n = con.execute("SELECT dataset, material_id, n_atoms FROM calculations "
                                 "ORDER BY material_id LIMIT 1").fetchone()
        insert_rows(con, "calculations", [_calc(ds, mid, n, None, status="failed")])
    hint = STALE_HINT.format(h=settings[:8])
    result = query(path, "ehull-mae", *SP)
    assert result.exit_code == 0 and result.stdout == HEADER
    # two result sets changed: the single points, and the new (failed) relaxations
    assert result.stderr == DESCRIPTION.format(
        hull=DFT_HULL, near="", note=STALE_NOTE.format(n=2)) + hint + "\n"
    result = query(path, "ehull-mae", *SP, "--convention", "model-hull")
    assert result.stderr.splitlines()[-1] == hint
    assert "2 model hull(s) missing or stale" in result.stderr.splitlines()[0]
    result = query(path, "stability", *SP)
    assert result.stderr.splitlines()[-1] == hint
    result = query(path, "ehull-mae", "--kind", "relax")
    assert result.stderr.splitlines()[-1] == (
        "none of the 1 relax calculations ended ok (failed or not converged) - see 'mliapdb "
        "query calculations' and the calculation_failures view for why, then rerun them with "
        "'mliapdb ingest relax --kind relax --model MODEL'")
    out = tmp_path / "out"
    with unchanged(path, out):
        result = run("--db", path, "report", "--out", out, *SP)
    both = hint.replace("1 result set(s)", "2 result set(s)").replace(
        "(mp))", "(mp), chgnet-0.3.0 relax handmade (mp))")
    assert assert_one_line_error(result) == f"Error: nothing to report: {both}"
    result = run("--db", path, "ingest", "hulls")
    assert result.exit_code == 0, result.output
    result = query(path, "ehull-mae", *SP, "--by", "model")
    assert result.exit_code == 0 and "left out" not in result.stderr
    assert result.stdout.splitlines()[2].split()[:2] == ["chgnet-0.3.0", "3"]


def test_ingest_hulls_help_says_stale_rows_are_left_out() -> None:
    result = run("ingest", "hulls", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "computed live" not in text
    assert ("the rows of a stale model hull or of stale error rows are left out of every view "
            "and query (the queries say how many) until this command stores them again") in text
    assert "interrupted 'ingest relax'" in text


def test_query_help_documents_the_ranges() -> None:
    text = " ".join(run("query", "ehull-mae", "--help").output.split())
    assert "Symmetry tolerance in Angstrom, 1e-5 to 1" in text
    assert "for --by dof-bin only, strictly increasing integers >= 0" in text
    assert "(eV/atom, above 0)" in text
    text = " ".join(run("query", "near-hull", "--help").output.split())
    assert "eV/atom, above 0" in text
