"""``mliapdb report`` on a real ingested dataset (Mn-O, 90 materials) with two synthetic
models whose Ehull errors are known by construction: files, figures (size = panel count),
the numbers in report.md against a direct computation, the HTML, and one-line errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from mliapdb.analysis import figures
from mliapdb.analysis import report as rep
from mliapdb.analysis.error_rows import rebuild_error_rows
from mliapdb.cli.main import cli
from mliapdb.store.database import connect, insert_rows, now
from mliapdb.store.tables import Calculation, ModelRow

MODELS = ("model-a", "model-b")
EDGES = (1, 2, 4, 8, 16, 32)  # default dof_bins
LABELS = ("1", "2-3", "4-7", "8-15", "16-31", "32+")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def delta(model: str, i: int, dof: int) -> float:
    """Designed error, eV/atom (model - DFT): model-a underpredicts, worse at high DOF;
    model-b scatters around +0.005 (never exactly 0)."""
    if model == "model-a":
        return round(-0.010 - 0.0006 * dof + ((i * 7) % 5 - 2) / 200, 6)
    return round(((i * 13) % 9 - 4) / 100 + 0.005, 6)


@pytest.fixture(scope="module")
def study(tmp_path_factory, mp_dir: Path) -> dict:
    """The database and, per material, (dof, DFT Ehull, designed errors)."""
    path = tmp_path_factory.mktemp("report") / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")
               ).exit_code == 0
    with duckdb.connect(str(path)) as con:
        picked = con.execute(
            "SELECT e.dataset, e.material_id, e.n_atoms, e.energy_corrected, m.dof, "
            "m.spacegroup_number, d.e_above_hull FROM dft_entries e "
            "JOIN materials m USING (dataset, material_id) "
            "JOIN dft_stability d USING (dataset, material_id) ORDER BY e.material_id"
        ).fetchall()
        insert_rows(con, "models", [
            ModelRow(name=name, family="test", version="1.0", checkpoint="none",
                     training_set="MPtrj", energy_convention="mp2020_corrected",
                     registered_at=now()).model_dump()
            for name in MODELS
        ])
        rows, materials = [], []
        for i, (ds, mid, n, corr, dof, sg, ehull) in enumerate(picked):
            errors = {m: delta(m, i, dof) for m in MODELS}
            materials.append((dof, ehull, errors))
            for model, d in errors.items():
                rows.append(Calculation(
                    dataset=ds, material_id=mid, model=model, settings_hash="abc",
                    settings="{}", status="ok", n_atoms=n, energy_single_point=corr + d * n,
                    energy_relaxed=corr + d * n, n_steps=1, converged=True, created_at=now(),
                    spacegroup_before=sg, spacegroup_after=sg if i % 4 else 1,
                    rmsd=0.01 * (i % 3),
                ).model_dump())
        insert_rows(con, "calculations", rows)
    assert run("--db", str(path), "ingest", "hulls").exit_code == 0
    return {"path": path, "materials": materials}


def _table(md: str, section: str, title: str) -> list[dict[str, str]]:
    """The rows of the Markdown table ``### title`` under ``## section``."""
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = body.split(f"### {title}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = [line for line in lines[start:] if line.startswith("|")]
    table = table[: next((i for i, line in enumerate(lines[start:]) if not line), len(table))]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return [dict(zip(rows[0], r, strict=True)) for r in rows[2:]]


def _mev(values: list[float]) -> tuple[float, float, float]:
    """(MAE, mean signed error, fraction underpredicted) in meV/atom of errors in eV/atom."""
    return (1000 * sum(map(abs, values)) / len(values), 1000 * sum(values) / len(values),
            sum(v < 0 for v in values) / len(values))


def _bin(dof: int) -> str:
    return LABELS[sum(e <= dof for e in EDGES) - 1]


def _png_shape(n_panels: int) -> tuple[int, int]:
    """(height, width) px of a figure with ``n_panels`` in one row."""
    w, h = figures.SINGLE_SIZE if n_panels == 1 else (figures.PANEL_SIZE[0] * n_panels,
                                                       figures.PANEL_SIZE[1])
    return round(h * figures.DPI), round(w * figures.DPI)


@pytest.fixture(scope="module")
def full(study: dict, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("out")
    result = run("--db", str(study["path"]), "report", "--out", str(out))
    assert result.exit_code == 0, result.output
    return {"out": out, "result": result, "md": (out / "report.md").read_text()}


def test_cli_writes_report_and_figures(full: dict) -> None:
    out, result = full["out"], full["result"]
    pngs = [f"{kind}_{c}.png" for c in rep.CONVENTIONS
            for kind in ("parity", "ehull_error_vs_dof", "frac_under_vs_dof", "near_hull_hist")]
    assert result.stdout.splitlines() == [
        str(out / name) for name in ["report.md", "report.html",
                                     *[n for png in pngs for n in (png, png[:-4] + ".svg")]]
    ]
    assert result.stderr.startswith(
        "report: 2 model(s), relax calculations, 90 of 90 materials, conventions dft-hull, "
        "model-hull, model-hull-dft-refs\n"
    )
    assert (out / "report.md").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert len(html) > 10_000 and html.startswith("<!DOCTYPE html>")
    panels = {"parity": 2, "ehull_error_vs_dof": 2, "frac_under_vs_dof": 1, "near_hull_hist": 1}
    for name in pngs:
        assert (out / name).stat().st_size > 10_000
        image = imread(out / name)
        assert image.shape[:2] == _png_shape(panels[name.rsplit("_", 1)[0]]), name
        assert f'<img src="{name}"' in html and f"]({name})" in full["md"]
    assert "<table>" in html and "<td>model-a</td>" in html


def test_report_numbers_match_direct_computation(study: dict, full: dict) -> None:
    md, materials = full["md"], study["materials"]
    assert "- **materials**: 90 in the database (datasets: mp); 90 with relax results" in md
    section = "Convention dft-hull"
    overall = {r["model"]: r for r in _table(md, section, "Ehull error by model")}
    by_bin = {(r["DOF bin"], r["model"]): r for r in _table(md, section, "Ehull error by DOF bin")}
    near = {r["model"]: r for r in _table(md, section, "Near-hull materials: Ehull error by model")}
    stability = {r["model"]: r for r in _table(md, section, "Stability classification")}
    for model in MODELS:
        errors = [e[model] for _, _, e in materials]
        mae, mse, frac = _mev(errors)
        row = overall[model]
        assert row["n"] == "90"
        assert float(row["MAE (meV/atom)"]) == pytest.approx(mae, abs=0.051)
        assert float(row["mean signed error (meV/atom)"]) == pytest.approx(mse, abs=0.051)
        assert float(row["frac underpredicted"]) == pytest.approx(frac, abs=5e-4)
        for label in LABELS:
            errs = [e[model] for dof, _, e in materials if _bin(dof) == label]
            row = by_bin[(label, model)]
            assert int(row["n"]) == len(errs)
            assert float(row["MAE (meV/atom)"]) == pytest.approx(_mev(errs)[0], abs=0.051)
        errs = [e[model] for _, ehull, e in materials if ehull < 0.05]
        assert int(near[model]["n"]) == len(errs)
        assert float(near[model]["mean signed error (meV/atom)"]) == pytest.approx(
            _mev(errs)[1], abs=0.051)
        tp = sum(h <= 0 and h + e[model] <= 0 for _, h, e in materials)
        fp = sum(h > 0 and h + e[model] <= 0 for _, h, e in materials)
        fn = sum(h <= 0 and h + e[model] > 0 for _, h, e in materials)
        assert (stability[model]["TP"], stability[model]["FP"], stability[model]["FN"]) == (
            str(tp), str(fp), str(fn))
    assert len(_table(md, "Symmetry changes", "Symmetry after relaxation")) == 2


def test_study_claims(study: dict, full: dict) -> None:
    md, materials = full["md"], study["materials"]
    high = [e["model-a"] for dof, _, e in materials if dof > rep.HIGH_DOF]
    low = [e["model-a"] for dof, _, e in materials if dof <= rep.HIGH_DOF]
    claims = dict(re.findall(r"^- model-a, dft-hull: \((\w)\) (.*)$", md, re.MULTILINE))
    assert claims["a"].startswith("Ehull systematically underpredicted: yes (")
    assert claims["b"].startswith("MAE > 30 meV/atom: no (")
    # 13 materials at DOF > 40 (< fair.N_MIN) and an interval across 40 meV/atom
    numbers = re.search(
        r"inconclusive \(n = 13 < 30\) \(MAE (-?[\d.]+) meV/atom at DOF > 40, n = (\d+); "
        r"(-?[\d.]+) meV/atom at DOF <= 40, n = (\d+); intervals \[", claims["c"])
    assert numbers, claims["c"]
    assert float(numbers[1]) == pytest.approx(_mev(high)[0], abs=0.051)
    assert int(numbers[2]) == len(high) and int(numbers[4]) == len(low)
    assert float(numbers[3]) == pytest.approx(_mev(low)[0], abs=0.051)
    assert claims["d"].startswith("near-hull materials underpredicted: yes (")
    b_claims = dict(re.findall(r"^- model-b, dft-hull: \((\w)\) (.*)$", md, re.MULTILINE))
    # mean signed error +5.0 meV/atom, interval [-0.6, 10.4]: neither side excluded
    assert b_claims["a"].startswith("Ehull systematically underpredicted: inconclusive (")
    assert md.count(", model-hull: (") == 8 and md.count(", model-hull-dft-refs: (") == 8


def test_build_report_one_model_one_convention(study: dict, tmp_path: Path) -> None:
    result = rep.build_report(study["path"], tmp_path, conventions=["dft-hull"],
                              models=["model-a"])
    assert [(f.name, f.n_panels) for f in result.figures] == [
        ("parity_dft-hull.png", 1), ("ehull_error_vs_dof_dft-hull.png", 1),
        ("frac_under_vs_dof_dft-hull.png", 1), ("near_hull_hist_dft-hull.png", 1),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.md", "report.html"] + [n for f in result.figures for n in (f.name, f.svg)])
    md = (tmp_path / "report.md").read_text()
    assert "model-b" not in md and "model-hull" not in md
    assert imread(tmp_path / "parity_dft-hull.png").shape[:2] == _png_shape(1)


def test_errors_are_one_line(study: dict, tmp_path: Path) -> None:
    db = str(study["path"])
    result = run("--db", db, "report", "--out", str(tmp_path / "a"), "--model", "chgnet-9")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: no model 'chgnet-9' in the database")
    result = run("--db", db, "report", "--out", str(tmp_path / "b"), "--kind", "single-point")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no usable single-point calculations of any model in DB (have: relax) - run "
        "'mliapdb ingest relax --kind single-point --model MODEL' first\n"
    )
    copy = tmp_path / "copy.duckdb"
    shutil.copy(study["path"], copy)
    with connect(copy) as con:  # model-b's model hulls gone: model-a only
        con.execute("DELETE FROM model_hull_builds WHERE model = 'model-b'")
        rebuild_error_rows(con)  # its error rows stored again, without model-hull rows
    result = rep.build_report(copy, tmp_path / "partial", conventions=["model-hull"])
    assert [f.n_panels for f in result.figures] == [1, 1, 1, 1]
    md = (tmp_path / "partial" / "report.md").read_text()
    assert "No complete model-hull results for: model-b." in md
    assert "- model-b, model-hull: no complete results" in md
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM model_hull_builds")
    result = run("--db", str(copy), "report", "--out", str(tmp_path / "c"),
                 "--convention", "model-hull")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: no complete model-hull results for relax")
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM calculations")  # another client: no marker
    assert run("--db", str(copy), "ingest", "hulls", "--verify").exit_code == 0
    result = run("--db", str(copy), "report", "--out", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no model calculations in DB - run 'mliapdb ingest relax --model MODEL' first\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "d").exists()


def test_models_table_says_which_entries_a_no_u_model_is_compared_on(
        study: dict, tmp_path: Path) -> None:
    path = tmp_path / "no-u.duckdb"
    shutil.copy(study["path"], path)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE models SET trained_with_u = false WHERE name = 'model-b'")
    # model-b's signature changed: its hull and error rows are stale until rebuilt
    assert run("--db", str(path), "ingest", "hulls").exit_code == 0
    rep.build_report(path, tmp_path / "out", conventions=["dft-hull"])
    md = (tmp_path / "out" / "report.md").read_text()
    rows: dict[str, str] = {}  # the first table, Models
    for r in md.splitlines():
        if r.startswith("| model-"):
            rows.setdefault(r.split("|")[1].strip(), r)
    cells = {m: [c.strip() for c in r.split("|")] for m, r in rows.items()}
    assert "GGA entries only (trained without +U)" in cells["model-b"]
    assert "GGA and GGA+U entries" in cells["model-a"]
    assert "A model trained without +U is compared only on the entries MP computed" in md
