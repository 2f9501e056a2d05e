"""``ingest entries`` reads the layouts entry files come in: a JSON list, JSON Lines, and the
pandas DataFrame JSON of Matbench Discovery's MP dump (``material_id`` and ``entry``
columns; written here by pandas itself from the shared Mn-O entries, orients columns, records,
index and split, gzipped like the real dump). Each stores exactly what the plain list stores."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.materials.entries import material_id_of

TABLES = {
    "mp_materials": "dataset, material_id, formula, chemsys, nsites, structure, fingerprint",
    "dft_entries": "dataset, material_id, entry_id, n_atoms, energy_raw, correction_mp2020, "
                   "energy_corrected, compat_status, run_type",
    "symmetry_analyses": "dataset, material_id, symprec, method, spacegroup_number, dof",
    "dft_hull": "dataset, material_id, e_per_atom, e_ref_per_atom, e_form_per_atom, e_above_hull",
}


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _rows(path: Path) -> dict[str, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall()
                for t, cols in TABLES.items()}


@pytest.fixture(scope="module")
def raws(mp_dir: Path) -> list[dict]:
    with gzip.open(mp_dir / "Mn_O_entries.json.gz") as fh:
        return json.loads(fh.read())


@pytest.fixture(scope="module")
def plain(raws: list[dict], tmp_path_factory) -> dict[str, list]:
    folder = tmp_path_factory.mktemp("plain")
    (folder / "entries.json").write_text(json.dumps(raws))
    result = run("--db", folder / "db.duckdb", "ingest", "entries", folder / "entries.json")
    assert result.exit_code == 0, result.output
    return _rows(folder / "db.duckdb")


def _frame(raws: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"material_id": [material_id_of(r) for r in raws], "entry": raws})


def _like_pandas(orient: str):
    """Write the shape pandas' ``to_json(orient=...)`` writes (pandas' own writer keeps at
    most 15 significant digits, so for exact equality the cells go through ``json.dumps``)."""
    def write(raws: list[dict], path: Path) -> None:
        skeleton = json.loads(_frame([{"@class": "x"}] * len(raws)).to_json(orient=orient))
        ids = [material_id_of(r) for r in raws]
        if orient == "columns":
            skeleton["entry"] = {str(i): r for i, r in enumerate(raws)}
        elif orient == "records":
            skeleton = [{"material_id": m, "entry": r} for m, r in zip(ids, raws, strict=True)]
        elif orient == "index":
            skeleton = {k: {**v, "entry": raws[int(k)]} for k, v in skeleton.items()}
        else:  # split
            skeleton["data"] = [[m, r] for m, r in zip(ids, raws, strict=True)]
        text = json.dumps(skeleton)
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
    return write


LAYOUTS = {
    "mbd-columns.json.gz": _like_pandas("columns"),
    "records.json": _like_pandas("records"),
    "index.json": _like_pandas("index"),
    "split.json": _like_pandas("split"),
    "lines.jsonl": lambda raws, path: path.write_text(
        "\n".join(json.dumps(r) for r in raws) + "\n"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_stores_what_the_plain_list_stores(name, raws, plain, tmp_path: Path):
    path = tmp_path / name
    LAYOUTS[name](raws, path)
    db = tmp_path / "db.duckdb"
    result = run("--db", db, "ingest", "entries", path, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == f"mp,{len(raws)},{len(raws)},0,0,{len(raws)}," \
                                            f"{len(raws)}"
    assert _rows(db) == plain


def test_a_file_pandas_wrote_itself(raws, plain, tmp_path: Path):
    """The real dump was written by pandas (15 significant digits): same materials, energies
    and hull within its rounding."""
    path = tmp_path / "2023-02-07-mp-computed-structure-entries.json.gz"
    _frame(raws).to_json(path, compression="gzip", double_precision=15)
    db = tmp_path / "db.duckdb"
    result = run("--db", db, "ingest", "entries", path)
    assert result.exit_code == 0, result.output
    got = _rows(db)
    assert [r[:2] for r in got["dft_hull"]] == [r[:2] for r in plain["dft_hull"]]
    for mine, theirs in zip(got["dft_hull"], plain["dft_hull"], strict=True):
        assert mine[2:] == pytest.approx(theirs[2:], abs=1e-9)
    assert [r[:5] for r in got["symmetry_analyses"]] == [r[:5] for r in
                                                         plain["symmetry_analyses"]]


def test_a_material_id_column_that_contradicts_its_entry_is_refused(raws, tmp_path: Path):
    frame = _frame(raws[:3])
    entry = dict(frame.loc[1, "entry"])
    entry["data"] = {**(entry.get("data") or {}), "material_id": "mp-999999999"}
    frame.at[1, "entry"] = entry
    path = tmp_path / "bad.json"
    frame.to_json(path)
    db = tmp_path / "db.duckdb"
    result = run("--db", db, "ingest", "entries", path)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}: row 1: the material_id column says "
                             f"{frame.loc[1, 'material_id']} but its entry says mp-999999999 - "
                             "fix the file\n")
    assert not db.exists()


def test_a_bad_json_lines_line_is_named(raws, tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(raws[0]) + "\n" + json.dumps(raws[1]) + "\n{not json\n")
    result = run("--db", tmp_path / "db.duckdb", "ingest", "entries", path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: line 3 of a JSON Lines file is not JSON (")
    assert result.stderr.count("\n") == 1
