"""docs/python.md runs: every ``python`` block in order, in one namespace, in a folder holding
the database its setup block builds (real CHGNet single points on real MP entries); a
``text`` block right after a ``python`` block is what that block prints. Plus checks of the
API against independent references (pymatgen's MP2020 on the source file, the CLI's csv)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.config import REPO_ROOT

DOC = REPO_ROOT / "docs" / "python.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def _blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text())]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory, mp_dir: Path) -> Path:
    """A folder with the ``mliapdb.duckdb`` of the page's bash block."""
    folder = tmp_path_factory.mktemp("python-doc")
    (bash,) = [text for lang, text in _blocks() if lang == "bash"]
    runner = CliRunner()
    with contextlib.chdir(folder):
        for line in bash.strip().splitlines():
            args = line.split()[1:]
            args = [str(mp_dir / Path(a).name) if a.startswith("../shared/") else a for a in args]
            result = runner.invoke(cli, ["--db", "mliapdb.duckdb", *args])
            assert result.exit_code == 0, result.output
    return folder


def test_every_example_of_docs_python_md_runs_and_prints_what_it_says(example_dir: Path):
    blocks = _blocks()
    namespace: dict = {}
    n_checked = 0
    with contextlib.chdir(example_dir):
        for i, (lang, text) in enumerate(blocks):
            if lang != "python":
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(text, f"docs/python.md block {i}", "exec"), namespace)
            if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
                assert out.getvalue() == blocks[i + 1][1], f"block {i}:\n{text}"
                n_checked += 1
    assert n_checked >= 8


def test_import_loads_nothing_until_used():
    import subprocess
    import sys

    code = ("import sys, mliapdb; print(sorted(m for m in sys.modules if m.startswith("
            "('mliapdb.', 'duckdb', 'pandas', 'pymatgen', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entries_equal_pymatgen_mp2020_on_the_source_file(example_dir: Path, mp_dir: Path):
    """The stored entries, rebuilt as ComputedStructureEntry, have the energies pymatgen's own
    MaterialsProject2020Compatibility gives the raw entries of the source file."""
    import gzip

    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    import mliapdb

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        raw = json.loads(fh.read())
    source = [ComputedStructureEntry.from_dict(d) for d in raw]
    for entry in source:
        entry.energy_adjustments = []
    processed = MaterialsProject2020Compatibility(check_potcar=False).process_entries(
        source, clean=True, inplace=False)
    expected = {e.data.get("material_id") or e.entry_id: e.energy_per_atom for e in processed}
    with mliapdb.open(example_dir / "mliapdb.duckdb") as db:
        entries = db.entries()
    assert len(entries) == len(expected) == 132
    worst = max(abs(e.energy_per_atom - expected[e.data["material_id"]]) for e in entries)
    assert worst < 1e-9


def test_dataframes_hold_what_the_cli_writes_as_csv(example_dir: Path):
    """Same numbers, full precision, in the API and in ``--format csv``."""
    import csv

    import mliapdb

    result = CliRunner().invoke(cli, ["--db", str(example_dir / "mliapdb.duckdb"), "query",
                                      "energy-error", "--kind", "single-point", "--format",
                                      "csv"])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    with mliapdb.open(example_dir / "mliapdb.duckdb") as db:
        frame = db.energy_error(kind="single_point")  # the stored spelling works too
    for column in frame.columns:
        value = frame.loc[0, column]
        assert (str(value) if isinstance(value, str) else repr(float(value))) == (
            row[column] if isinstance(value, str) else repr(float(row[column])))


def test_sql_refuses_writes_and_the_file_is_unchanged(example_dir: Path):
    import hashlib

    import mliapdb
    from mliapdb.errors import MliapdbError

    path = example_dir / "mliapdb.duckdb"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with mliapdb.open(path) as db:
        for statement in ("DELETE FROM calculations", "ATTACH 'x.duckdb' AS x",
                          "COPY calculations TO 'out.csv'"):
            with pytest.raises(MliapdbError, match="is read-only|exactly one"):
                db.sql(statement)
        with pytest.raises(MliapdbError, match="a single point keeps the DFT structure"):
            db.structures(model="chgnet-0.3.0", kind="single-point")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (example_dir / "out.csv").exists()


def test_info_says_what_the_database_holds(example_dir: Path, mp_dir: Path):
    import gzip

    from mliapdb import __version__
    from mliapdb.store import schema

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        n_entries = len(json.loads(fh.read()))
    path = example_dir / "mliapdb.duckdb"
    result = CliRunner().invoke(cli, ["--db", str(path), "info", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = [(r["section"], r["item"], r["value"]) for r in json.loads(result.stdout)]
    version = schema.code_schema_version()
    size = path.stat().st_size / 2**20
    (sp_hash,) = {r[1].split()[2] for r in rows if r[0] == "calculations"}
    assert rows == [
        ("file", str(path), f"{size:.1f} MiB"),
        ("schema", "version", f"{version} (this mliapdb {__version__} understands up to "
                              f"{version})"),
        ("setting", "default_symmetry_method", "moyopy"),
        ("setting", "default_symprec", "0.1"),
        ("setting", "dof_bins", "1,2,4,8,16,32"),
        ("setting", "model_hull_coverage", "complete"),
        ("setting", "near_hull_threshold", "0.05"),
        ("dataset", "mp", f"{n_entries} materials, {n_entries} accepted DFT entries, "
                          f"{n_entries} symmetry analyses, 1 source file(s)"),
        ("model", "chgnet-0.3.0", ""),
        ("calculations", f"chgnet-0.3.0 single-point {sp_hash} mp",
         "8 ok, 0 not converged, 0 failed"),
        ("derived", "model_hull", "1 built, 0 missing or stale"),
        ("derived", "ehull_error_rows", "1 built, 0 missing or stale"),
    ]
    import mliapdb

    with mliapdb.open(path) as db:
        assert db.info().rows() == rows


def test_one_spelling_of_every_option_value(example_dir: Path):
    import mliapdb

    with mliapdb.open(example_dir / "mliapdb.duckdb") as db:
        dashed = db.ehull_mae(by="dof-bin", kind="single-point", convention="dft-hull")
        underscored = db.ehull_mae(by="dof_bin", kind="single_point", convention="dft_hull")
    assert dashed.equals(underscored) and len(dashed)
