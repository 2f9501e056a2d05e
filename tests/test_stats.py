"""The model-hull conventions and the statistics views on a real ingested MP system (Mn-O,
90 entries) with known model energies: the model hull against pymatgen's ``PhaseDiagram``,
completeness, never-stale serving, every statistics view against a direct Python
computation, DOF bins, and the query commands."""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.analysis.derived import refresh_derived
from mliapdb.analysis.error_rows import rebuild_error_rows
from mliapdb.analysis.model_hull import FAR_ABOVE_HULL, rebuild_model_hulls
from mliapdb.cli.main import cli
from mliapdb.store import database as db
from mliapdb.store.database import insert_rows, now
from mliapdb.store.generations import Scope, bump, bump_calculations
from mliapdb.store.tables import Calculation, ModelRow

MODEL = "model-a"
FAILED = "mp-1238899"  # zincblende MnO: its relaxation "fails" in the second model


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def delta(material_id: str) -> float:
    """Deterministic model error in [-0.05, 0.05] eV/atom."""
    return (int(hashlib.sha256(material_id.encode()).hexdigest(), 16) % 101 - 50) / 1000


def _calc(ds, mid, model, n, e_total, status="ok", kind="relax") -> dict:
    return Calculation(
        dataset=ds, material_id=mid, model=model, settings_hash="s1", settings="{}",
        status=status, n_atoms=n, energy_single_point=e_total,
        energy_relaxed=e_total if status == "ok" else None, n_steps=3,
        converged=status == "ok", created_at=now(), calc_kind=kind,
        spacegroup_before=225, spacegroup_after=225 if hash(mid) % 2 else 123,
        rmsd=0.01,
    ).model_dump()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("stats") / "db.duckdb"
    assert run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz").exit_code == 0
    with db.connect(path) as con:
        entries = con.execute(
            "SELECT dataset, material_id, n_atoms, energy_corrected FROM dft_entries "
            "WHERE compat_status = 'ok' ORDER BY material_id").fetchall()
        insert_rows(con, "models", [
            ModelRow(name=name, family="test", version="0", checkpoint="none",
                     energy_convention="mp2020_corrected", registered_at=now()).model_dump()
            for name in (MODEL, "model-b")])
        rows = []
        for ds, mid, n, corr in entries:
            e = corr + delta(mid) * n
            rows.append(_calc(ds, mid, MODEL, n, e))
            rows.append(_calc(ds, mid, "model-b", n, e + 0.01 * n,
                              status="failed" if mid == FAILED else "ok"))
        insert_rows(con, "calculations", rows)
        rebuild_model_hulls(con)
        rebuild_error_rows(con)
    return path


def _pymatgen_hulls(path: Path, model: str, fill: bool = False):
    """Model Ehull and formation energy per material from pymatgen's PhaseDiagram: the
    model's own entries (refs 'model'), and its compounds with the DFT elemental entries;
    ``fill``: failed relaxations enter the hulls with their single-point energy."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT c.material_id, m.composition, c.energy_relaxed / c.n_atoms, "
            "d.energy_corrected / d.n_atoms FROM calculations c "
            "JOIN mp_materials m USING (dataset, material_id) "
            "JOIN dft_entries d USING (dataset, material_id) "
            "WHERE c.model = ? AND c.status = 'ok'", [model]).fetchall()
        fills = con.execute(
            "SELECT c.material_id, m.composition, c.energy_single_point / c.n_atoms "
            "FROM calculations c JOIN mp_materials m USING (dataset, material_id) "
            "WHERE c.model = ? AND c.status <> 'ok'", [model]).fetchall() if fill else []
        dft = con.execute(
            "SELECT m.material_id, m.composition, d.energy_corrected / d.n_atoms "
            "FROM mp_materials m JOIN dft_entries d USING (dataset, material_id)").fetchall()

    def entry(mid, comp, e_per_atom):
        c = Composition(json.loads(comp))
        return ComputedEntry(c, e_per_atom * c.num_atoms, entry_id=mid)

    own = [entry(r[0], r[1], r[2]) for r in rows]
    filled = [entry(r[0], r[1], r[2]) for r in fills]
    pd = PhaseDiagram(own + filled)
    model_refs = {e.entry_id: (pd.get_e_above_hull(e), pd.get_form_energy_per_atom(e))
                  for e in own}
    compounds = [e for e in own if len(e.composition.elements) > 1]
    elements = [entry(*r) for r in dft if len(Composition(json.loads(r[1])).elements) == 1]
    pd2 = PhaseDiagram(compounds + [e for e in filled if len(e.composition.elements) > 1]
                       + elements)
    dft_refs = {e.entry_id: (pd2.get_e_above_hull(e), pd2.get_form_energy_per_atom(e))
                for e in compounds}
    return model_refs, dft_refs


def test_model_hull_equals_pymatgen_phase_diagram(db_path: Path) -> None:
    model_refs, dft_refs = _pymatgen_hulls(db_path, MODEL)
    with duckdb.connect(str(db_path), read_only=True) as con:
        got = {(r[0], r[1]): r[2:] for r in con.execute(
            "SELECT refs, material_id, e_above_hull, e_form_per_atom, complete "
            "FROM model_hull WHERE model = ?", [MODEL]).fetchall()}
    assert len(got) == len(model_refs) + len(dft_refs)
    for refs, expected in (("model", model_refs), ("dft", dft_refs)):
        for mid, (ehull, eform) in expected.items():
            g_ehull, g_eform, complete = got[refs, mid]
            assert complete
            assert g_ehull == pytest.approx(ehull, abs=1e-6), (refs, mid)
            assert g_eform == pytest.approx(eform, abs=1e-6), (refs, mid)
    # the elemental references matter: formation energies differ between the two
    assert max(abs(model_refs[m][1] - dft_refs[m][1]) for m in dft_refs) > 1e-3


def test_missing_entries_make_supersystems_incomplete(db_path: Path) -> None:
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute(
            "SELECT h.refs, m.nelements, h.complete, count(*) FROM model_hull h "
            "JOIN mp_materials m USING (dataset, material_id) WHERE h.model = 'model-b' "
            "GROUP BY ALL ORDER BY ALL").fetchall()
        build = con.execute(
            "SELECT n_entries, n_complete FROM model_hull_builds WHERE model = 'model-b'"
        ).fetchone()
    by = {(r[0], r[1], r[2]): r[3] for r in rows}
    # MnO failed: every Mn-O compound is incomplete, the elements are not
    assert by.get(("model", 2, True), 0) == 0 and by[("model", 2, False)] > 0
    assert by[("model", 1, True)] > 0 and by.get(("model", 1, False), 0) == 0
    assert by.get(("dft", 2, True), 0) == 0
    assert build[1] == by[("model", 1, True)] and build[0] == sum(
        n for (refs, _, _), n in by.items() if refs == "model")
    # incomplete rows are listed in ehull_errors but never counted in the statistics
    with db.connect(db_path, read_only=True) as con:
        flags = con.execute(
            "SELECT hull_complete, count(*) FROM ehull_errors WHERE model = 'model-b' AND "
            "convention = 'model-hull' GROUP BY ALL ORDER BY ALL").fetchall()
        (n_stats,) = con.execute(
            "SELECT n FROM ehull_error_stats WHERE model = 'model-b' AND "
            "convention = 'model-hull' AND grouping = 'all'").fetchone()
    assert dict(flags)[True] == n_stats and dict(flags)[False] > 0


def test_stale_hull_is_never_served(db_path: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "copy.duckdb"
    shutil.copy(db_path, path)
    sql = ("SELECT count(*) FROM ehull_errors WHERE model = ? AND convention = 'model-hull'")
    with db.connect(path) as con:
        before = con.execute(sql, [MODEL]).fetchone()[0]
        assert before > 0
        # a write by hand, with the generation marker a writer of another client bumps
        con.execute("UPDATE calculations SET energy_relaxed = energy_relaxed - 0.5 "
                    "WHERE model = ? AND material_id = (SELECT min(material_id) FROM "
                    "calculations)", [MODEL]).fetchall()
        bump(con, Scope("mp", MODEL, "s1", "relax"))
        assert con.execute(sql, [MODEL]).fetchone()[0] == 0  # stale: nothing served
        # the stored error rows of every convention are stale too; the live view has them
        assert con.execute(sql.replace("model-hull", "dft-hull"), [MODEL]).fetchone()[0] == 0
        live = sql.replace("ehull_errors", "stg_ehull_errors_live").replace("model-hull",
                                                                           "dft-hull")
        assert con.execute(live, [MODEL]).fetchone()[0] > 0
    result = run("--db", path, "query", "ehull-mae", "--by", "model", "--convention",
                 "model-hull")
    assert result.exit_code == 0
    assert ("1 model hull(s) missing or stale and 1 result set(s) changed since their error "
            "rows were stored, their rows are left out - run 'mliapdb ingest hulls'"
            in result.stderr)
    result = run("--db", path, "ingest", "hulls")
    assert result.exit_code == 0, result.output
    assert "1 model hull(s) and 1 error-row build(s) rebuilt" in result.stderr
    with db.connect(path, read_only=True) as con:
        assert con.execute(sql, [MODEL]).fetchone()[0] == before


def test_writes_of_other_clients_are_found_by_verify(db_path: Path, tmp_path: Path) -> None:
    """A write through another DuckDB client bumps no marker: 'ingest hulls --verify'
    compares the inputs by hash and rebuilds what differs, then the stored rows equal the
    live ones again (and the DFT hull its entries)."""
    import shutil

    path = tmp_path / "foreign.duckdb"
    shutil.copy(db_path, path)
    with duckdb.connect(str(path)) as con:  # another client: no mliapdb code runs
        con.execute("UPDATE calculations SET energy_relaxed = energy_relaxed - 0.5 "
                    "WHERE model = 'model-b' AND material_id = (SELECT min(material_id) FROM "
                    "calculations)")
        con.execute("UPDATE dft_hull SET e_above_hull = e_above_hull + 1 "
                    "WHERE material_id = (SELECT min(material_id) FROM dft_hull)")
    result = run("--db", path, "ingest", "hulls")
    assert result.stderr.splitlines()[-1].endswith("all model hulls and error rows are up to "
                                                   "date")
    result = run("--db", path, "ingest", "hulls", "--verify")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"{path}: DFT hull of dataset mp differed from its " \
        "entries, rebuilt"
    # the DFT hull changed: every model hull and error-row build of the dataset is rebuilt
    assert result.stderr.splitlines()[-1] == f"{path}: 2 model hull(s) and 2 error-row " \
        "build(s) rebuilt"
    with db.connect(path, read_only=True) as con:
        assert _all_rows(con) == _all_rows(con, view="stg_ehull_errors_live")
        hull = con.execute("SELECT material_id, e_above_hull FROM dft_hull ORDER BY 1").fetchall()
    with db.connect(db_path, read_only=True) as con:
        assert hull == con.execute(
            "SELECT material_id, e_above_hull FROM dft_hull ORDER BY 1").fetchall()
    result = run("--db", path, "ingest", "hulls", "--verify")
    assert result.stderr.splitlines() == [f"{path}: all model hulls and error rows are up to date"]


def _all_rows(con, where: str = "TRUE", params: list | None = None, view: str = "ehull_errors_all"):
    cur = con.execute(f"SELECT * FROM {view} WHERE {where}", params or [])
    cols = [d[0] for d in cur.description]
    return sorted(tuple(zip(cols, r, strict=True)) for r in cur.fetchall())


def test_stored_error_rows_equal_live_and_are_never_served_stale(db_path: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    from mliapdb.analysis.error_rows import n_stale

    with db.connect(db_path, read_only=True) as con:
        (n_builds,) = con.execute("SELECT count(*) FROM ehull_error_builds").fetchone()
        assert n_builds == 2 and n_stale(con) == 0
        live = _all_rows(con, view="stg_ehull_errors_live")
        assert _all_rows(con) == live and len(live) > 200
    path = tmp_path / "copy.duckdb"
    shutil.copy(db_path, path)
    with db.connect(path) as con:
        # model-b's inputs change: its stored rows are left out, model-a's still served
        con.execute("UPDATE calculations SET rmsd = 0.5 WHERE model = 'model-b'").fetchall()
        bump_calculations(con, con.execute(
            "SELECT * FROM calculations WHERE model = 'model-b'").to_arrow_table())
        assert n_stale(con) == 1
        assert _all_rows(con, "model = 'model-b'") == []
        assert _all_rows(con, "model = 'model-a'") == [
            r for r in live if dict(r)["model"] == "model-a"]
        # a settings change (DOF bins; db_settings is compared as it is) makes every build
        # stale
        con.execute("UPDATE db_settings SET value = '1,10' WHERE key = 'dof_bins'").fetchall()
        assert n_stale(con) == 2 and _all_rows(con) == []
        # model-b's marker moved: its model hull first, then every error-row build
        refresh_derived(con)
        assert n_stale(con) == 0
        rows = _all_rows(con)
        assert rows == _all_rows(con, view="stg_ehull_errors_live")
        assert {dict(r)["dof_bin"] for r in rows} <= {"<1", "1-9", "10+"}
        assert {dict(r)["rmsd"] for r in rows if dict(r)["model"] == "model-b"} == {0.5}
    result = run("--db", path, "query", "ehull-mae", "--by", "model")
    assert result.exit_code == 0 and "left out" not in result.stderr


def test_fill_ins_complete_systems_with_single_points(db_path: Path, tmp_path: Path) -> None:
    """model-b's failed MnO relaxation enters its hull with the single-point energy: the Mn-O
    compounds are complete once fill-ins count, with the values of pymatgen's PhaseDiagram
    over the model's entries plus the fill-in, and counted under model_hull_coverage
    'filled'."""
    import shutil

    model_refs, dft_refs = _pymatgen_hulls(db_path, "model-b", fill=True)
    with db.connect(db_path, read_only=True) as con:
        build = con.execute("SELECT n_filled, n_complete, n_complete_filled "
                            "FROM model_hull_builds WHERE model = 'model-b'").fetchone()
        rows = con.execute("SELECT refs, material_id, e_above_hull, complete, complete_filled "
                           "FROM model_hull WHERE model = 'model-b'").fetchall()
    n = len(model_refs)
    assert build[0] == 1 and build[1] < n and build[2] == n
    assert FAILED not in {r[1] for r in rows}  # a fill-in gets no row of its own
    assert all(r[4] for r in rows) and not all(r[3] for r in rows)
    for refs, mid, ehull, _, _ in rows:
        expected = (model_refs if refs == "model" else dft_refs)[mid][0]
        assert ehull == pytest.approx(expected, abs=1e-6), (refs, mid)
    path = tmp_path / "filled.duckdb"
    shutil.copy(db_path, path)
    sql = ("SELECT n FROM ehull_error_stats WHERE model = 'model-b' AND convention = "
           "'model-hull' AND grouping = 'all'")
    with db.connect(path) as con:
        assert con.execute(sql).fetchone()[0] == build[1]
        con.execute("UPDATE db_settings SET value = 'filled' "
                    "WHERE key = 'model_hull_coverage'").fetchall()
        assert con.execute(sql).fetchone()[0] == n
        # no energy at all (the single point failed): its supersystems stay incomplete,
        # unless DFT puts the entry at least FAR_ABOVE_HULL above the hull
        con.execute("UPDATE calculations SET energy_single_point = NULL "
                    "WHERE model = 'model-b' AND status = 'failed'").fetchall()
        bump(con, Scope("mp", "model-b", "s1", "relax"))  # a write by hand: its marker
        built = "SELECT n_filled, n_complete_filled FROM model_hull_builds WHERE model = 'model-b'"
        rebuild_model_hulls(con)
        assert con.execute(built).fetchone() == (0, build[1])  # MnO: 80 meV/atom above
        con.execute("UPDATE dft_hull SET e_above_hull = ? WHERE material_id = ?",
                    [FAR_ABOVE_HULL, FAILED]).fetchall()
        bump(con, Scope("mp"), ["Mn-O"])
        rebuild_model_hulls(con)
        assert con.execute(built).fetchone() == (0, n)
    result = run("--db", db_path, "query", "ehull-mae", "--by", "model", "--model", "model-b",
                 "--convention", "model-hull", "--hull-coverage", "filled", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["n"] == n
    assert "fill-ins count" in result.stderr


def _rows(path: Path, model: str, convention: str) -> list[dict]:
    with db.connect(path, read_only=True) as con:
        cur = con.execute("SELECT * FROM ehull_errors WHERE model = ? AND convention = ? "
                          "AND hull_complete", [model, convention])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _stats(errors: list[float]) -> dict[str, float]:
    return {
        "n": len(errors),
        "mae": sum(abs(x) for x in errors) / len(errors),
        "rmse": (sum(x * x for x in errors) / len(errors)) ** 0.5,
        "mean_signed_error": sum(errors) / len(errors),
        "median_signed_error": statistics.median(errors),
        "frac_underpredicted": sum(x < 0 for x in errors) / len(errors),
    }


@pytest.mark.parametrize("convention", ["dft-hull", "model-hull", "model-hull-dft-refs"])
@pytest.mark.parametrize("view,subset", [("ehull_error_stats", False),
                                         ("near_hull_stats", True)])
def test_error_stats_views_match_python(db_path: Path, convention: str, view: str,
                                        subset: bool) -> None:
    rows = [r for r in _rows(db_path, MODEL, convention) if r["near_hull"] or not subset]
    assert rows
    model_refs, dft_refs = _pymatgen_hulls(db_path, MODEL)
    reference = {"model-hull": model_refs, "model-hull-dft-refs": dft_refs}.get(convention)
    for r in rows:  # the rows themselves against pymatgen / the fixed-DFT-hull definition
        if reference is not None:
            assert r["model_e_above_hull"] == pytest.approx(reference[r["material_id"]][0],
                                                            abs=1e-6)
        else:
            assert r["e_above_hull_error"] == pytest.approx(delta(r["material_id"]), abs=1e-9)
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        for grouping, value in (("all", "all"), ("dof", str(r["dof"])),
                                ("dof_bin", r["dof_bin"]),
                                ("crystal_system", r["crystal_system"]),
                                ("spacegroup", str(r["spacegroup_number"])),
                                ("nelements", str(r["nelements"]))):
            groups.setdefault((grouping, value), []).append(r["e_above_hull_error"])
    with db.connect(db_path, read_only=True) as con:
        cur = con.execute(f"SELECT * FROM {view} WHERE model = ? AND convention = ?",
                          [MODEL, convention])
        cols = [d[0] for d in cur.description]
        got = {(r["grouping"], r["group_value"]): r
               for r in (dict(zip(cols, x, strict=True)) for x in cur.fetchall())}
    assert set(got) == set(groups)
    for key, errors in groups.items():
        for name, value in _stats(errors).items():
            assert got[key][name] == pytest.approx(value, abs=1e-12), (key, name)
    pairs = [(r["dft_e_above_hull"], r["model_e_above_hull"]) for r in rows]
    scale = sum(d * m for d, m in pairs) / sum(d * d for d, _ in pairs)
    assert got["all", "all"]["ehull_scale"] == pytest.approx(scale, rel=1e-12)


def test_energy_stats_and_classification_match_python(db_path: Path) -> None:
    for convention in ("dft-hull", "model-hull"):
        rows = _rows(db_path, MODEL, convention)
        with db.connect(db_path, read_only=True) as con:
            e = con.execute("SELECT n, e_mae, e_form_mean_signed_error FROM energy_error_stats "
                            "WHERE model = ? AND convention = ?", [MODEL, convention]).fetchone()
            c = con.execute("SELECT tp, fp, tn, fn, precision, recall, f1, daf "
                            "FROM stability_classification WHERE model = ? AND convention = ?",
                            [MODEL, convention]).fetchone()
        assert e[0] == len(rows)
        assert e[1] == pytest.approx(sum(abs(r["e_error"]) for r in rows) / len(rows))
        assert e[2] == pytest.approx(sum(r["e_form_error"] for r in rows) / len(rows))
        truth = [r["dft_e_above_hull"] <= 0 for r in rows]
        pred = [r["model_e_above_hull"] <= 0 for r in rows]
        tp = sum(t and p for t, p in zip(truth, pred, strict=True))
        fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
        fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
        tn = len(rows) - tp - fp - fn
        assert c[:4] == (tp, fp, tn, fn)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        assert c[4] == pytest.approx(precision) and c[5] == pytest.approx(recall)
        assert c[6] == pytest.approx(2 * precision * recall / (precision + recall))
        assert c[7] == pytest.approx(precision / ((tp + fn) / len(rows)))


def test_dof_bins_and_symmetry_changes(db_path: Path) -> None:
    with db.connect(db_path, read_only=True) as con:
        pairs = con.execute("SELECT DISTINCT dof, dof_bin, dof_bin_order FROM ehull_errors "
                            "ORDER BY dof").fetchall()
        sym = con.execute("SELECT n, kept, lowered, frac_kept FROM symmetry_changes "
                          "WHERE model = ?", [MODEL]).fetchone()
    edges = [1, 2, 4, 8, 16, 32]
    for dof, label, order in pairs:
        k = sum(e <= dof for e in edges)
        assert order == k
        lo = edges[k - 1]
        hi = edges[k] - 1 if k < len(edges) else None
        assert label == (f"{lo}+" if hi is None else str(lo) if hi == lo else f"{lo}-{hi}")
    # spacegroup 225 -> 123 (m-3m, 48 -> 4/mmm, 16) is "lowered"
    n, kept, lowered, frac = sym
    assert kept + lowered == n and frac == pytest.approx(kept / n)


def test_query_commands(db_path: Path) -> None:
    rows = _rows(db_path, MODEL, "dft-hull")
    near = [r["e_above_hull_error"] for r in rows if r["dft_e_above_hull"] < 0.05]
    result = run("--db", db_path, "query", "near-hull", "--model", MODEL, "--format", "json")
    assert result.exit_code == 0, result.output
    (got,) = json.loads(result.stdout)
    assert got["n"] == len(near)
    assert got["mae_meV"] == pytest.approx(1000 * sum(abs(x) for x in near) / len(near),
                                           rel=1e-12)
    assert "near-hull materials (DFT Ehull < 50 meV/atom)" in result.stderr
    result = run("--db", db_path, "query", "ehull-mae", "--by", "dof-bin", "--bins", "1,10",
                 "--model", MODEL, "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["1-9", "10+"]
    assert sum(int(line.split(",")[2]) for line in lines[1:]) == len(rows)
    bad = run("--db", db_path, "query", "ehull-mae", "--bins", "4,2")
    assert bad.exit_code == 1 and bad.stderr == (
        "Error: bad --bins '4,2' - write increasing integers like 1,2,4,8,16\n")
    for command in ("energy-error", "stability", "symmetry"):
        result = run("--db", db_path, "query", command, "--format", "csv")
        assert result.exit_code == 0, (command, result.output)
        assert result.stdout.splitlines()[1].startswith(f"{MODEL},")
    stab = run("--db", db_path, "query", "stability", "--convention", "model-hull",
               "--model", "model-b", "--format", "json")
    assert stab.exit_code == 0 and json.loads(stab.stdout)[0]["n"] < len(rows)


def test_relaxation_effect_matches_python(db_path: Path, tmp_path: Path) -> None:
    """Single points above the relaxed energies (deterministic offsets): the paired view
    equals the same statistics computed from the two kinds' ehull_errors rows."""
    import shutil

    path = tmp_path / "paired.duckdb"
    shutil.copy(db_path, path)
    with db.connect(path) as con:
        relaxed = con.execute(
            "SELECT dataset, material_id, n_atoms, energy_relaxed FROM calculations "
            "WHERE model = ? AND status = 'ok'", [MODEL]).fetchall()
        insert_rows(con, "calculations", [
            {**_calc(ds, mid, MODEL, n, e + abs(delta(mid + "sp")) * n, kind="single_point"),
             "settings_hash": "s0"} for ds, mid, n, e in relaxed])
        rebuild_model_hulls(con)
        rebuild_error_rows(con)
    for convention in ("dft-hull", "model-hull"):
        with db.connect(path, read_only=True) as con:
            cur = con.execute(
                "SELECT calc_kind, material_id, dof_bin, e_above_hull_error, model_e_per_atom "
                "FROM ehull_errors WHERE model = ? AND convention = ? AND hull_counted",
                [MODEL, convention])
            rows = cur.fetchall()
            got = {r[0]: r[1:] for r in con.execute(
                "SELECT group_value, n, single_point_mae, relaxed_mean_signed_error, "
                "relaxed_frac_underpredicted, median_relaxation_energy FROM "
                "relaxation_effect_stats WHERE model = ? AND convention = ?",
                [MODEL, convention]).fetchall()}
        sp = {r[1]: r for r in rows if r[0] == "single_point"}
        pairs = [(sp[r[1]], r) for r in rows if r[0] == "relax" and r[1] in sp]
        groups: dict[str, list] = {"all": pairs}
        for pair in pairs:
            groups.setdefault(pair[1][2], []).append(pair)
        assert set(got) == set(groups)
        for group, members in groups.items():
            n, sp_mae, rx_mean, rx_under, median_e = got[group]
            assert n == len(members)
            assert sp_mae == pytest.approx(sum(abs(s[3]) for s, _ in members) / n)
            assert rx_mean == pytest.approx(sum(r[3] for _, r in members) / n)
            assert rx_under == pytest.approx(sum(r[3] < 0 for _, r in members) / n)
            assert median_e == pytest.approx(statistics.median(r[4] - s[4] for s, r in members))
        assert got["all"][4] < 0  # the relaxed energies are the lower ones
    result = run("--db", path, "query", "relax-effect", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith(f"{MODEL},{len(sp)},")
    bad = run("--db", path, "query", "relax-effect", "--by", "spacegroup")
    assert bad.exit_code == 2
    from mliapdb.analysis.report import build_report

    md = build_report(path, tmp_path / "report", conventions=["dft-hull"]).report.to_markdown()
    section = md[md.index("## Relaxation effect"):]
    assert re.search(rf"\| {MODEL} +\| dft-hull +\| +{len(sp)} \|", section)
    assert "### Per DOF bin (dft-hull)" in section
