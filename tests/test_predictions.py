"""Imported predictions and exports: real CHGNet 0.3.0 single points on the shared Mn-O
entries exported and imported into another database (identical energies), a crafted
Matbench-Discovery-style file, and every refusal as one line that leaves the database
byte-identical."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from mliapdb.store import database as db
from tests.trust import assert_one_line_error, digest, run, unchanged

MODEL = "chgnet-0.3.0"


def ok(*args: object) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = db.connect(path, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def entries_db(tmp_path_factory, mp_dir: Path) -> Path:
    """The shared Mn-O entries, no model results."""
    path = tmp_path_factory.mktemp("pred") / "entries.duckdb"
    ok("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    return path


@pytest.fixture(scope="module")
def chgnet_db(entries_db: Path) -> Path:
    """The entries and real CHGNet 0.3.0 single points of the 5 smallest cells."""
    path = entries_db.with_name("chgnet.duckdb")
    shutil.copy(entries_db, path)
    ok("--db", path, "ingest", "relax", "--model", MODEL, "--kind", "single-point",
       "--max-sites", 4, "--limit", 5)
    return path


@pytest.fixture
def fresh(entries_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "fresh.duckdb"
    shutil.copy(entries_db, path)
    return path


def energies(path: Path, where: str = "TRUE") -> list[tuple]:
    return query(path, "SELECT material_id, n_atoms, energy_single_point, energy_relaxed "
                 f"FROM calculations WHERE model = '{MODEL}' AND {where} ORDER BY material_id")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json.gz"])
def test_export_import_round_trip(chgnet_db: Path, fresh: Path, tmp_path: Path,
                                  suffix: str) -> None:
    out = tmp_path / f"chgnet-preds{suffix}"
    ok("--db", chgnet_db, "export", "predictions", "--model", MODEL, "--kind", "single-point",
       "--out", out)
    ok("--db", fresh, "ingest", "predictions", out, "--model", MODEL, "--kind", "single-point")
    original = energies(chgnet_db)
    assert len(original) == 5
    assert energies(fresh) == original  # bit-identical floats
    # filed under settings of their own: the source file and its sha256
    (settings,) = query(fresh, "SELECT DISTINCT settings FROM calculations")
    settings = json.loads(settings[0])
    assert settings["source"] == "predictions" and settings["file"] == str(out.resolve())
    assert len(settings["sha256"]) == 64 and settings["calc_kind"] == "single_point"
    local = query(chgnet_db, "SELECT DISTINCT settings_hash FROM calculations")
    imported = query(fresh, "SELECT DISTINCT settings_hash, checkpoint_sha256 FROM calculations")
    assert local[0][0] != imported[0][0]
    model_sha = query(fresh, "SELECT checkpoint_sha256 FROM models WHERE name = ?", [MODEL])
    assert imported[0][1] == model_sha[0][0]
    # the models row the import wrote holds the metadata ingest relax writes
    meta = ("SELECT * EXCLUDE (checkpoint, package_versions, registered_at) FROM models "
            "ORDER BY name")
    assert query(fresh, meta) == query(chgnet_db, meta)
    # the views compare them like local results: same model energies per atom
    view = ("SELECT material_id, e_per_atom_model, e_above_hull FROM model_energies "
            "ORDER BY material_id")
    assert query(fresh, view) == query(chgnet_db, view)
    assert query(fresh, "SELECT count(*) FROM ehull_errors")[0][0] > 0
    # importing the same file again changes nothing
    with unchanged(fresh):
        result = run("--db", fresh, "ingest", "predictions", out, "--model", MODEL,
                     "--kind", "single-point")
        assert result.exit_code == 0 and "imported before" in result.stderr


def test_export_views_and_tables(chgnet_db: Path, tmp_path: Path) -> None:
    n = query(chgnet_db, "SELECT count(*) FROM ehull_errors")[0][0]
    ok("--db", chgnet_db, "export", "ehull_errors", "--out", tmp_path / "e.parquet")
    assert pq.read_table(tmp_path / "e.parquet").num_rows == n > 0
    ok("--db", chgnet_db, "export", "materials", "--out", tmp_path / "m.csv")
    with (tmp_path / "m.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == query(chgnet_db, "SELECT count(*) FROM materials")[0][0]
    assert {"material_id", "dof", "spacegroup_number"} <= set(rows[0])
    ok("--db", chgnet_db, "export", "calculations", "--out", tmp_path / "c.json")
    assert len(json.loads((tmp_path / "c.json").read_text())) == 5
    for name in ("no_such_view", 'materials"; DROP TABLE models; --', "duckdb_settings"):
        out = tmp_path / "x.csv"
        with unchanged(chgnet_db, out):
            assert_one_line_error(run("--db", chgnet_db, "export", name, "--out", out),
                                  "no table or view")
    assert_one_line_error(run("--db", chgnet_db, "export", "materials", "--out",
                              tmp_path / "x.xlsx"), "unknown file type")
    assert_one_line_error(run("--db", chgnet_db, "export", "predictions", "--model",
                              "sevennet-0", "--out", tmp_path / "x.csv"), "no relax results")


def mbd_rows(path: Path, n: int = 3) -> list[dict]:
    """Matbench-Discovery-style rows (material_id, chgnet_energy in eV per cell,
    e_form_per_atom_chgnet, chgnet_structure) for the n smallest accepted compounds: the DFT
    structure and corrected energy slightly shifted; one per formula."""
    rows = query(path, "SELECT m.material_id, e.n_atoms, e.energy_corrected, m.structure "
                 "FROM mp_materials m JOIN dft_entries e USING (dataset, material_id) "
                 "WHERE e.compat_status = 'ok' AND m.nelements = 2 QUALIFY row_number() "
                 "OVER (PARTITION BY m.formula ORDER BY m.nsites, m.material_id) = 1 "
                 "ORDER BY m.nsites, m.material_id LIMIT ?", [n])
    return [{"material_id": mid, "chgnet_energy": energy + 0.01 * n_atoms,
             "e_form_per_atom_chgnet": -1.0, "chgnet_structure": json.loads(structure)}
            for mid, n_atoms, energy, structure in rows]


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(rows[0])
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v
                             for k, v in row.items()})
    return path


def test_matbench_discovery_style_file(fresh: Path, entries_db: Path, tmp_path: Path) -> None:
    rows = mbd_rows(fresh)
    src = write_csv(tmp_path / "2023-12-21-chgnet-0.3.0-wbm-IS2RE.csv.gz", rows)
    ok("--db", fresh, "ingest", "predictions", src, "--model", MODEL, "--kind", "relax")
    stored = query(fresh, "SELECT material_id, energy_relaxed, calc_kind, spacegroup_before, "
                   "spacegroup_after, rmsd, volume_ratio, settings FROM calculations "
                   "ORDER BY material_id")
    assert [(r[0], r[1]) for r in stored] == sorted(
        (r["material_id"], r["chgnet_energy"]) for r in rows)
    for _, _, kind, before, after, rmsd, ratio, settings in stored:
        assert kind == "relax" and before == after and before is not None
        assert rmsd == pytest.approx(0, abs=1e-9) and ratio == pytest.approx(1)
        settings = json.loads(settings)
        assert (settings["energy_column"], settings["structure_column"]) == (
            "chgnet_energy", "chgnet_structure")
    # model Ehull on the fixed DFT hull = DFT Ehull + 0.01 eV/atom (CHGNet: corrected footing)
    diff = query(fresh, "SELECT max(abs(e_above_hull_error - 0.01)) FROM ehull_errors "
                 "WHERE convention = 'dft-hull'")[0][0]
    assert diff == pytest.approx(0, abs=1e-9)
    # relaxations with their structures round-trip too
    other = tmp_path / "other.duckdb"
    shutil.copy(entries_db, other)
    ok("--db", fresh, "export", "predictions", "--model", MODEL, "--out", tmp_path / "r.parquet")
    ok("--db", other, "ingest", "predictions", tmp_path / "r.parquet", "--model", MODEL,
       "--kind", "relax")
    again = ("SELECT material_id, energy_relaxed, relaxed_structure, spacegroup_after, rmsd "
             "FROM calculations ORDER BY material_id")
    assert query(other, again) == query(fresh, again)
    # energies per atom, as pandas to_json(orient="columns"), into another kind
    per_atom = {"material_id": {str(i): r["material_id"] for i, r in enumerate(rows)},
                "e_per_atom": {str(i): r["chgnet_energy"] / len(r["chgnet_structure"]["sites"])
                               for i, r in enumerate(rows)}}
    (tmp_path / "sp.json").write_text(json.dumps(per_atom))
    ok("--db", fresh, "ingest", "predictions", tmp_path / "sp.json", "--model", MODEL,
       "--kind", "single-point")
    sp = query(fresh, "SELECT material_id, energy_single_point FROM calculations "
               "WHERE calc_kind = 'single_point' ORDER BY material_id")
    assert [(m, pytest.approx(e)) for m, e in sp] == sorted(
        (r["material_id"], r["chgnet_energy"]) for r in rows)


def refusals(rows: list[dict]) -> list[tuple[str, list[dict], tuple, tuple[str, ...]]]:
    """(name, rows, extra options, expected pieces of the error)."""
    a, b, c = rows
    return [
        ("unknown-id", [a, {**b, "material_id": "mp-999999999"}], (),
         ("row 2", "mp-999999999", "not in dataset 'mp'")),
        ("nan", [a, b, {**c, "chgnet_energy": "nan"}], (), ("row 3", "not a finite number")),
        ("inf", [{**a, "chgnet_energy": "inf"}], (), ("row 1", "not a finite number")),
        ("empty-energy", [a, {**b, "chgnet_energy": ""}], (), ("row 2", "not a finite number")),
        ("text-energy", [{**a, "chgnet_energy": "-5 eV"}], (), ("row 1", "not a finite")),
        ("too-high", [a, {**b, "chgnet_energy": 60.0 * len(b["chgnet_structure"]["sites"])}],
         (), ("row 2", "outside -20 to 5 eV/atom")),
        ("per-cell-as-atom", [{**a, "chgnet_energy": -30.0}], ("--energy-unit", "eV/atom"),
         ("row 1", "-30 eV/atom", "--energy-unit")),
        ("duplicate", [a, b, a], (), ("row 3", "appears twice (rows 1 and 3)")),
        ("no-id-column", [{"id": a["material_id"], "chgnet_energy": 1.0}], (),
         ("no material_id column",)),
        ("no-id", [a, {**b, "material_id": ""}], (), ("row 2", "no material id")),
        ("ambiguous", [{**a, "mace_energy": 1.0}], (), ("several energy columns",
                                                        "--energy-column")),
        ("formation-only", [{"material_id": a["material_id"], "e_form_per_atom_chgnet": -1.0}],
         (), ("only formation energies",)),
        ("formation-column", [a], ("--energy-column", "e_form_per_atom_chgnet"),
         ("formation energy",)),
        ("missing-column", [a], ("--energy-column", "energy"), ("no column 'energy'",)),
        ("wrong-structure", [a, {**b, "chgnet_structure": a["chgnet_structure"]}], (),
         ("row 2", "chgnet_structure", "not the material's")),
        ("bad-structure", [{**a, "chgnet_structure": {"sites": 3}}], (),
         ("row 1", "no pymatgen Structure dict")),
        ("unknown-model", [a], ("--model", "no-such-model"), ("unknown model 'no-such-model'",)),
        ("r2scan-model", [a], ("--model", "tensornet-matpes-r2scan-v2025.1"), ("r2SCAN",)),
        ("no-sha-model", [a], ("--model", "mace-mp-0"), ("no published checkpoint sha256",)),
    ]


def test_refusals_leave_the_database_unchanged(fresh: Path, tmp_path: Path) -> None:
    rows = mbd_rows(fresh)
    before = digest(fresh)
    for name, bad, extra, pieces in refusals(rows):
        path = write_csv(tmp_path / f"{name}.csv", bad)
        model = () if "--model" in extra else ("--model", MODEL)
        with unchanged(fresh):
            result = run("--db", fresh, "ingest", "predictions", path, *model, "--kind",
                         "relax", *extra)
            line = assert_one_line_error(result, *pieces)
        if name not in ("unknown-model", "r2scan-model", "no-sha-model"):
            assert str(path) in line, (name, line)
    for name, content in (("empty.csv", "material_id,energy\n"), ("garbage.parquet", "PAR1x"),
                          ("broken.json", "{not json"), ("list.json", "[1, 2]")):
        path = tmp_path / name
        path.write_text(content)
        with unchanged(fresh):
            assert_one_line_error(run("--db", fresh, "ingest", "predictions", path, "--model",
                                      MODEL, "--kind", "relax"), str(path))
    assert_one_line_error(run("--db", fresh, "ingest", "predictions", tmp_path / "x.xlsx",
                              "--model", MODEL, "--kind", "relax"), "unknown file type")
    assert_one_line_error(run("--db", fresh, "ingest", "predictions", tmp_path / "none.csv",
                              "--model", MODEL, "--kind", "relax"), "no such file")
    assert digest(fresh) == before
    assert duckdb.connect(str(fresh), read_only=True).execute(
        "SELECT count(*) FROM calculations").fetchone()[0] == 0


def test_dataset_column_single_point_column_and_relax_fixsym(entries_db: Path, mp_dir: Path,
                                                              tmp_path: Path) -> None:
    """A file of several snapshots (a dataset column) imports in one go under one settings
    hash; a relaxation's single point (energy_single_point) is stored, so a relaxed energy
    far below it is flagged; relax-fixsym is a kind of its own."""
    path = tmp_path / "two.duckdb"
    shutil.copy(entries_db, path)
    ok("--db", path, "ingest", "entries", "--dataset", "other", mp_dir / "Mn_O_entries.json.gz")
    a, b, _ = mbd_rows(path)
    n_b = len(b["chgnet_structure"]["sites"])
    rows = [{"dataset": "mp", **a, "energy_single_point": a["chgnet_energy"] + 0.001},
            {"dataset": "other", **a, "energy_single_point": ""},
            {"dataset": "other", **b, "energy_single_point": b["chgnet_energy"] + 0.5 * n_b}]
    src = write_csv(tmp_path / "fixsym.csv", rows)
    ok("--db", path, "ingest", "predictions", src, "--model", MODEL, "--kind", "relax-fixsym")
    stored = query(path, "SELECT dataset, material_id, calc_kind, energy_relaxed, "
                   "energy_single_point, settings_hash FROM calculations ORDER BY ALL")
    assert [r[:3] for r in stored] == sorted(
        [("mp", a["material_id"], "relax_fixsym"), ("other", a["material_id"], "relax_fixsym"),
         ("other", b["material_id"], "relax_fixsym")])
    assert len({r[5] for r in stored}) == 1
    by_key = {(r[0], r[1]): r for r in stored}
    assert by_key[("mp", a["material_id"])][4] == pytest.approx(a["chgnet_energy"] + 0.001)
    assert by_key[("other", a["material_id"])][4] is None
    flagged = query(path, "SELECT dataset, material_id, suspicious_reason FROM stg_suspicious")
    assert flagged == [("other", b["material_id"], "energy_drop")]
    # a bad dataset or single-point cell refuses the whole file, naming the row
    for name, bad, pieces in (
            ("no-such-dataset", [rows[0], {**rows[1], "dataset": "zz"}],
             ("row 2", "not in dataset 'zz'")),
            ("empty-dataset", [{**rows[0], "dataset": ""}], ("row 1", "no dataset")),
            ("text-single-point", [{**rows[0], "energy_single_point": "low"}],
             ("row 1", "energy_single_point", "not a finite number"))):
        with unchanged(path):
            assert_one_line_error(run("--db", path, "ingest", "predictions",
                                      write_csv(tmp_path / f"{name}.csv", bad), "--model",
                                      MODEL, "--kind", "relax"), *pieces)
