"""Issue 10, item 8: property-based tests (hypothesis) that throw random argument lists and
malformed entry files at the CLI and assert that no input ever gets a traceback: the exit
status is 0, 1 or 2; a failure (1) prints exactly one ``Error: ...`` line on stderr; a usage
error (2) is click's usage block ending with its ``Error:`` line. A refused ingest leaves the
database byte-identical.

Command and option names come from the click command tree itself; values are numbers (NaN,
infinities, negatives, huge), odd strings (escape sequences, 300 characters, SQL) and paths
to crafted files (garbage, deep JSON, a folder, a non-UTF-8 name, a path below a file, a real
database). Safe by construction: every example runs in its own temporary folder (the working
directory too), ``ingest relax`` always gets an unknown model last (no model is loaded),
``ingest mp`` gets no key and a closed port on 127.0.0.1 (``--endpoint`` is never drawn), HTTP
proxies point at a closed port, and no drawn value names a place outside the temporary
folders that could be written. Derandomized and bounded (about 150 examples in all)."""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from mliapdb.cli.main import cli
from tests.trust import digest, run

# hypothesis caches (unicode tables, constants) go to the temporary folder, not the repository
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "mliapdb-hypothesis"))

SCALE = float(os.environ.get("MLIAPDB_FUZZ_SCALE", "1"))
"""Multiplies the number of examples; any other value than 1 also draws new random ones
(``MLIAPDB_FUZZ_SCALE=20 pytest tests/test_cli_fuzz.py`` for a long hunt)."""

FUZZ = settings(
    deadline=None,
    derandomize=SCALE == 1,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)


def command_tree(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    """``(path, command)`` of every leaf command of the CLI, e.g. ``(("ingest", "entries"),
    <Command entries>)``."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_tree(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = list(command_tree())
ALL_OPTIONS = sorted({opt for _, c in COMMANDS for p in c.params if isinstance(p, click.Option)
                      for opt in p.opts})
NEVER = {("ingest", "mp"): {"--endpoint"}}  # the only option that could reach a real host
UNKNOWN_MODEL = ["--model", "zz-no-such-model"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLOSED = f"http://127.0.0.1:{_closed_port()}/"


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No key, a closed MP endpoint and closed proxies for the whole module; MLIAPDB_DEBUG
    off (it would re-raise)."""
    saved = dict(os.environ)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        os.environ[var] = CLOSED.rstrip("/")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ""
    os.environ["MP_API_ENDPOINT"] = CLOSED
    for var in ("MP_API_KEY", "MLIAPDB_DEBUG", "MLIAPDB_DB"):
        os.environ.pop(var, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def small_entries(mp_dir: Path) -> list[dict]:
    """Three real Mn-O entries with few sites (fast symmetry analysis)."""
    with gzip.open(mp_dir / "Mn_O_entries.json.gz") as fh:
        entries = json.load(fh)
    return sorted(entries, key=lambda e: len(e["structure"]["sites"]))[:3]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_entries) -> Path:
    """A base folder with a real database of the three entries."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "entries.json").write_text(json.dumps(small_entries))
    result = run("--db", base / "base.duckdb", "ingest", "entries", base / "entries.json")
    assert result.exit_code == 0, result.output
    return base


@contextmanager
def example_dir(workdir: Path) -> Iterator[Path]:
    """A fresh folder (and working directory) for one example, with a copy of the database
    and crafted files; removed afterwards."""
    here = Path(tempfile.mkdtemp(dir=workdir))
    cwd = os.getcwd()
    shutil.copy(workdir / "base.duckdb", here / "db.duckdb")
    (here / "entries.json.gz").write_bytes(gzip.compress((workdir / "entries.json").read_bytes()))
    (here / "garbage.json").write_bytes(b"\x00\xffnot json{")
    (here / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (here / "empty.json").write_bytes(b"")
    (here / "dict.json").write_text('{"a": [1, 2]}')
    (here / "numbers.json").write_text("[1, 2, 3]")
    (here / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (here / "notdb.duckdb").write_text("id,x\n1,2\n")
    (here / "file").write_text("a regular file")
    (here / "folder").mkdir()
    with open(os.fsencode(here) + b"/n\xffme.json", "wb") as fh:
        fh.write(b"[{}]")
    os.chdir(here)
    try:
        yield here
    finally:
        os.chdir(cwd)
        shutil.rmtree(here, ignore_errors=True)


NUMBERS = st.sampled_from([
    "0", "1", "-1", "2", "3", "10", "0.1", "1e-3", "-0.5", "1e9", "-1e9", "1e308", "1e-320",
    "nan", "-nan", "inf", "-inf", "99999999999999999999999", "0x10", "1,2,4", "1,,2", "-0",
])


def values(here: Path) -> st.SearchStrategy[str]:
    """Option and argument values: numbers, odd strings, paths to crafted files."""
    numbers = NUMBERS
    strings = st.sampled_from([
        "", " ", "-", "--", "x", "é", "\x1b[31mred\x1b[0m", "a" * 300, "Mn-O", "Mn-O-Y",
        "Li-Fe-O", "Xx-Yy", "O", "mp-35", "mp-1", "dof", "dof-bin", "model", "spacegroup",
        "csv", "json", "table", "markdown", "mp", "mp-2025", "bad name!", "SELECT 1",
        "SELECT count(*) FROM materials", "SELECT 1; SELECT 2",
        "COPY materials TO 'leak.csv'", "ATTACH 'db.duckdb' AS w", "chgnet-0.3.0",
        "sevennet-0", "cpu", "relax", "single-point", "zzz", "%s%n", "{}", "[]",
    ])
    paths = st.sampled_from([
        "db.duckdb", "entries.json.gz", "garbage.json", "deep.json", "empty.json", "dict.json",
        "numbers.json", "bad.gz", "notdb.duckdb", "folder", "file", "file/below.duckdb",
        "missing.json", "missing/x.duckdb", "out", "x" * 300 + ".json",
        os.fsdecode(b"n\xffme.json"), str(here / "db.duckdb"), str(here / "out.duckdb"),
        "/sys/x.duckdb", CLOSED + "x.duckdb",
    ])
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=6)
    return st.one_of(numbers, strings, paths, text)


@st.composite
def argv(draw, here: Path) -> list[str]:
    """A random argument list for one command of the tree."""
    path, command = draw(st.sampled_from(COMMANDS))
    value = values(here)
    db_values = st.sampled_from(["db.duckdb", "new.duckdb", "notdb.duckdb", "folder",
                                 "file/x.duckdb", "missing/x.duckdb", "/sys/x.duckdb",
                                 "x" * 300, os.fsdecode(b"n\xffme.duckdb")])
    options = [p for p in command.params if isinstance(p, click.Option)
               and not set(p.opts) & NEVER.get(path, set())]
    args: list[str] = []
    if draw(st.booleans()):
        args += ["--db", draw(db_values)]
    args += list(path)
    for argument in (p for p in command.params if isinstance(p, click.Argument)):
        if draw(st.integers(0, 9)) > 0:  # mostly given, as often as its nargs allows
            args += [draw(value) for _ in range(1 if argument.nargs == 1 else
                                                draw(st.integers(1, 2)))]
    numeric = (click.types.IntParamType, click.types.FloatParamType)

    def give(option: click.Option) -> None:
        name = draw(st.sampled_from(option.opts + option.secondary_opts))
        args.append(name)
        if option.is_flag or option.count:
            return
        if name == "--db":
            args.append(draw(db_values))
        elif isinstance(option.type, click.Choice) and draw(st.integers(0, 3)):
            args.append(draw(st.sampled_from(list(option.type.choices))))
        elif isinstance(option.type, numeric) and draw(st.integers(0, 3)):
            args.append(draw(NUMBERS))
        else:
            args.append(draw(value))

    for option in options:
        if option.required and draw(st.integers(0, 9)):
            give(option)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["option"] * 8 + ["argument", "foreign"]))
        if kind == "option" and options:
            give(draw(st.sampled_from(options)))
        elif kind == "foreign":
            args.append(draw(st.sampled_from(ALL_OPTIONS + ["--help", "-h", "--version"])))
        else:
            args.append(draw(value))
    if path == ("ingest", "relax"):
        args += UNKNOWN_MODEL  # the last --model wins: never a real model
    return args


def assert_no_traceback(result, args) -> None:
    """Exit 0, 1 or 2, no exception but SystemExit; 1: one ``Error:`` line; 2: click's
    usage format."""
    where = (args, result.exit_code, result.stderr[-2000:], repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), where
    assert result.exit_code in (0, 1, 2), where
    assert "Traceback" not in result.output, where
    lines = result.stderr.strip().splitlines()
    if result.exit_code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), where
        assert "internal error" not in lines[0], where
    elif result.exit_code == 2:
        assert lines and lines[-1].startswith("Error: "), where
        assert len(lines) == 1 or lines[0].startswith("Usage: "), where


@settings(FUZZ, max_examples=int(110 * SCALE))
@given(data=st.data())
def test_random_argument_lists_never_get_a_traceback(workdir: Path, data) -> None:
    with example_dir(workdir) as here:
        args = data.draw(argv(here), label="argv")
        result = run(*args)
        event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics
        assert_no_traceback(result, args)
        relax = args[-2:] == UNKNOWN_MODEL
        if relax and result.exit_code == 0 and not {"--help", "-h"} & set(args):
            pytest.fail(f"ingest relax ran: {args}")


# --- malformed entry files ----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.sampled_from([0, -1, 10**400, 1e308, -1e308, math.nan, math.inf, -math.inf, 1e-320])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from(["", "Mn", "Xx", "O2-", "mp-1", "GGA", "GGA+U", "R2SCAN", "pymatgen"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["@module", "@class", "species", "element", "occu", "abc", "xyz",
                         "matrix", "sites", "lattice", "energy", "data", "x"])
        | st.text(max_size=4),
        inner, max_size=3),
    max_leaves=6,
)


def _nodes(obj, trail=()) -> list[tuple]:
    """Every (container path) below ``obj``: paths of its dicts' keys and lists' items."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.append((*trail, key))
            found.extend(_nodes(value, (*trail, key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found.append((*trail, i))
            found.extend(_nodes(value, (*trail, i)))
    return found


def _at(obj, trail):
    for step in trail:
        obj = obj[step]
    return obj


@st.composite
def malformed(draw, entries: list[dict]) -> bytes:
    """The real entries with one to three random changes (a value replaced, a key dropped, a
    node wrapped or emptied), as plain or gzip JSON, sometimes cut short."""
    data = copy.deepcopy(entries)
    for _ in range(draw(st.integers(1, 3))):
        nodes = _nodes(data)
        if not nodes:
            break
        trail = draw(st.sampled_from(nodes))
        parent, key = _at(data, trail[:-1]), trail[-1]
        action = draw(st.sampled_from(["replace", "replace", "drop", "wrap", "empty", "number"]))
        if action == "replace":
            parent[key] = draw(JSON)
        elif action == "drop" and isinstance(parent, dict):
            del parent[key]
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif action == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], list | dict) else None
        elif isinstance(parent[key], int | float) and not isinstance(parent[key], bool):
            parent[key] = parent[key] * draw(st.sampled_from([-1, 0, 1e-9, 1e9, 1e300]))
    blob = json.dumps(data, allow_nan=True).encode()
    if draw(st.booleans()):
        blob = gzip.compress(blob)
    if draw(st.integers(0, 9)) == 0:
        blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


@settings(FUZZ, max_examples=int(45 * SCALE))
@given(data=st.data())
def test_malformed_entry_files_never_get_a_traceback(workdir: Path, small_entries, data) -> None:
    from mliapdb.materials.entries import ENERGY_PER_ATOM_RANGE

    blob = data.draw(malformed(small_entries), label="file")
    with example_dir(workdir) as here:
        crafted, db = here / "crafted.json", here / "db.duckdb"
        crafted.write_bytes(blob)
        args = ["--db", str(db), "ingest", "entries", str(crafted)]
        before = digest(db)
        result = run(*args)
        event(f"exit {result.exit_code}")
        assert_no_traceback(result, args)
        assert result.exit_code in (0, 1), result.output
        if result.exit_code == 1:
            assert digest(db) == before, "a refused ingest changed the database"
            return
        lo, hi = ENERGY_PER_ATOM_RANGE
        with duckdb.connect(str(db), read_only=True) as con:
            worst = con.execute(
                "SELECT min(least(energy_raw, coalesce(energy_corrected, energy_raw)) / n_atoms),"
                " max(greatest(energy_raw, coalesce(energy_corrected, energy_raw)) / n_atoms) "
                "FROM dft_entries").fetchone()
        assert lo <= worst[0] and worst[1] <= hi, worst
