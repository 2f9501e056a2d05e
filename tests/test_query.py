"""``mliapdb query ehull-mae`` and ``mliapdb sql`` on a real ingested dataset with known model
energies: exact CLI output, every format, numbers checked against a direct computation, and
the energy-convention logic (a correction applied twice or not at all shows up)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.store.database import insert_rows, now
from mliapdb.store.tables import Calculation, ModelRow

DELTAS = [-0.040, -0.020, 0.010, -0.030]  # eV/atom, model - DFT


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _model(name: str, convention: str) -> dict:
    return ModelRow(
        name=name, family="test", version="0", checkpoint="none", energy_convention=convention,
        registered_at=now(),
    ).model_dump()


def _calc(dataset, mid, model, n_atoms, e_total, status="ok", settings_hash="abc") -> dict:
    return Calculation(
        dataset=dataset, material_id=mid, model=model, settings_hash=settings_hash,
        settings="{}",
        status=status, n_atoms=n_atoms, energy_single_point=e_total, energy_relaxed=e_total,
        n_steps=1, converged=status == "ok", created_at=now(),
    ).model_dump()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("query") / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")
               ).exit_code == 0
    with duckdb.connect(str(path)) as con:
        picked = con.execute(
            "SELECT e.dataset, e.material_id, e.n_atoms, e.energy_raw, e.energy_corrected "
            "FROM dft_entries e JOIN materials m USING (dataset, material_id) "
            "WHERE e.correction_mp2020 < 0 ORDER BY m.dof DESC, e.material_id LIMIT 4"
        ).fetchall()
        insert_rows(con, "models", [_model("model-a", "mp2020_corrected"), _model("raw-b", "raw")])
        rows = []
        for (ds, mid, n, raw, corr), d in zip(picked, DELTAS, strict=True):
            rows.append(_calc(ds, mid, "model-a", n, corr + d * n))  # corrected footing
            rows.append(_calc(ds, mid, "raw-b", n, raw + d * n))  # raw footing
        # a failure and an unconverged run are never counted
        ds, mid, n, raw, corr = con.execute(
            "SELECT dataset, material_id, n_atoms, energy_raw, energy_corrected "
            "FROM dft_entries ORDER BY material_id LIMIT 1"
        ).fetchone()
        rows.append(_calc(ds, mid, "model-a", n, None, status="failed", settings_hash="def"))
        rows.append(_calc(ds, mid, "raw-b", n, corr, status="not_converged", settings_hash="def"))
        insert_rows(con, "calculations", rows)
    # rows written by hand: store the model hulls and error rows as every ingest does
    assert run("--db", str(path), "ingest", "hulls").exit_code == 0
    return path


def test_ehull_mae_by_model_exact_output(db_path: Path) -> None:
    result = run("--db", str(db_path), "query", "ehull-mae", "--by", "model")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "model    n  mae_meV  rmse_meV  mean_signed_error_meV  median_signed_error_meV"
        "  frac_underpredicted\n"
        "-------  -  -------  --------  ---------------------  -----------------------"
        "  -------------------\n"
        "model-a  4       25     27.39                    -20                      -25"
        "                 0.75\n"
        "raw-b    4       25     27.39                    -20                      -25"
        "                 0.75\n"
    )
    assert result.stderr == (
        "Ehull error = model - DFT (meV/atom), fixed DFT hull (MP2020-corrected), converged "
        "relaxations; symmetry at symprec 0.1 A (moyopy); frac_underpredicted = share of "
        "materials with model Ehull < DFT Ehull\n"
    )


def test_ehull_mae_formats(db_path: Path) -> None:
    args = ["--db", str(db_path), "query", "ehull-mae", "--by", "model", "--model", "model-a"]
    full = [25.0, 27.386127875258307, -20.0, -25.0, 0.75]  # csv and json: every digit
    header, row = run(*args, "--format", "csv").stdout.splitlines()
    assert header == ("model,n,mae_meV,rmse_meV,mean_signed_error_meV,median_signed_error_meV,"
                      "frac_underpredicted")
    assert row.split(",")[:2] == ["model-a", "4"]
    assert [float(x) for x in row.split(",")[2:]] == pytest.approx(full, rel=1e-12)
    assert "27.39," not in row  # not rounded
    (record,) = json.loads(run(*args, "--format", "json").stdout)
    assert list(record) == ["model", "n", "mae_meV", "rmse_meV", "mean_signed_error_meV",
                            "median_signed_error_meV", "frac_underpredicted"]
    assert (record["model"], record["n"]) == ("model-a", 4)
    assert list(record.values())[2:] == pytest.approx(full, rel=1e-12)
    assert run(*args, "--format", "markdown").stdout == (
        "| model   | n | mae_meV | rmse_meV | mean_signed_error_meV | median_signed_error_meV"
        " | frac_underpredicted |\n"
        "|---------|--:|--------:|---------:|----------------------:|------------------------:"
        "|--------------------:|\n"
        "| model-a | 4 |      25 |    27.39 |                   -20 |                     -25"
        " |                0.75 |\n"
    )


@pytest.mark.parametrize("by,column", [("dof", "dof"), ("crystal-system", "crystal_system"),
                                       ("nelements", "nelements")])
def test_ehull_mae_by_group_matches_direct_computation(db_path: Path, by: str, column: str):
    result = run("--db", str(db_path), "query", "ehull-mae", "--by", by, "--model", "model-a",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute(
            f"SELECT m.{column}, c.energy_relaxed / c.n_atoms - e.energy_corrected / e.n_atoms "
            "FROM calculations c JOIN dft_entries e USING (dataset, material_id) "
            "JOIN materials m USING (dataset, material_id) "
            "WHERE c.model = 'model-a' AND c.status = 'ok'"
        ).fetchall()
    groups: dict = {}
    for key, err in rows:
        groups.setdefault(key, []).append(err)
    import statistics

    expected = [
        {"model": "model-a", column: key, "n": len(errs),
         "mae_meV": pytest.approx(1000 * sum(abs(x) for x in errs) / len(errs), rel=1e-12),
         "rmse_meV": pytest.approx(1000 * (sum(x * x for x in errs) / len(errs)) ** 0.5,
                                   rel=1e-12),
         "mean_signed_error_meV": pytest.approx(1000 * sum(errs) / len(errs), rel=1e-12),
         "median_signed_error_meV": pytest.approx(1000 * statistics.median(errs), rel=1e-12),
         "frac_underpredicted": sum(x < 0 for x in errs) / len(errs)}
        for key, errs in sorted(groups.items())
    ]
    assert json.loads(result.stdout) == expected


def test_correction_applied_twice_or_not_at_all_shifts_formation_energies(db_path: Path):
    """model-a predicts corrected energies, raw-b raw ones; both are right only with their own
    convention. Swapping the conventions shifts e_form by the MP2020 correction."""
    sql = ("SELECT max(abs(m.e_form_per_atom - d.e_form_per_atom)), "
           "min(abs(m.e_form_per_atom - d.e_form_per_atom - ?)) FROM model_energies m "
           "JOIN dft_stability d USING (dataset, material_id) WHERE m.model = ? AND m.converged")
    with duckdb.connect(str(db_path)) as con:
        for model in ("model-a", "raw-b"):
            worst, _ = con.execute(sql, [0.0, model]).fetchone()
            assert worst <= 0.040 + 1e-9  # only the designed deltas
        con.execute("UPDATE models SET energy_convention = CASE energy_convention "
                    "WHEN 'raw' THEN 'mp2020_corrected' ELSE 'raw' END")
        shifts = con.execute(
            "SELECT m.model, "
            "abs(m.e_form_per_atom - d.e_form_per_atom) - abs(d.correction_per_atom) "
            "FROM model_energies m JOIN dft_stability d USING (dataset, material_id) "
            "WHERE m.converged"
        ).fetchall()
        con.execute("UPDATE models SET energy_convention = CASE energy_convention "
                    "WHEN 'raw' THEN 'mp2020_corrected' ELSE 'raw' END")
    assert len(shifts) == 8
    for _model_name, excess in shifts:  # |error| ~ |correction| (> 0.3 eV/atom) +- delta
        assert abs(excess) <= 0.040 + 1e-9


def test_unknown_model_and_read_only_sql(db_path: Path) -> None:
    result = run("--db", str(db_path), "query", "ehull-mae", "--model", "chgnet-9")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no calculations with model 'chgnet-9' - run 'mliapdb ingest relax --model "
        "chgnet-9'\n"
    )
    result = run("--db", str(db_path), "sql", "DELETE FROM models")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "read-only" in result.stderr
    assert result.stderr.count("\n") == 1
    result = run("--db", str(db_path), "sql", "SELECT count(*) AS n FROM models", "--format", "csv")
    assert result.stdout == "n\n2\n"


def test_sql_with_parameters_and_formats(db_path: Path) -> None:
    result = run("--db", str(db_path), "sql",
                 "SELECT material_id, status FROM calculations WHERE status <> ? "
                 "ORDER BY status", "--param", "ok", "--format", "json")
    assert [r["status"] for r in json.loads(result.stdout)] == ["failed", "not_converged"]


def test_calculations_summary_exact_output(db_path: Path) -> None:
    result = run("--db", str(db_path), "query", "calculations", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "model,kind,settings,dataset,n,ok,not_converged,failed,mean_steps,mean_wall_s\n"
        "model-a,relax,abc,mp,4,4,0,0,1.0,\n"
        "model-a,relax,def,mp,1,0,0,1,,\n"
        "raw-b,relax,abc,mp,4,4,0,0,1.0,\n"
        "raw-b,relax,def,mp,1,0,1,0,,\n"
    )
