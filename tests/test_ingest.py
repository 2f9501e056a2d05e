"""``mliapdb ingest entries`` on real MP files: MP2020 re-applied, hull equal to pymatgen,
idempotent, multiple tolerances, and bad input refused with the database unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli

TABLES = (
    "source_files", "mp_materials", "dft_entries", "symmetry_analyses", "wyckoff_orbits",
    "dft_hull", "models", "calculations",
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def db_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the sorted contents of every table (timestamps included)."""
    h = hashlib.sha256()
    with duckdb.connect(str(path), read_only=True) as con:
        for table in TABLES:
            if table in skip:
                continue
            for row in sorted(map(repr, con.execute(f"SELECT * FROM {table}").fetchall())):
                h.update(row.encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def mn_o_y_db(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("ingest") / "db.duckdb"
    result = run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_Y_entries.json.gz"))
    assert result.exit_code == 0, result.output
    return path


def test_ingest_counts_and_status_line(mn_o_y_db: Path, mp_dir: Path) -> None:
    with duckdb.connect(str(mn_o_y_db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mp_materials").fetchone()[0] == 132
        assert con.execute("SELECT count(*) FROM dft_hull").fetchone()[0] == 132
        assert con.execute("SELECT count(*) FROM materials WHERE dof IS NULL").fetchone()[0] == 0
        n_orbits, n_sites = con.execute(
            "SELECT (SELECT count(*) FROM wyckoff_orbits), (SELECT sum(nsites) FROM mp_materials)"
        ).fetchone()
        assert 132 <= n_orbits <= n_sites


def test_mp2020_corrections_reproduce_the_source(mn_o_y_db: Path) -> None:
    with duckdb.connect(str(mn_o_y_db), read_only=True) as con:
        worst, n_corrected, n_rejected = con.execute(
            "SELECT max(abs(correction_mp2020 - coalesce(correction_in_source, 0))), "
            "count(*) FILTER (WHERE correction_mp2020 < 0), "
            "count(*) FILTER (WHERE compat_status <> 'ok') FROM dft_entries"
        ).fetchone()
    assert worst < 1e-9
    assert n_corrected > 50  # oxides (anion) and Mn GGA+U corrections are there
    assert n_rejected == 0


def test_dft_hull_equals_pymatgen_phase_diagram(mn_o_y_db: Path, mp_dir: Path) -> None:
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        raw = json.load(fh)
    entries = [ComputedStructureEntry.from_dict(d) for d in raw]
    pd = PhaseDiagram(entries)
    with duckdb.connect(str(mn_o_y_db), read_only=True) as con:
        stored = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT material_id, e_per_atom, e_form_per_atom, e_above_hull FROM dft_stability"
            ).fetchall()
        }
    assert len(stored) == len(entries)
    for entry in entries:
        e, ef, ehull = stored[entry.entry_id]
        assert e == pytest.approx(entry.energy_per_atom, abs=1e-9)
        assert ef == pytest.approx(pd.get_form_energy_per_atom(entry), abs=1e-6)
        assert ehull == pytest.approx(pd.get_e_above_hull(entry), abs=1e-6)


def test_reingest_changes_nothing(mn_o_y_db: Path, mp_dir: Path) -> None:
    before = db_digest(mn_o_y_db)
    same = mp_dir / "Mn_O_Y_entries.json.gz"
    result = run("--db", str(mn_o_y_db), "ingest", "entries", str(same))
    assert result.exit_code == 0
    # the same file (sha256) is skipped before it is read
    assert ("read 0 entries from 1 file(s) (1 already ingested, not read again) into dataset "
            "'mp': 0 new, 0 unchanged" in result.stderr and "hull unchanged" in result.stderr)
    assert db_digest(mn_o_y_db) == before
    # Mn-O is inside Mn-O-Y (same snapshot): only the file itself is recorded.
    before_data = db_digest(mn_o_y_db, skip=("source_files",))
    result = run("--db", str(mn_o_y_db), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz"))
    assert "0 new, 90 unchanged" in result.stderr
    assert db_digest(mn_o_y_db, skip=("source_files",)) == before_data


def test_second_tolerance_adds_analyses(tmp_path: Path, mp_dir: Path) -> None:
    path = tmp_path / "db.duckdb"
    f = str(mp_dir / "Mn_O_entries.json.gz")
    assert run("--db", str(path), "ingest", "entries", f).exit_code == 0
    result = run("--db", str(path), "ingest", "entries", f, "--symprec", "0.01")
    assert result.exit_code == 0, result.output
    assert "90 symmetry analyses (symprec 0.01, moyopy)" in result.stderr
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(
            "SELECT symprec, count(*) FROM symmetry_analyses GROUP BY 1 ORDER BY 1"
        ).fetchall() == [(0.01, 90), (0.1, 90)]
        assert con.execute("SELECT DISTINCT symprec FROM materials").fetchall() == [(0.1,)]


def _write(path: Path, data, gz: bool = True) -> Path:
    text = json.dumps(data)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def good_entries(mp_dir: Path) -> list[dict]:
    with gzip.open(mp_dir / "Mn_O_entries.json.gz") as fh:
        return json.load(fh)[:5]


def _bad_cases(good: list[dict]) -> dict[str, tuple[object, str]]:
    """name -> (file content, expected error tail after 'FILE: ')."""
    import copy

    def with_change(i: int, fn) -> list[dict]:
        data = copy.deepcopy(good)
        fn(data[i])
        return data

    mid = good[2]["entry_id"]
    def set_species(e, sp):
        e["structure"]["sites"][0]["species"][0]["element"] = sp
    def nan_coord(e):
        e["structure"]["sites"][0]["abc"][0] = math.nan
    return {
        "no_energy": (with_change(2, lambda e: e.pop("energy")),
                      f"entry 2 ({mid}): no energy - every entry needs its raw DFT energy (eV)"),
        "nan_energy": (with_change(2, lambda e: e.update(energy=math.nan)),
                       f"entry 2 ({mid}): energy is nan, not a finite number (eV)"),
        "no_structure": (with_change(2, lambda e: e.pop("structure")),
                         f"entry 2 ({mid}): no structure - ingest needs ComputedStructureEntry "
                         "dicts with structures"),
        "unknown_element": (with_change(2, lambda e: set_species(e, "Xx")), None),
        "nan_coordinates": (with_change(2, nan_coord),
                            f"entry 2 ({mid}): structure has NaN or infinite coordinates"),
        "object_not_list": ({"a": 1}, "expected a JSON list of ComputedStructureEntry dicts, "
                            "JSON Lines of them, or a pandas DataFrame JSON with an 'entry' "
                            "column, got a JSON dict"),
    }


@pytest.mark.parametrize(
    "case",
    ["no_energy", "nan_energy", "no_structure", "unknown_element", "nan_coordinates",
     "object_not_list", "not_json"],
)
def test_bad_input_is_refused_and_leaves_db_unchanged(
    case: str, tmp_path: Path, mp_dir: Path, good_entries: list[dict]
) -> None:
    path = tmp_path / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")
               ).exit_code == 0
    before = db_digest(path)
    ok_file = _write(tmp_path / "ok.json.gz", good_entries)  # good file first: still nothing
    bad = tmp_path / f"{case}.json.gz"
    if case == "not_json":
        bad.write_bytes(gzip.compress(b"this is { not json"))
        expected = None
    else:
        content, expected = _bad_cases(good_entries)[case]
        _write(bad, content)
    result = run("--db", str(path), "ingest", "entries", str(ok_file), str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {bad}: ")
    if expected is not None:
        assert lines[0] == f"Error: {bad}: {expected}"
    if case == "unknown_element":
        assert "unknown element" in lines[0] and "entry 2 (" in lines[0]
    if case == "not_json":
        assert "not JSON" in lines[0]
    assert db_digest(path) == before


def test_conflicting_entry_is_refused(tmp_path: Path, good_entries: list[dict]) -> None:
    import copy

    path = tmp_path / "db.duckdb"
    first = _write(tmp_path / "a.json", good_entries, gz=False)  # plain JSON works too
    assert run("--db", str(path), "ingest", "entries", str(first)).exit_code == 0
    before = db_digest(path)
    changed = copy.deepcopy(good_entries)
    changed[1]["energy"] += 0.5
    second = _write(tmp_path / "b.json.gz", changed)
    result = run("--db", str(path), "ingest", "entries", str(second))
    assert result.exit_code == 1
    mid = changed[1]["entry_id"]
    assert result.stderr == (
        f"Error: {second}: entry {mid} differs from the one already in dataset 'mp' (other "
        "energy or structure) - ingest this file into another dataset with --dataset NAME "
        "(one MP snapshot per dataset)\n"
    )
    assert db_digest(path) == before
    ok = run("--db", str(path), "ingest", "entries", str(second), "--dataset", "other")
    assert ok.exit_code == 0
    assert "5 new" in ok.stderr


def test_mp2020_rejection_is_reported_and_kept_out_of_the_hull(
    tmp_path: Path, good_entries: list[dict]
) -> None:
    import copy

    data = copy.deepcopy(good_entries)
    data[3]["parameters"]["run_type"] = "R2SCAN"
    f = _write(tmp_path / "r2scan.json.gz", data)
    path = tmp_path / "db.duckdb"
    result = run("--db", str(path), "ingest", "entries", str(f))
    assert result.exit_code == 0, result.output
    mid = data[3]["entry_id"]
    assert f"rejected by MP2020 compatibility: {f}: {mid}: " in result.stderr
    assert "1 rejected by MP2020" in result.stderr
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(
            "SELECT compat_status FROM dft_entries WHERE material_id = ?", [mid]
        ).fetchone() == ("rejected",)
        assert con.execute("SELECT count(*) FROM dft_hull").fetchone()[0] == 4


def test_missing_file_says_where_data_comes_from(tmp_path: Path) -> None:
    result = run("--db", str(tmp_path / "x.duckdb"), "ingest", "entries", "nope.json.gz")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no such file: nope.json.gz - MP entry files are in ../shared/data/mp/ beside "
        "the repository, or where $MLIAPDB_DATA points\n"
    )
    assert not (tmp_path / "x.duckdb").exists()


def test_ingest_summary_table_exact(tmp_path: Path, mp_dir: Path) -> None:
    path = tmp_path / "db.duckdb"
    f = str(mp_dir / "Mn_O_entries.json.gz")
    first = run("--db", str(path), "ingest", "entries", f, "--format", "csv")
    assert first.stdout == (
        "dataset,read,new,unchanged,rejected,symmetry_analyses,hull_entries\n"
        "mp,90,90,0,0,90,90\n"
    )
    again = run("--db", str(path), "ingest", "entries", f)
    assert again.stdout == (
        "dataset  read  new  unchanged  rejected  symmetry_analyses  hull_entries\n"
        "-------  ----  ---  ---------  --------  -----------------  ------------\n"
        "mp          0    0          0         0                  0             0\n"
    )
    assert again.stderr == (
        f"{path}: read 0 entries from 1 file(s) (1 already ingested, not read again) into "
        "dataset 'mp': 0 new, 0 unchanged, 0 rejected by MP2020; 0 symmetry analyses (symprec "
        "0.1, moyopy); hull unchanged\n"
    )


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"entry_id": "mp-1245108-GGA", "data": {"material_id": "mp-1245108"}}, "mp-1245108"),
        ({"entry_id": "mp-1245108-GGA"}, "mp-1245108"),
        ({"entry_id": "mp-19006-GGA+U"}, "mp-19006"),
        ({"entry_id": "mvc-10883"}, "mvc-10883"),
        ({"entry_id": None, "data": {}}, None),
    ],
)
def test_material_id_from_data_or_entry_id(raw: dict, expected: str | None) -> None:
    from mliapdb.materials.entries import material_id_of

    assert material_id_of(raw) == expected


def test_2025_snapshot_hull_matches_the_values_mp_stored(tmp_path: Path, mp_dir: Path) -> None:
    """The 2025 Na-Fe-P-O file carries MP's own e_above_hull (PhaseDiagram over it)."""
    f = mp_dir / "Na-Fe-P-O_entries_2025.json.gz"
    path = tmp_path / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(f), "--dataset", "mp-2025"
               ).exit_code == 0
    with gzip.open(f) as fh:
        stored = {d["data"]["material_id"]: d["e_above_hull"] for d in json.load(fh)}
    with duckdb.connect(str(path), read_only=True) as con:
        ours = dict(con.execute("SELECT material_id, e_above_hull FROM dft_stability").fetchall())
    assert len(ours) == len(stored) == 557
    assert max(abs(ours[k] - stored[k]) for k in stored) < 1e-6
