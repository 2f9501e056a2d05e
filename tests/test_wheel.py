"""The wheel is a working mliapdb: built from a copy of the checkout, installed into a fresh venv
outside it (its dependencies reached through a ``.pth`` line to this environment's
site-packages: nothing is downloaded), it creates a database, ingests a shared file, runs
CHGNet single points and answers a query as the checkout's own code does."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import mliapdb
from mliapdb.config import REPO_ROOT

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "mliapdb", "schema",
           "snapshots")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh venv with only the built wheel installed (plus a path to the dependencies)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        item = REPO_ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__",
                                                                            "_data"))
        else:
            shutil.copy2(item, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                  "--no-index", "-q", "-w", str(root / "dist")], src)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("mliapdb-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   root).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "mliapdb-test-deps.pth").write_text("\n".join(sorted(here)) + "\n")
    installed = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                      str(wheel)], root)
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_wheel_carries_schema_views_models_and_index(wheel_env: Path) -> None:
    code = ("import mliapdb, mliapdb.config as c; from mliapdb.store import schema; "
            "from mliapdb.compute.models import load_model_specs; "
            "print(mliapdb.__file__); print(c.schema_dir()); print(c.snapshots_dir()); "
            "print(schema.code_schema_version()); print(len(load_model_specs()))")
    out = _run([str(wheel_env / "bin" / "python"), "-c", code], wheel_env.parent)
    assert out.returncode == 0, out.stderr
    file, schema_dir, snapshots_dir, version, n_models = out.stdout.split()
    site = str(wheel_env)
    assert file.startswith(site) and schema_dir.startswith(site) and snapshots_dir.startswith(site)
    assert not file.startswith(str(REPO_ROOT))
    from mliapdb.compute.models import load_model_specs
    from mliapdb.store import schema

    assert int(version) == schema.code_schema_version()
    assert int(n_models) == len(load_model_specs())
    assert (Path(snapshots_dir) / "index.json").is_file()


def test_the_installed_cli_ingests_computes_and_queries(wheel_env: Path, mp_dir: Path,
                                                        tmp_path: Path) -> None:
    cli = str(wheel_env / "bin" / "mliapdb")
    db = tmp_path / "wheel.duckdb"
    steps = [
        ["--db", str(db), "ingest", "entries", str(mp_dir / "Mn_O_Y_entries.json.gz")],
        ["--db", str(db), "ingest", "relax", "--model", "chgnet-0.3.0", "--kind",
         "single-point", "--chemsys", "Mn-O", "--max-sites", "6", "--limit", "4"],
    ]
    for args in steps:
        done = _run([cli, *args], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    query = ["--db", str(db), "query", "ehull-mae", "--by", "model", "--kind", "single-point",
             "--format", "csv"]
    installed = _run([cli, *query], tmp_path)
    assert installed.returncode == 0, installed.stderr
    here = _run([sys.executable, "-m", "mliapdb", *query], REPO_ROOT)
    assert here.returncode == 0, here.stderr
    assert installed.stdout == here.stdout
    header, row = installed.stdout.splitlines()[:2]
    assert header.startswith("model,n,mae_meV")
    assert row.startswith("chgnet-0.3.0,4,")
    assert mliapdb.__version__ in _run([cli, "--version"], tmp_path).stdout
