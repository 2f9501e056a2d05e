"""Issue 10, "sane inputs" and "no traceback" for ``ingest entries``: real MP entries from
../shared/data, one of them mutated, written into a crafted file; each refusal is one
``Error:`` line naming the file and the entry, and the database is left byte-identical (or
absent). Plus the symmetry tolerance range, an unwritable ``--db`` folder and the CLI's
top-level guard."""

from __future__ import annotations

import copy
import errno
import gzip
import json
import math
import os
import shutil
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.trust import assert_one_line_error, run, unchanged

MN_O = "Mn_O_entries.json.gz"


@pytest.fixture(scope="module")
def mn_o(mp_dir: Path) -> list[dict]:
    with gzip.open(mp_dir / MN_O) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def base_db(tmp_path_factory, mp_dir: Path) -> Path:
    """A real database of the Mn-O entries (copied by each test that writes to it)."""
    path = tmp_path_factory.mktemp("base") / "db.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / MN_O)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def db(base_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "db" / "mliapdb.duckdb"
    path.parent.mkdir()
    shutil.copy(base_db, path)
    return path


def write(path: Path, data, gz: bool = True) -> Path:
    text = json.dumps(data).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def refused(db: Path, *args: object, pieces: tuple[str, ...], code: int = 1) -> str:
    """``ingest entries ARGS`` into ``db`` (existing) and into a new path next to it: one
    error line with ``pieces`` both times, the existing file byte-identical, the new one
    absent."""
    new = db.parent / "new.duckdb"
    with unchanged(db.parent):
        line = assert_one_line_error(run("--db", db, "ingest", "entries", *args), *pieces,
                                     code=code)
        assert_one_line_error(run("--db", new, "ingest", "entries", *args), *pieces, code=code)
    assert not new.exists()
    return line


# --- case 1: entries outside the physical range -------------------------------------------


def _set_lattice(entry: dict, matrix: list[list[float]]) -> None:
    entry["structure"]["lattice"] = {"matrix": matrix}
    for site in entry["structure"]["sites"]:
        site.pop("xyz", None)


def _mutations(mn_o: list[dict]) -> dict:
    """name -> (index of the mutated entry, mutation, expected pieces of the message)."""
    oxide = min(  # the entry with the largest MP2020 correction per atom
        (i for i, e in enumerate(mn_o[:40]) if e.get("correction")),
        key=lambda i: mn_o[i]["correction"] / len(mn_o[i]["structure"]["sites"]),
    )

    def per_atom(value: float):
        return lambda e: e.update(energy=value * len(e["structure"]["sites"]))

    def overlap(e):
        e["structure"]["sites"][1]["abc"] = list(e["structure"]["sites"][0]["abc"])
        e["structure"]["sites"][1].pop("xyz", None)

    def close(e):  # two atoms 0.3 A apart along a (the cell is ~8.7 A wide)
        a = json.loads(json.dumps(e["structure"]["sites"][0]["abc"]))
        length = math.dist((0, 0, 0), e["structure"]["lattice"]["matrix"][0])
        e["structure"]["sites"][1]["abc"] = [a[0] + 0.3 / length, a[1], a[2]]
        e["structure"]["sites"][1].pop("xyz", None)

    def set_occu(e):
        e["structure"]["sites"][0]["species"][0]["occu"] = 0.5

    def no_sites(e):
        e["structure"]["sites"] = []

    def deep(e):
        node: dict = {}
        e["data"]["deep"] = node
        for _ in range(40):
            node["x"] = {}
            node = node["x"]

    return {
        "-50000 eV/atom": (2, per_atom(-50000.0), ("raw energy -50000 eV/atom is outside the "
                                                    "accepted range [-20, +5] eV/atom",)),
        "+50 eV/atom": (2, per_atom(50.0), ("raw energy 50 eV/atom is outside",)),
        "-20.5 eV/atom": (2, per_atom(-20.5), ("raw energy -20.5 eV/atom is outside",)),
        "corrected below -20": (oxide, per_atom(-19.99), ("MP2020-corrected energy",
                                                          "is outside the accepted range")),
        "inf energy": (2, lambda e: e.update(energy=math.inf),
                       ("energy is inf, not a finite number (eV)",)),
        "huge integer energy": (2, lambda e: e.update(energy=10**400),
                                ("not a finite number (eV)",)),
        "string energy": (2, lambda e: e.update(energy="-9.1"),
                          ("energy is '-9.1', not a finite number (eV)",)),
        "no sites": (2, no_sites, ("structure has no sites - an entry needs at least one atom",)),
        "zero volume": (3, lambda e: _set_lattice(e, [[2, 0, 0], [0, 2, 0], [2, 0, 0]]),
                        ("degenerate lattice",)),
        "tiny cell": (2, lambda e: _set_lattice(e, [[0.2, 0, 0], [0, 3, 0], [0, 0, 3]]),
                      ("atoms overlap their periodic images (lattice spacing 0.2 A), closer "
                       "than 0.5 A",)),
        "skewed 1e8 A cell": (3, lambda e: _set_lattice(e, [[3, 0, 0], [1e8, 3, 0],
                                                            [1e8, 1e8, 3]]),
                              ("lattice vector of 1.414e+08 A, longer than 1000 A - not a bulk "
                               "DFT cell",)),  # moyopy panics (Rust) on it
        "same position": (1, overlap, ("atoms 0 and 1 are 0 A apart, closer than 0.5 A",)),
        "0.3 A apart": (1, close, ("atoms 0 and 1 are 0.3 A apart",)),
        "disordered": (1, set_occu, ("structure is disordered (partial occupancies)",)),
        "foreign module": (2, lambda e: e["data"].update(x={"@module": "antigravity",
                                                            "@class": "Fly"}),
                           ("carries an object of module 'antigravity'",)),
        "nested data": (2, deep, ("nested more than 32 levels deep",)),
        "parameters list": (2, lambda e: e.update(parameters=[1, 2]),
                            ("'parameters' is a JSON list, not an object",)),
        "task_id object": (2, lambda e: e["data"].update(task_id={"a": 1}),
                           ("data.task_id is \"{'a': 1}\", not a JSON string",)),
        "no id": (2, lambda e: (e.pop("entry_id"), e["data"].pop("material_id", None)),
                  ("entry 2: no material id",)),
        "no structure": (2, lambda e: e.pop("structure"), ("no structure",)),
    }


CASES = [
    "-50000 eV/atom", "+50 eV/atom", "-20.5 eV/atom", "corrected below -20", "inf energy",
    "huge integer energy", "string energy", "no sites", "zero volume", "tiny cell",
    "skewed 1e8 A cell",
    "same position", "0.3 A apart", "disordered", "foreign module", "nested data",
    "parameters list", "task_id object", "no id", "no structure",
]


@pytest.mark.parametrize("case", CASES)
def test_unphysical_entry_is_refused_by_name(case, mn_o, db, tmp_path) -> None:
    index, mutate, pieces = _mutations(mn_o)[case]
    data = copy.deepcopy(mn_o[: max(5, index + 1)])
    mutate(data[index])
    bad = write(tmp_path / "crafted.json.gz", data)
    label = f"entry {index} ({mn_o[index]['entry_id']})" if case != "no id" else "entry 2"
    line = refused(db, bad, pieces=(f"{bad}: {label}: ", *pieces))
    assert "antigravity" not in sys.modules  # refused before monty could import it
    assert line.count(str(bad)) == 1


def test_the_50000_ev_entry_gets_no_hull(mn_o, db, tmp_path) -> None:
    """The issue's case: the entry used to be stored with a max Ehull of 49,991 eV/atom."""
    data = copy.deepcopy(mn_o)
    data[7]["energy"] = -50000.0 * len(data[7]["structure"]["sites"])
    bad = write(tmp_path / "minus50k.json.gz", data)
    line = refused(db, bad, pieces=(f"{bad}: entry 7 ({mn_o[7]['entry_id']}): raw energy "
                                    "-50000 eV/atom is outside the accepted range",))
    assert line.endswith("(docs/conventions.md, Input checks)")


def test_every_shared_entry_passes_the_checks(mp_dir: Path) -> None:
    """The ranges leave room: all 2,695 entries of the shared files pass, and the
    closest-pair search equals pymatgen's distance matrix on them."""
    import numpy as np

    from mliapdb.materials.entries import (
        ENERGY_PER_ATOM_RANGE,
        MIN_DISTANCE,
        _closest_pair,
        load_entry_files,
    )

    files = sorted(p for p in mp_dir.glob("*.json.gz") if not p.name.startswith("mbd-"))
    parsed = load_entry_files(files)
    assert len(parsed) == 2695
    lo, hi = ENERGY_PER_ATOM_RANGE
    per_atom = [p.energy_raw / len(p.entry.structure) for p in parsed]
    corrected = [(p.energy_raw + (p.correction_mp2020 or 0)) / len(p.entry.structure)
                 for p in parsed]
    assert lo + 5 < min(per_atom + corrected) and max(per_atom + corrected) < hi - 4
    for p in parsed[::7]:
        s = p.entry.structure
        if len(s) < 2:
            continue
        dm = s.distance_matrix.copy()
        np.fill_diagonal(dm, np.inf)
        assert dm.min() > 2 * MIN_DISTANCE
        d, i, j = _closest_pair(s.copy().perturb(0.0))
        assert d == math.inf
        # the same structure squeezed until its closest pair is below the limit
        squeezed = s.copy()
        squeezed.scale_lattice(s.volume * (0.9 * MIN_DISTANCE / dm.min()) ** 3)
        dm2 = squeezed.distance_matrix.copy()
        np.fill_diagonal(dm2, np.inf)
        d, i, j = _closest_pair(squeezed)
        if i == j:  # a lattice vector shorter than the limit is reported first
            assert d < MIN_DISTANCE
        else:
            assert d == pytest.approx(dm2.min(), abs=1e-9) and dm2[i, j] == pytest.approx(d)


# --- case 3: files that are no entry files ---------------------------------------------------


def _file_cases(tmp_path: Path, mn_o: list[dict]) -> dict[str, tuple[Path, tuple[str, ...]]]:
    d = tmp_path / "files"
    d.mkdir()

    def put(name: str, blob: bytes) -> Path:
        (d / name).write_bytes(blob)
        return d / name

    good = json.dumps(mn_o[:3]).encode()
    return {
        "deeply nested": (put("deep.json", b"[" * 200_000 + b"]" * 200_000),
                          ("not an entry file (JSON nested too deeply)",)),
        "not json": (put("notes.json", b"this is { not json"), ("not JSON (",)),
        "binary": (put("x.bin", bytes(range(256)) * 4), ("not JSON (",)),
        "gzip of garbage": (put("garbage.json.gz", b"\x1f\x8b\x08\x00" + b"\x07" * 200),
                            ("corrupt gzip data",)),
        "truncated gzip": (put("cut.json.gz", gzip.compress(good)[:-30]),
                           ("corrupt gzip data",)),
        "gzip of text": (put("text.json.gz", gzip.compress(b"hello")), ("not JSON (",)),
        "empty": (put("empty.json", b""), ("empty file",)),
        "empty gzip": (put("empty.json.gz", gzip.compress(b"  \n")), ("empty file",)),
        "empty list": (put("list.json", b"[]"), ("no entries",)),
        "dict": (put("dict.json", json.dumps({"entries": mn_o[:2]}).encode()),
                 ("got a JSON dict",)),
        "list of numbers": (put("numbers.json", b"[1, 2.5, 3]"),
                            ("entry 0: not a JSON object",)),
        "list of lists": (put("lists.json", b"[[], []]"), ("entry 0: not a JSON object",)),
        "5000 digits": (put("digits.json", b"[" + b"7" * 5000 + b"]"), ("not JSON (",)),
        "missing keys": (put("keys.json", json.dumps([{"entry_id": "mp-1"}]).encode()),
                         ("entry 0 (mp-1): no energy",)),
        "a folder": (d / "sub", ("cannot read (Is a directory)",)),
        "300-character name": (d / ("x" * 300 + ".json"), ("cannot read (File name too long)",)),
    }


FILE_CASES = [
    "deeply nested", "not json", "binary", "gzip of garbage", "truncated gzip", "gzip of text",
    "empty", "empty gzip", "empty list", "dict", "list of numbers", "list of lists",
    "5000 digits", "missing keys", "a folder", "300-character name",
]


@pytest.mark.parametrize("case", FILE_CASES)
def test_file_that_is_no_entry_file_is_one_line(case, mn_o, db, tmp_path) -> None:
    path, pieces = _file_cases(tmp_path, mn_o)[case]
    if case == "a folder":
        path.mkdir()
    refused(db, path, pieces=(f"{path}: ", *pieces))


def test_non_utf8_file_name_is_one_line(mn_o, db, tmp_path) -> None:
    raw = os.fsencode(tmp_path) + b"/entries-\xff\xfe.json"
    with open(raw, "wb") as fh:
        fh.write(b"[1]")
    line = refused(db, os.fsdecode(raw), pieces=("entries-\\xff\\xfe.json: entry 0: not a JSON "
                                                 "object",))
    assert str(tmp_path) in line
    # the same file with good entries is ingested (the name is recorded as given)
    with open(raw, "wb") as fh:
        fh.write(json.dumps(mn_o[:3]).encode())
    assert run("--db", db, "ingest", "entries", os.fsdecode(raw)).exit_code == 0


def test_missing_file_and_good_file_together(mp_dir, db, tmp_path) -> None:
    refused(db, mp_dir / MN_O, tmp_path / "nope.json",
            pieces=(f"no such file: {tmp_path / 'nope.json'}",))


# --- case 2: symmetry tolerance range -----------------------------------------------------


@pytest.mark.parametrize("value", ["1e9", "2", "0", "-0.1", "1e-6", "nan", "inf", "-inf"])
def test_symprec_outside_range_is_a_usage_error(value, mp_dir, db) -> None:
    new = db.parent / "new.duckdb"
    with unchanged(db.parent):
        for target in (db, new):
            result = run("--db", target, "ingest", "entries", mp_dir / MN_O, "--symprec",
                         "0.1", "--symprec", value)
            assert result.exit_code == 2, result.output
            assert "Traceback" not in result.output
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("Error: Invalid value for '--symprec': ")
            assert last.endswith("is not in the range 1e-05 to 1 (Angstrom)")


def test_symprec_range_in_the_library(mp_dir, mn_o) -> None:
    from pymatgen.core import Structure

    from mliapdb.config import SYMPREC_RANGE
    from mliapdb.errors import MliapdbError
    from mliapdb.materials.entries import load_entries
    from mliapdb.materials.ingest import ingest_parsed
    from mliapdb.materials.symmetry import analyze_symmetry

    assert SYMPREC_RANGE == (1e-5, 1.0)
    structure = Structure.from_dict(mn_o[1]["structure"])
    for ok in SYMPREC_RANGE:
        assert analyze_symmetry(structure, symprec=ok).spacegroup_number >= 1
    for bad in (0.0, 1.5, math.nan, -1e-3):
        with pytest.raises(ValueError, match="symprec"):
            analyze_symmetry(structure, symprec=bad)
    parsed = load_entries([("x", "0" * 64, mn_o[:2])])
    with pytest.raises(MliapdbError, match=r"symprec 5 is outside the accepted range \[1e-05, 1\]"):
        ingest_parsed(None, parsed, symprecs=(0.1, 5.0))  # refused before the database


def test_symprec_help_names_the_range() -> None:
    result = run("ingest", "entries", "--help")
    assert "1e-05 to 1;" in " ".join(result.stdout.split())


# --- case 4: a --db in a folder that cannot be written -----------------------------------


def test_db_in_unwritable_folder(mp_dir, tmp_path) -> None:
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_create_in("/sys"):
        pytest.skip("no read-only /sys here")
    with unchanged(Path("/sys/x.duckdb")):
        assert_one_line_error(
            run("--db", "/sys/x.duckdb", "ingest", "entries", mp_dir / MN_O),
            "cannot write /sys/x.duckdb: the folder /sys is not writable (Permission denied) "
            "- pass a --db in a folder you can write",
        )


def _can_create_in(folder: str) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def test_db_below_a_regular_file(mp_dir, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with unchanged(tmp_path):
        assert_one_line_error(
            run("--db", blocker / "x.duckdb", "ingest", "entries", mp_dir / MN_O),
            f"cannot create {blocker / 'x.duckdb'}: {blocker} is not a folder",
        )
        assert_one_line_error(
            run("--db", tmp_path / "nope" / "x.duckdb", "ingest", "entries", mp_dir / MN_O),
            f"the folder {tmp_path / 'nope'} does not exist",
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_db_in_chmod_read_only_folder(mp_dir, tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with unchanged(folder):
            assert_one_line_error(
                run("--db", folder / "x.duckdb", "ingest", "entries", mp_dir / MN_O),
                f"the folder {folder} is not writable (Permission denied)",
            )
    finally:
        folder.chmod(0o755)


def test_non_utf8_db_path(mp_dir, tmp_path) -> None:
    db = os.fsdecode(os.fsencode(tmp_path) + b"/db-\xff.duckdb")
    with unchanged(tmp_path):
        assert_one_line_error(run("--db", db, "ingest", "entries", mp_dir / MN_O),
                              "db-\\xff.duckdb: the path is not valid UTF-8")


# --- case 5: the top-level guard ----------------------------------------------------------


class Panic(BaseException):
    """Like pyo3's PanicException (a Rust panic in moyopy): no Exception subclass."""


def _guarded(exc: BaseException):
    """A group of mliapdb's class with one command ``boom`` that raises ``exc``."""
    from mliapdb.cli.main import MliapdbGroup

    @click.group(cls=MliapdbGroup)
    def group() -> None:
        pass

    @group.command()
    @click.option("--n", type=int, default=0)
    def boom(n: int) -> None:
        raise exc

    return group


@pytest.mark.parametrize(
    "exc,line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x.duckdb"),
         "Error: /data/x.duckdb: No space left on device - free some disk space and run it "
         "again"),
        (PermissionError(errno.EACCES, "Permission denied", "/etc/shadow"),
         "Error: /etc/shadow: Permission denied - check its permissions, or use another path"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"),
         "Error: /tmp: Is a directory - pass a file, not a folder"),
        (OSError(errno.ENAMETOOLONG, "File name too long", b"/x/\xff" + b"y" * 10),
         "Error: /x/\\xffyyyyyyyyyy: File name too long - use a shorter name"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
         "Error: a -> b: Invalid cross-device link - check the path and try again"),
        (RuntimeError("boom\nsecond line"),
         "Error: internal error: RuntimeError: boom - please report it (set MLIAPDB_DEBUG=1 "
         "for the traceback)"),
        (KeyError("k"),
         "Error: internal error: KeyError: 'k' - please report it (set MLIAPDB_DEBUG=1 for "
         "the traceback)"),
        (RecursionError(), "Error: internal error: RecursionError:  - please report it (set "
                           "MLIAPDB_DEBUG=1 for the traceback)"),
        (Panic("Inverse of unimodular transformation must fit in i32."),
         "Error: internal error: Panic: Inverse of unimodular transformation must fit in i32. - "
         "please report it (set MLIAPDB_DEBUG=1 for the traceback)"),
    ],
)
def test_guard_turns_any_error_into_one_line(exc, line, monkeypatch) -> None:
    monkeypatch.delenv("MLIAPDB_DEBUG", raising=False)
    result = CliRunner().invoke(_guarded(exc), ["boom"])
    assert_one_line_error(result)
    assert result.stderr == line + "\n"


def test_guard_debug_reraises_and_keeps_mliapdb_errors(monkeypatch) -> None:
    from mliapdb.errors import MliapdbError

    monkeypatch.setenv("MLIAPDB_DEBUG", "1")
    result = CliRunner().invoke(_guarded(RuntimeError("boom")), ["boom"])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    result = CliRunner().invoke(_guarded(MliapdbError("x.json: bad\n\x1b[31mred")), ["boom"])
    assert result.exit_code == 1 and result.stderr == "Error: x.json: bad [31mred\n"


def test_guard_keeps_click_usage_errors_and_ctrl_c(monkeypatch) -> None:
    monkeypatch.delenv("MLIAPDB_DEBUG", raising=False)
    result = CliRunner().invoke(_guarded(RuntimeError()), ["boom", "--n", "x"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ")
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--n': 'x' is not a valid integer.")
    result = CliRunner().invoke(_guarded(click.UsageError("no way")), ["boom"])
    assert result.exit_code == 2 and result.stderr.strip().endswith("Error: no way")
    result = CliRunner().invoke(_guarded(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == 130 and result.stderr == "Interrupted.\n"
    result = CliRunner().invoke(_guarded(RuntimeError()), ["boom", "--help"])
    assert result.exit_code == 0 and "--n" in result.stdout
