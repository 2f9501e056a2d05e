"""Suspicious relaxations (``stg_suspicious``, ``ehull_errors.suspicious``) and
``--exclude-suspicious`` of every statistics query, against a direct Python computation from
the calculations, on a real database made with the CLI: the Mn-O entries of <= 6 sites,
CHGNet 0.3.0 single points and relaxations (fmax 0.3; two O2 cells expand by 38 % and 65 %),
and mp-1221574 (MnO2) given the values its full relaxation reaches (volume ratio 0.646, RMSD
0.761 A, 1.004 eV/atom below its single point; measured with fmax 0.05, 23 s) by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from trust import build_db, run

from mliapdb.cli.main import cli

MODEL = "chgnet-0.3.0"
CRAFTED = "mp-1221574"



@pytest.fixture(scope="module")
def db(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("suspicious") / "db.duckdb"
    steps = [
        ("ingest", "entries", mp_dir / "Mn_O_entries.json.gz"),
        ("ingest", "relax", "--model", MODEL, "--kind", "single-point", "--max-sites", "6"),
        ("ingest", "relax", "--model", MODEL, "--max-sites", "6", "--fmax", "0.3"),
    ]
    build_db(path, *steps)
    with duckdb.connect(str(path)) as con:
        n = con.execute(
            "UPDATE calculations SET volume_ratio = 0.645737, rmsd = 0.760809, "
            "energy_relaxed = energy_single_point - 1.00399 * n_atoms "
            "WHERE material_id = ? AND calc_kind = 'relax' RETURNING 1", [CRAFTED]).fetchall()
        assert len(n) == 1
    result = run("--db", path, "ingest", "hulls")  # the error rows are stale until then
    assert result.exit_code == 0, result.output
    return path


def copy(db: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy.duckdb"
    shutil.copy(db, out)
    return out


def flags(path: Path, volume=0.2, rmsd=0.5, drop=0.3) -> dict:
    """Material id -> reasons, computed here from the calculations."""
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT material_id, volume_ratio, rmsd, energy_single_point, energy_relaxed, "
            "n_atoms FROM calculations WHERE calc_kind = 'relax' AND status = 'ok'").fetchall()
    out = {}
    for mid, vr, rm, sp, rx, n in rows:
        why = [name for name, hit in (("volume", abs(vr - 1) > volume), ("rmsd", rm > rmsd),
                                      ("energy_drop", (rx - sp) / n < -drop)) if hit]
        if why:
            out[mid] = ",".join(why)
    return out


def error_rows(path: Path) -> list[dict]:
    with duckdb.connect(str(path), read_only=True) as con:
        cur = con.execute("SELECT * FROM ehull_errors WHERE convention = 'dft-hull'")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def query(path: Path, *args) -> tuple[list[dict], str]:
    result = CliRunner().invoke(cli, ["--db", str(path), "query", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def mev(x) -> float:
    return round(float(np.mean(x)) * 1000, 2)


def test_flags_equal_direct_computation(db: Path) -> None:
    expect = flags(db)
    assert expect[CRAFTED] == "volume,rmsd,energy_drop"
    # real CHGNet relaxations: the O2 cells far above the hull expand by 65 % and 38 %
    assert expect["mp-1065697"] == "volume" and expect["mp-1058623"] == "volume"
    rows = error_rows(db)
    got = {r["material_id"]: r["suspicious_reason"] for r in rows
           if r["calc_kind"] == "relax" and r["suspicious"]}
    assert got == expect
    for r in rows:
        assert r["suspicious"] == (r["calc_kind"] == "relax" and r["material_id"] in expect)
        assert (r["suspicious_reason"] is None) == (not r["suspicious"])


def _counted(rows, kind="relax"):
    return [r for r in rows if r["calc_kind"] == kind and r["hull_counted"]]


def test_exclude_every_query(db: Path) -> None:
    suspicious = flags(db)
    rows = error_rows(db)
    relax = _counted(rows)
    kept = [r for r in relax if r["material_id"] not in suspicious]
    n_out = len(relax) - len(kept)
    assert n_out == len(suspicious) == 3
    note = f"--exclude-suspicious: {n_out} suspicious relaxation row(s) left out"

    out, err = query(db, "ehull-mae", "--by", "model", "--exclude-suspicious")
    assert note in err and "volume 3, rmsd 1, energy_drop 1" in err
    e = [r["e_above_hull_error"] for r in kept]
    assert [(o["model"], o["n"]) for o in out] == [(MODEL, len(kept))]
    assert out[0]["mae_meV"] == pytest.approx(mev(np.abs(e)), abs=0.011)
    assert out[0]["mean_signed_error_meV"] == pytest.approx(mev(e), abs=0.011)
    plain, err = query(db, "ehull-mae", "--by", "model")
    assert plain[0]["n"] == len(relax) and "suspicious" not in err
    assert plain[0]["mae_meV"] == pytest.approx(
        mev([abs(r["e_above_hull_error"]) for r in relax]), abs=0.011)

    out, err = query(db, "near-hull", "--threshold", "2", "--exclude-suspicious")
    near = [r for r in kept if r["dft_e_above_hull"] < 2]
    assert note in err and out[0]["n"] == len(near)
    out, err = query(db, "energy-error", "--exclude-suspicious", "--ci", "0.9")
    assert note in err and out[0]["n"] == len(kept)
    assert out[0]["e_mae_meV"] == pytest.approx(
        mev([abs(r["e_error"]) for r in kept]), abs=0.011)
    out, err = query(db, "stability", "--exclude-suspicious")
    assert note in err and out[0]["n"] == len(kept)
    assert out[0]["tn"] == sum(not r["model_stable"] and not r["dft_stable"] for r in kept)
    out, err = query(db, "symmetry", "--exclude-suspicious")
    sym = [r for r in kept if r["symmetry_change"] is not None]
    assert note in err and out[0]["n"] == len(sym)
    assert out[0]["mean_rmsd_A"] == pytest.approx(
        round(float(np.mean([r["rmsd"] for r in sym])), 4), abs=1.1e-4)
    sp = {r["material_id"]: r for r in _counted(rows, "single_point")}
    pairs = [(r, sp[r["material_id"]]) for r in kept if r["material_id"] in sp]
    out, err = query(db, "relax-effect", "--exclude-suspicious")
    assert note in err and out[0]["n"] == len(pairs)
    assert out[0]["mean_relaxation_energy_meV"] == pytest.approx(
        mev([r["model_e_per_atom"] - s["model_e_per_atom"] for r, s in pairs]), abs=0.011)
    # single points are never suspicious
    out, err = query(db, "ehull-mae", "--by", "model", "--kind", "single-point",
                     "--exclude-suspicious")
    assert "0 suspicious relaxation row(s) left out" in err
    assert out[0]["n"] == len(_counted(rows, "single_point"))


def test_thresholds_from_db_settings(db: Path, tmp_path: Path) -> None:
    path = copy(db, tmp_path)
    with duckdb.connect(str(path)) as con:
        for key, value in (("suspicious_volume_change", "0.5"), ("suspicious_rmsd", "1"),
                           ("suspicious_energy_drop", "0.9")):
            con.execute("INSERT OR REPLACE INTO db_settings VALUES (?, ?)", [key, value])
    expect = flags(path, 0.5, 1.0, 0.9)
    assert expect == {"mp-1065697": "volume", CRAFTED: "energy_drop"}
    got = {r["material_id"]: r["suspicious_reason"] for r in error_rows(path)
           if r["suspicious"]}
    assert got == expect
    out, err = query(path, "ehull-mae", "--by", "model", "--exclude-suspicious")
    assert "2 suspicious relaxation row(s) left out (volume 1, energy_drop 1)" in err
    assert "|volume ratio - 1| > 0.5, RMSD > 1 A" in err and "< -0.9 eV/atom" in err
    assert out[0]["n"] == len(_counted(error_rows(path))) - 2


def test_report_states_the_count(db: Path, tmp_path: Path) -> None:
    result = run("--db", db, "report", "--out", tmp_path / "r", "--convention", "dft-hull")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "3 counted relaxation(s) (dft-hull) are flagged suspicious" in text
    assert "of them suspicious" in text
