"""``--common``, ``--ci`` / ``--seed`` and repeatable ``--by`` (with ``hubbard``) of every
statistics query, against a direct Python computation from the per-row errors (``SELECT *
FROM ehull_errors``), on a real database made with the CLI: the Mn-O-Y entries, CHGNet 0.3.0
and 0.2.0 single points (different material sets, so that --common matters) and a few
relaxations."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from trust import build_db, run

from mliapdb.analysis.fair import N_BOOT
from mliapdb.cli.main import cli

MODELS = ("chgnet-0.2.0", "chgnet-0.3.0")



@pytest.fixture(scope="module")
def db(tmp_path_factory, mp_dir: Path) -> dict:
    path = tmp_path_factory.mktemp("fair") / "db.duckdb"
    steps = [
        ("ingest", "entries", mp_dir / "Mn_O_Y_entries.json.gz"),
        ("ingest", "relax", "--model", "chgnet-0.3.0", "--kind", "single-point",
         "--max-sites", "8", "--limit", "30"),
        ("ingest", "relax", "--model", "chgnet-0.2.0", "--kind", "single-point",
         "--max-sites", "8", "--limit", "24"),
        # relaxations to a loose fmax: a few seconds
        ("ingest", "relax", "--model", "chgnet-0.3.0", "--max-sites", "4", "--limit", "5",
         "--fmax", "0.3"),
        ("ingest", "relax", "--model", "chgnet-0.2.0", "--max-sites", "4", "--limit", "4",
         "--fmax", "0.3"),
    ]
    build_db(path, *steps)
    with duckdb.connect(str(path), read_only=True) as con:
        cur = con.execute(
            "SELECT e.*, coalesce(d.is_hubbard, d.run_type = 'GGA+U') AS is_hubbard "
            "FROM ehull_errors e JOIN dft_entries d USING (dataset, material_id)")
        names = [c[0] for c in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {"path": path, "rows": rows}


def query(db: dict, *args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["--db", str(db["path"]), "query", *args,
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def counted(db: dict, kind: str = "single_point", convention: str = "dft-hull") -> list[dict]:
    return [r for r in db["rows"] if r["calc_kind"] == kind and r["convention"] == convention
            and r["hull_counted"]]


def common_set(rows: list[dict], series=("model",)) -> set:
    sets = defaultdict(set)
    for r in rows:
        sets[tuple(r[k] for k in series)].add((r["dataset"], r["material_id"]))
    return set.intersection(*sets.values())


def hub(r: dict) -> str:
    return "GGA+U" if r["is_hubbard"] else "GGA"


def groupby(rows: list[dict], *keys) -> dict:
    out = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["dataset"], r["material_id"])):
        out[tuple(k(r) if callable(k) else r[k] for k in keys)].append(r)
    return out


def mev(x) -> float:
    return round(float(np.mean(x)) * 1000, 2)


def test_fixture_has_different_material_sets(db: dict) -> None:
    n = {m: sum(r["model"] == m for r in counted(db)) for m in MODELS}
    assert n == {"chgnet-0.2.0": 24, "chgnet-0.3.0": 30}
    assert {hub(r) for r in counted(db)} == {"GGA", "GGA+U"}


@pytest.mark.parametrize("convention", ["dft-hull", "model-hull"])
def test_common_equals_intersection(db: dict, convention: str) -> None:
    rows = counted(db, convention=convention)
    shared = common_set(rows)
    union = {(r["dataset"], r["material_id"]) for r in rows}
    out = query(db, "ehull-mae", "--by", "model", "--kind", "single-point", "--common",
                "--convention", convention)
    assert {o["model"] for o in out} == {r["model"] for r in rows}
    for o in out:
        errs = [r["e_above_hull_error"] for r in rows if r["model"] == o["model"]
                and (r["dataset"], r["material_id"]) in shared]
        assert o["n"] == len(shared) == len(errs)
        assert o["mae_meV"] == pytest.approx(mev(np.abs(errs)), abs=0.011)
        assert o["mean_signed_error_meV"] == pytest.approx(mev(errs), abs=0.011)
        assert o["coverage"] == f"{len(shared)}/{len(union)}"


def test_common_every_query(db: dict) -> None:
    rows = counted(db)
    shared = common_set(rows)
    for name in ("near-hull", "energy-error", "stability"):
        extra = ("--threshold", "0.2") if name == "near-hull" else ()
        out = query(db, name, "--kind", "single-point", "--common", *extra)
        subset = [r for r in rows if (r["dataset"], r["material_id"]) in shared
                  and (name != "near-hull" or r["dft_e_above_hull"] < 0.2)]
        expect = {m: len([r for r in subset if r["model"] == m]) for m in MODELS}
        assert {o["model"]: o["n"] for o in out} == expect, name
        assert len(set(expect.values())) == 1
    out = query(db, "energy-error", "--kind", "single-point", "--common")
    for o in out:
        e = [r["e_error"] for r in rows if r["model"] == o["model"]
             and (r["dataset"], r["material_id"]) in shared]
        assert o["e_mae_meV"] == pytest.approx(mev(np.abs(e)), abs=0.011)
    out = query(db, "stability", "--kind", "single-point", "--common")
    for o in out:
        sub = [r for r in rows if r["model"] == o["model"]
               and (r["dataset"], r["material_id"]) in shared]
        assert o["tp"] == sum(r["model_stable"] and r["dft_stable"] for r in sub)
        assert o["tn"] == sum(not r["model_stable"] and not r["dft_stable"] for r in sub)
    # relax-effect: materials with both kinds, common to both models
    sp = {(r["model"], r["dataset"], r["material_id"]): r for r in rows}
    pairs = [(r, sp[r["model"], r["dataset"], r["material_id"]])
             for r in counted(db, "relax") if (r["model"], r["dataset"], r["material_id"]) in sp]
    shared_rx = common_set([r for r, _ in pairs])
    out = query(db, "relax-effect", "--common")
    for o in out:
        mine = [(r, s) for r, s in pairs if r["model"] == o["model"]
                and (r["dataset"], r["material_id"]) in shared_rx]
        assert o["n"] == len(shared_rx) == len(mine)
        assert o["relaxed_mae_meV"] == pytest.approx(
            mev([abs(r["e_above_hull_error"]) for r, _ in mine]), abs=0.011)
        assert o["sp_mae_meV"] == pytest.approx(
            mev([abs(s["e_above_hull_error"]) for _, s in mine]), abs=0.011)
    sym = [r for r in db["rows"] if r["convention"] == "dft-hull"
           and r["calc_kind"] != "single_point" and r["symmetry_change"] is not None]
    shared_sym = common_set(sym, ("model", "calc_kind"))
    out = query(db, "symmetry", "--common")
    assert {o["n"] for o in out} == {len(shared_sym)}


def _bootstrap(values: np.ndarray, seed: int, level: float = 0.95) -> np.ndarray:
    """The documented method, written out: one generator per row, (B, n) indices at once."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(N_BOOT, len(values)))
    means = values[idx].mean(axis=1)
    q = 100 * (1 - level) / 2
    return np.percentile(means, [q, 100 - q], axis=0)


def test_bootstrap_equals_numpy(db: dict) -> None:
    rows = counted(db)
    shared = common_set(rows)
    out = query(db, "ehull-mae", "--by", "model", "--kind", "single-point", "--common",
                "--ci", "0.95", "--seed", "7")
    for o in out:
        e = np.array([r["e_above_hull_error"] for r in sorted(
            rows, key=lambda r: (r["dataset"], r["material_id"]))
            if r["model"] == o["model"] and (r["dataset"], r["material_id"]) in shared])
        (mae_lo, mse_lo, fu_lo), (mae_hi, mse_hi, fu_hi) = _bootstrap(
            np.column_stack([np.abs(e), e, (e < 0).astype(float)]), 7)
        # equal up to the last printed digit (a sum in another order may round the other way)
        assert o["mae_lo_meV"] == pytest.approx(mae_lo * 1000, abs=0.0051)
        assert o["mae_hi_meV"] == pytest.approx(mae_hi * 1000, abs=0.0051)
        assert o["mean_signed_error_lo_meV"] == pytest.approx(mse_lo * 1000, abs=0.0051)
        assert o["mean_signed_error_hi_meV"] == pytest.approx(mse_hi * 1000, abs=0.0051)
        assert o["frac_underpredicted_lo"] == pytest.approx(fu_lo, abs=0.00051)
        assert o["frac_underpredicted_hi"] == pytest.approx(fu_hi, abs=0.00051)
        assert o["mae_lo_meV"] <= o["mae_meV"] <= o["mae_hi_meV"]
    again = query(db, "ehull-mae", "--by", "model", "--kind", "single-point", "--common",
                  "--ci", "0.95", "--seed", "7")
    assert again == out
    other = query(db, "ehull-mae", "--by", "model", "--kind", "single-point", "--common",
                  "--ci", "0.95", "--seed", "8")
    assert other != out


def test_bootstrap_per_group_energy_error(db: dict) -> None:
    rows = counted(db)
    out = query(db, "energy-error", "--kind", "single-point", "--by", "hubbard", "--ci",
                "0.9")
    groups = groupby(rows, "model", hub)
    assert [(o["model"], o["hubbard"]) for o in out] == sorted(groups)
    from mliapdb.analysis.fair import DEFAULT_SEED

    for o in out:
        f = np.array([r["e_form_error"] for r in groups[o["model"], o["hubbard"]]])
        lo, hi = _bootstrap(np.column_stack([np.abs(f), f, (f < 0).astype(float)]),
                            DEFAULT_SEED, 0.9)
        assert o["e_form_mae_lo_meV"] == pytest.approx(lo[0] * 1000, abs=0.0051)
        assert o["e_form_mean_signed_error_hi_meV"] == pytest.approx(hi[1] * 1000, abs=0.0051)


def test_by_hubbard(db: dict) -> None:
    rows = counted(db)
    groups = groupby(rows, "model", hub)
    out = query(db, "ehull-mae", "--by", "hubbard", "--kind", "single-point")
    assert [(o["model"], o["hubbard"]) for o in out] == sorted(groups)
    for o in out:
        e = [r["e_above_hull_error"] for r in groups[o["model"], o["hubbard"]]]
        assert o["n"] == len(e)
        assert o["mae_meV"] == pytest.approx(mev(np.abs(e)), abs=0.011)
        assert o["frac_underpredicted"] == pytest.approx(np.mean(np.array(e) < 0), abs=6e-4)


def test_combined_groupings(db: dict) -> None:
    rows = counted(db)
    groups = groupby(rows, "model", "dof_bin_order", "dof_bin", hub)
    expect = [(m, b, h) for m, _, b, h in sorted(groups)]
    for name in ("ehull-mae", "energy-error", "stability"):
        out = query(db, name, "--kind", "single-point", "--by", "dof-bin", "--by", "hubbard")
        assert [(o["model"], o["dof_bin"], o["hubbard"]) for o in out] == expect, name
        n = {(m, b, h): len(v) for (m, _, b, h), v in groups.items()}
        assert {(o["model"], o["dof_bin"], o["hubbard"]): o["n"] for o in out} == n
    out = query(db, "ehull-mae", "--kind", "single-point", "--by", "nelements", "--by",
                "crystal-system")
    groups = groupby(rows, "model", "nelements", "crystal_system")
    assert [(o["model"], o["nelements"], o["crystal_system"]) for o in out] == sorted(groups)
    for o in out:
        e = [r["e_above_hull_error"] for r in groups[o["model"], o["nelements"],
                                                      o["crystal_system"]]]
        assert o["rmse_meV"] == pytest.approx(
            round(float(np.sqrt(np.mean(np.square(e)))) * 1000, 2), abs=0.011)
    rx = counted(db, "relax")
    out = query(db, "relax-effect", "--by", "dof-bin", "--by", "hubbard")
    sp = {(r["model"], r["dataset"], r["material_id"]) for r in rows}
    paired = [r for r in rx if (r["model"], r["dataset"], r["material_id"]) in sp]
    g = groupby(paired, "model", "dof_bin_order", "dof_bin", hub)
    assert [(o["model"], o["dof_bin"], o["hubbard"], o["n"]) for o in out] == [
        (m, b, h, len(g[m, o_, b, h])) for m, o_, b, h in sorted(g)]
    out = query(db, "symmetry", "--by", "hubbard")
    sym = [r for r in db["rows"] if r["convention"] == "dft-hull"
           and r["calc_kind"] != "single_point" and r["symmetry_change"] is not None]
    g = groupby(sym, "model", "calc_kind", hub)
    assert [(o["model"], o["kind"], o["hubbard"], o["n"]) for o in out] == [
        (*k, len(v)) for k, v in sorted(g.items())]


def test_single_by_unchanged(db: dict) -> None:
    """One --by without --common/--ci is the SQL path: same numbers as the Python one."""
    plain = query(db, "ehull-mae", "--by", "dof-bin", "--kind", "single-point")
    both = query(db, "ehull-mae", "--by", "dof-bin", "--by", "model", "--kind",
                 "single-point")
    assert plain == both


def test_exact_output(db: dict) -> None:
    rows = counted(db)
    shared = common_set(rows)
    union = {(r["dataset"], r["material_id"]) for r in rows}
    result = run("--db", db["path"], "query", "ehull-mae", "--by", "hubbard", "--kind",
                 "single-point", "--common", "--format", "csv")
    assert result.exit_code == 0, result.output
    import csv
    import io

    got = list(csv.reader(io.StringIO(result.stdout)))
    assert got[0] == ["model", "hubbard", "n", "mae_meV", "rmse_meV", "mean_signed_error_meV",
                      "median_signed_error_meV", "frac_underpredicted", "coverage"]
    common_rows = [r for r in rows if (r["dataset"], r["material_id"]) in shared]
    expected = []
    for (model, h), members in sorted(groupby(common_rows, "model", hub).items()):
        e = np.array([r["e_above_hull_error"] for r in members])
        n_any = len({(r["dataset"], r["material_id"]) for r in rows if hub(r) == h}
                    & union)
        expected.append([model, h, str(len(e)), float(np.mean(np.abs(e))) * 1000,
                         float(np.sqrt(np.mean(e * e))) * 1000, float(np.mean(e)) * 1000,
                         float(np.median(e)) * 1000, float(np.mean(e < 0)), f"{len(e)}/{n_any}"])
    assert len(got) - 1 == len(expected)
    for row, want in zip(got[1:], expected, strict=True):  # csv: every digit
        assert row[:3] + row[-1:] == want[:3] + want[-1:]
        assert [float(x) for x in row[3:-1]] == pytest.approx(want[3:-1], rel=1e-12)
    assert result.stderr.startswith("Ehull error = model - DFT (meV/atom), fixed DFT hull")
    assert f"--common: {len(shared)} of {len(union)} materials are counted by every one " \
           "of the 2 compared series" in result.stderr


def test_bad_inputs() -> None:
    result = run("query", "ehull-mae", "--ci", "1.5")
    assert result.exit_code == 1
    assert "bad --ci 1.5" in result.output
    result = run("query", "ehull-mae", "--by", "hubbard", "--bins", "1,2")
    assert result.exit_code == 1 and "--bins applies to --by dof-bin only" in result.output


def test_bootstrap_paths_agree() -> None:
    """The counts-matrix path (several rows of one length) and the gathering path (one row)
    resample the same indices."""
    from mliapdb.analysis.fair import bootstrap_many, bootstrap_means

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(57, 3)), rng.normal(size=(57, 3))
    shared = bootstrap_many([a, b], 0.95, 3)
    for x, got in zip((a, b), shared, strict=True):
        np.testing.assert_allclose(got, bootstrap_means(x, 0.95, 3), rtol=0, atol=1e-12)
        direct = _bootstrap(x, 3)
        np.testing.assert_allclose(got, direct.T, rtol=0, atol=1e-12)

