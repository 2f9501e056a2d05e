"""The study's predictions file and document: real CHGNet 0.3.0 single points, relaxations
and symmetry-constrained relaxations on shared Mn-O entries collected into a predictions
file, rebuilt into a fresh database (same Ehull errors as the original) and rendered with
numbers equal to ``mliapdb query ehull-mae --ci 0.95``; and the committed docs/study.md is
what its committed predictions file rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymatgen.core import Structure

from mliapdb.analysis import study
from mliapdb.store import database as db
from tests.trust import run

MODEL = "chgnet-0.3.0"
ROOT = Path(__file__).resolve().parents[1]
SMALL = (study.StudyDataset("mp-2021", ("Mn_O_entries.json.gz",), "test: shared Mn-O"),)


def ok(*args: object) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fetch(path: Path, sql: str) -> list[tuple]:
    con = db.connect(path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def computed(tmp_path_factory, mp_dir: Path) -> Path:
    """Mn-O entries with real CHGNet single points (6 smallest), relaxations and
    symmetry-constrained relaxations (three cells that relax in under 100 steps)."""
    path = tmp_path_factory.mktemp("study") / "computed.duckdb"
    ok("--db", path, "ingest", "entries", "--dataset", "mp-2021",
       mp_dir / "Mn_O_entries.json.gz")
    ok("--db", path, "ingest", "relax", "--model", MODEL, "--kind", "single-point",
       "--max-sites", 4, "--limit", 6)
    for kind in ("relax", "relax-fixsym"):
        ok("--db", path, "ingest", "relax", "--model", MODEL, "--kind", kind, "--material-id",
           "mp-1055908", "--material-id", "mp-1056059", "--material-id", "mp-1009490")
    return path


def test_collect_rebuild_render(computed: Path, mp_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "study" / "predictions.csv.gz"
    assert study.collect([computed], out, log=lambda _: None) == 12
    rows = study.read_predictions(out)
    assert sorted((r["kind"], r["status"]) for r in rows) == sorted(
        [("single-point", "ok")] * 6 + [("relax", "ok")] * 3 + [("relax-fixsym", "ok")] * 3)
    settings = json.loads((out.parent / "settings.json").read_text())
    assert settings[f"{MODEL} relax-fixsym"]["settings"]["fix_symmetry"] is True
    # the compact relaxed structures are the stored ones (8 decimals)
    original = dict(((m, k), s) for m, k, s in fetch(
        computed, "SELECT material_id, calc_kind, relaxed_structure FROM calculations WHERE "
        "relaxed_structure IS NOT NULL"))
    for r in rows:
        if r["relaxed_structure"]:
            kept = Structure.from_dict(json.loads(r["relaxed_structure"]))
            full = Structure.from_str(original[(r["material_id"], study.CALC_KIND[r["kind"]])],
                                      fmt="json")
            assert abs(kept.lattice.matrix - full.lattice.matrix).max() < 1e-8
            assert abs(kept.frac_coords - full.frac_coords).max() < 1e-8

    rebuilt = tmp_path / "rebuilt.duckdb"
    md = tmp_path / "study.md"
    text = study.build(mp_dir.parent, out, md, db_path=rebuilt, log=lambda _: None,
                       datasets=SMALL)
    assert md.read_text() == text
    errors = ("SELECT material_id, calc_kind, convention, e_above_hull_error, volume_ratio "
              "FROM ehull_errors JOIN calculations USING (dataset, material_id, model, "
              "settings_hash, calc_kind) ORDER BY ALL")
    before, after = fetch(computed, errors), fetch(rebuilt, errors)
    assert [r[:3] for r in after] == [r[:3] for r in before] and len(after) > 12
    for a, b in zip(after, before, strict=True):
        assert a[3] == pytest.approx(b[3], abs=1e-12)
        assert (a[4] is None) == (b[4] is None)
        if a[4] is not None:
            assert a[4] == pytest.approx(b[4], abs=1e-7)

    # the document's numbers are the query's: one dataset, so the same materials
    query = json.loads(ok("--db", computed, "query", "ehull-mae", "--by", "model", "--kind",
                          "single-point", "--convention", "dft-hull", "--ci", "0.95",
                          "--format", "json"))
    (q,) = query
    line = next(x for x in text.splitlines() if x.startswith(f"| {MODEL} | dft-hull | 6 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]

    def numbers(cell: str) -> list[float]:
        return [float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split()]

    # the query has every digit, the document 0.1 meV/atom and 0.001 of a fraction
    for cell, names in ((cells[3], ("mae_meV", "mae_lo_meV", "mae_hi_meV")),
                        (cells[4], ("mean_signed_error_meV", "mean_signed_error_lo_meV",
                                    "mean_signed_error_hi_meV"))):
        assert numbers(cell) == pytest.approx([q[n] for n in names], abs=0.056), (cell, q)
    assert numbers(cells[5]) == pytest.approx(
        [q["frac_underpredicted"], q["frac_underpredicted_lo"], q["frac_underpredicted_hi"]],
        abs=0.0005)
    assert "## Relaxations: free against symmetry-constrained" in text
    assert f"### {MODEL}: single-point vs relax vs relax-fixsym on the same materials" in text


def test_collect_add_keeps_the_rows_a_later_run_lacks(computed: Path, tmp_path: Path) -> None:
    """A run continued in a later session: ``--add`` keeps the file's rows the databases do
    not hold, and refuses a model and kind under other settings."""
    import shutil

    from mliapdb.errors import MliapdbError

    out = tmp_path / "study" / "predictions.csv.gz"
    study.collect([computed], out, log=lambda _: None)
    full, full_settings = out.read_bytes(), (out.parent / "settings.json").read_text()
    part = tmp_path / "part.duckdb"
    shutil.copy(computed, part)
    con = db.connect(part)
    con.execute("DELETE FROM calculations WHERE calc_kind = 'relax' OR material_id = "
                "(SELECT min(material_id) FROM calculations WHERE calc_kind = 'single_point')")
    con.close()
    assert study.main(["collect", "--db", str(part), "--out", str(out), "--add"]) == 0
    assert out.read_bytes() == full
    assert (out.parent / "settings.json").read_text() == full_settings
    # without --add only its own: 12 less 3 relax and the first material (mp-1009490:
    # single point and relax-fixsym)
    assert study.collect([part], out, log=lambda _: None) == 7
    assert json.loads((out.parent / "settings.json").read_text()).keys() == {
        f"{MODEL} single-point", f"{MODEL} relax-fixsym"}

    settings = json.loads(full_settings)
    settings[f"{MODEL} single-point"]["settings_hash"] = "0" * 16
    (out.parent / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(MliapdbError, match="single-point: the databases computed it under"):
        study.collect([part], out, log=lambda _: None, add=True)


def test_preferred_dataset_counts_each_material_once() -> None:
    held = {"mp-1": {"mp-2021", "mp-2025"}, "mp-2": {"mp-2021", "mp-2021-emmet"},
            "mp-3": {"mp-2021-emmet"}, "mp-4": {"x", "mp-2021-emmet"}}
    assert study.chosen_datasets(held) == {"mp-1": "mp-2025", "mp-2": "mp-2021",
                                           "mp-3": "mp-2021-emmet", "mp-4": "mp-2021-emmet"}


def test_committed_study_is_what_its_predictions_rebuild(data_dir: Path, tmp_path: Path) -> None:
    """docs/study.md is generated: rebuilding it from docs/study/predictions.csv.gz and the
    shared entries gives the committed text (`make study`)."""
    text = study.build(data_dir, ROOT / "docs" / "study" / "predictions.csv.gz",
                       tmp_path / "study.md", log=lambda _: None)
    assert text == (ROOT / "docs" / "study.md").read_text(), (
        "docs/study.md is stale - run 'make study'")
