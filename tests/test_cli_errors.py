"""``mliapdb ingest relax`` refuses bad requests with one line and exit status 1, before any
model is loaded or anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli


@pytest.fixture(scope="module")
def db_path(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("errors") / "db.duckdb"
    result = CliRunner().invoke(
        cli, ["--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")]
    )
    assert result.exit_code == 0
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "chgnet-9"], "unknown model 'chgnet-9' - run 'mliapdb models' to list them"),
        (["--model", "chgnet-0.3.0", "--chemsys", "Li-Fe"],
         "--chemsys Li-Fe: the database holds no material with Fe, Li (of Fe-Li) - ingest the "
         "entries of Fe-Li first ('mliapdb ingest entries FILE' or 'mliapdb ingest mp --chemsys "
         "Fe-Li')"),
        (["--model", "chgnet-0.3.0", "--material-id", "mp-0"],
         "material id(s) not in the database: mp-0 - ingest their entries first "
         "('mliapdb ingest entries FILE')"),
        (["--model", "chgnet-0.3.0", "--limit", "1", "--checkpoint", "/nonexistent.pth"],
         "cannot load model chgnet-0.3.0: model 'chgnet-0.3.0': checkpoint file "
         "/nonexistent.pth not found"),
        (["--model", "mace-mp-0", "--limit", "1"],
         "cannot load model mace-mp-0: model 'mace-mp-0' needs the package 'mace-torch' - "
         "pip install 'mliapdb[mace]' in its own venv (make install-mace)"),
        (["--model", "chgnet-0.3.0", "--limit", "1", "--fmax", "-1"],
         "model chgnet-0.3.0: bad relaxation settings: fmax must be a positive number (eV/Å), "
         "got -1.0"),
    ],
)
def test_relax_errors(db_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--db", str(db_path), "ingest", "relax", *args])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


def test_unavailable_device(db_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(
        cli, ["--db", str(db_path), "ingest", "relax", "--model", "chgnet-0.3.0", "--limit", "1",
              "--device", "cuda"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: device 'cuda' is not available here (")
    assert result.stderr.endswith(") - use --device cpu\n")


def test_query_without_calculations_says_what_to_do(db_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(db_path), "query", "ehull-mae", "--format",
                                      "csv"])
    assert result.exit_code == 0
    assert result.stdout == (
        "model,dof,n,mae_meV,rmse_meV,mean_signed_error_meV,median_signed_error_meV,"
        "frac_underpredicted\n"
    )
    assert result.stderr.splitlines()[-1] == (
        "no usable calculations match - run 'mliapdb ingest relax --model MODEL' first"
    )
