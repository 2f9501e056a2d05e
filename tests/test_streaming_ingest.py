"""Streaming, parallel ``ingest entries``: worker processes store exactly what one process
stores; a real ingest process killed half-way resumes from its staged chunks to the same
database as an uninterrupted run (no entry lost or doubled); a bad entry in a late chunk
leaves no database and no staging file; the DataFrame layout with its material_id column
after the entry column streams too."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.materials.entries import material_id_of
from mliapdb.materials.streaming import staging_path

TABLES = {
    "mp_materials": "*",
    "dft_entries": "* EXCLUDE (source_file)",
    "symmetry_analyses": "*",
    "wyckoff_orbits": "*",
    "dft_hull": "* EXCLUDE (computed_at)",
    "source_files": "sha256, dataset, n_entries",
}


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows(path: Path) -> dict[str, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall()
                for t, cols in TABLES.items()}


@pytest.fixture(scope="module")
def serial(mp_dir: Path, tmp_path_factory) -> dict[str, list]:
    """Fe-Li-O-P (943 entries) ingested by this process alone."""
    path = tmp_path_factory.mktemp("serial") / "db.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Fe_Li_O_P_entries.json.gz",
                 "--jobs", "1")
    assert result.exit_code == 0, result.output
    return rows(path)


def test_workers_store_what_one_process_stores(serial, mp_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Fe_Li_O_P_entries.json.gz",
                 "--jobs", "2", "--chunk-size", "100")
    assert result.exit_code == 0, result.output
    assert "read 943 entries from 1 file(s) into dataset 'mp': 943 new" in result.stderr
    got = rows(path)
    assert got == serial
    assert len(got["mp_materials"]) == 943 and len(got["symmetry_analyses"]) == 943
    assert not staging_path(path).exists()


def test_killed_ingest_resumes_without_loss_or_duplicates(serial, mp_dir: Path,
                                                          tmp_path: Path) -> None:
    """A real ``mliapdb ingest entries`` process is killed (SIGKILL) once it reports progress
    (a chunk is staged); the rerun resumes from the staged chunks."""
    path = tmp_path / "db.duckdb"
    cmd = [sys.executable, "-m", "mliapdb", "--db", str(path), "ingest", "entries",
           str(mp_dir / "Fe_Li_O_P_entries.json.gz"), "--jobs", "1", "--chunk-size", "50"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first progress line: >= 1 chunk committed
    assert "kB read" in line, line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert staging_path(path).exists() and not path.exists()
    with duckdb.connect(str(staging_path(path)), read_only=True) as con:
        (n_chunks,) = con.execute("SELECT count(*) FROM stage_chunks").fetchone()
    assert 1 <= n_chunks < 19
    result = run("--db", path, "ingest", "entries", mp_dir / "Fe_Li_O_P_entries.json.gz",
                 "--jobs", "1", "--chunk-size", "50")
    assert result.exit_code == 0, result.output
    assert (f"into dataset 'mp', resumed after {n_chunks} staged chunk(s): 943 new"
            in result.stderr)
    assert rows(path) == serial
    assert not staging_path(path).exists()


def test_bad_entry_in_a_late_chunk_leaves_nothing(mp_dir: Path, tmp_path: Path) -> None:
    with gzip.open(mp_dir / "Fe_Li_O_P_entries.json.gz") as fh:
        raws = json.loads(fh.read())
    raws[900]["energy"] = "a lot"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raws))
    path = tmp_path / "db.duckdb"
    result = run("--db", path, "ingest", "entries", bad, "--jobs", "2", "--chunk-size", "100")
    assert result.exit_code == 1
    mid = material_id_of(raws[900])
    *progress, last = result.stderr.splitlines()
    assert last == f"Error: {bad}: entry 900 ({mid}): energy is 'a lot', not a finite number (eV)"
    assert all(": kB read: " in line for line in progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_material_id_column_after_the_entry_column(mp_dir: Path, tmp_path: Path) -> None:
    """pandas writes columns in frame order: ``entry`` first, then ``material_id``; the
    streamed rows are checked against the column once it comes."""
    with gzip.open(mp_dir / "Mn_O_entries.json.gz") as fh:
        raws = json.loads(fh.read())
    ids = {str(i): material_id_of(r) for i, r in enumerate(raws)}
    frame = {"entry": {str(i): r for i, r in enumerate(raws)}, "material_id": ids}
    good = tmp_path / "frame.json.gz"
    good.write_bytes(gzip.compress(json.dumps(frame).encode()))
    result = run("--db", tmp_path / "a.duckdb", "ingest", "entries", good)
    assert result.exit_code == 0, result.output
    assert "read 90 entries" in result.stderr
    wrong = {**ids, "7": "mp-999999"}
    bad = tmp_path / "wrong.json.gz"
    bad.write_bytes(gzip.compress(json.dumps({**frame, "material_id": wrong}).encode()))
    result = run("--db", tmp_path / "b.duckdb", "ingest", "entries", bad)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {bad}: row 7: the material_id column says mp-999999 but "
                             f"its entry says {ids['7']} - fix the file\n")
    assert not (tmp_path / "b.duckdb").exists()


def test_a_file_already_ingested_is_not_read(mp_dir: Path, tmp_path: Path) -> None:
    """Known by its sha256 (source_files), a file is skipped before parsing, also when it is
    named twice."""
    path = tmp_path / "db.duckdb"
    f = mp_dir / "Mn_O_entries.json.gz"
    result = run("--db", path, "ingest", "entries", f, f)
    assert result.exit_code == 0
    assert ("read 90 entries from 2 file(s) (1 already ingested, not read again) into dataset "
            "'mp': 90 new" in result.stderr)
    result = run("--db", path, "ingest", "entries", f)
    assert "read 0 entries from 1 file(s) (1 already ingested, not read again)" in result.stderr


def test_a_staging_file_with_code_is_refused(mp_dir: Path, tmp_path: Path) -> None:
    """The staging file beside a database holds rows only; one holding a view (not written
    by mliapdb) is refused with one line, and nothing is created."""
    path = tmp_path / "db.duckdb"
    with duckdb.connect(str(staging_path(path))) as con:
        con.execute("CREATE VIEW v AS SELECT 1")
    result = run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {staging_path(path)}: the staging file of an interrupted "
                             "ingest holds views or macros, which mliapdb never writes - delete "
                             "it and rerun the ingest\n")
    assert not path.exists()
