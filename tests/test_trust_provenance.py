"""Provenance of every result (issue "Trust", item 3) and the ``ingest relax`` inputs that
used to give a traceback or nonsense, with real CHGNet 0.3.0 on real small MP cells and real
DuckDB files: a checkpoint other than the registered one is refused unless ``--as NAME``
stores it as a model of its own, ``models`` rows are never rewritten, a checkpoint of the
wrong architecture is one line, limits and sizes must be positive, ``--chemsys`` names the
elements the database lacks; every refusal leaves the database file byte-identical."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from trust import assert_one_line_error, run, unchanged

from mliapdb.store import schema

pytestmark = pytest.mark.slow
MODEL = "chgnet-0.3.0"
CUSTOM = "chgnet-0.3.0-custom"
SMALL = ("--max-sites", "4", "--limit", "2", "--kind", "single-point")
SHIFT = 0.01
"""eV/atom added to every elemental reference of the custom checkpoint (so its energies
are CHGNet 0.3.0's plus 0.01 eV/atom: the rows prove which file made them)."""


def wheel_file(package: str, rel: str) -> Path:
    found = importlib.util.find_spec(package)
    assert found is not None and found.submodule_search_locations, package
    path = Path(next(iter(found.submodule_search_locations))) / rel
    assert path.is_file(), path
    return path


OFFICIAL = ("chgnet", "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar")
CHGNET_020 = ("chgnet", "pretrained/0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar")
SEVENNET_0 = ("sevenn", "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth")


def relax(db: Path, *args: object):
    return run("--db", db, "ingest", "relax", *args)


def model_row(db: Path, name: str) -> str:
    """Every column of the ``models`` row of ``name``, as text (byte-compared)."""
    with duckdb.connect(str(db), read_only=True) as con:
        return repr(con.execute("SELECT * FROM models WHERE name = ?", [name]).fetchall())


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("provenance")


@pytest.fixture(scope="module")
def base_db(folder: Path, mp_dir: Path) -> Path:
    path = folder / "base.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def custom_checkpoint(folder: Path) -> Path:
    """A real CHGNet 0.3.0 checkpoint (same architecture), fine-tuned by hand: every
    elemental reference energy shifted by ``SHIFT``. Another file, another sha256."""
    import torch

    state = torch.load(wheel_file(*OFFICIAL), map_location="cpu", weights_only=False)
    state["model"]["state_dict"]["composition_model.fc.weight"] += SHIFT
    path = folder / "chgnet-finetuned.pth.tar"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def official(base_db: Path, folder: Path):
    """A database with CHGNet 0.3.0's own single points of the two smallest Mn-O cells."""
    path = folder / "official.duckdb"
    shutil.copy(base_db, path)
    result = relax(path, "--model", MODEL, "--chemsys", "Mn-O", *SMALL)
    assert result.exit_code == 0, result.output
    return path, result


def copy(src: Path, folder: Path, name: str) -> Path:
    dst = folder / name
    shutil.copy(src, dst)
    return dst


# --- case 1: a checkpoint swap -----------------------------------------------------------------


def test_other_checkpoint_is_refused_without_as(official, custom_checkpoint: Path) -> None:
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", custom_checkpoint)
    assert_one_line_error(result, f"checkpoint {custom_checkpoint} (sha256 ",
                          f"is not the checkpoint of model {MODEL}", "chgnet-0.3.0.toml",
                          "pass --as NAME")


def test_registered_checkpoint_given_explicitly_is_the_model(official) -> None:
    """--checkpoint naming the model's own file (same sha256) files under the model: a
    no-op here, all done, the file untouched."""
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", wheel_file(*OFFICIAL))
    assert result.exit_code == 0, result.output
    assert "2 selected, 2 already done, none run" in result.stderr


def test_as_stores_a_model_of_its_own(official, custom_checkpoint: Path, tmp_path: Path) -> None:
    from mliapdb.digest import sha256_file

    db = copy(official[0], tmp_path, "db.duckdb")
    before = model_row(db, MODEL)
    official_calcs = rows(db, "SELECT * FROM calculations WHERE model = ? ORDER BY material_id",
                          [MODEL])
    result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", custom_checkpoint,
                   "--as", CUSTOM)
    assert result.exit_code == 0, result.output
    assert f"{CUSTOM} (from {MODEL}) (settings " in result.stderr
    assert result.stdout.splitlines()[2].split()[:5] == [CUSTOM, "62165a48d80d985a", "2", "0",
                                                         "2"]
    # the official row and rows are exactly as they were
    assert model_row(db, MODEL) == before
    assert rows(db, "SELECT * FROM calculations WHERE model = ? ORDER BY material_id",
                [MODEL]) == official_calcs
    # the derived model's row: base model, checkpoint path and sha256, base metadata
    sha = sha256_file(custom_checkpoint)
    (row,) = rows(db, "SELECT family, version, checkpoint, checkpoint_sha256, base_model, "
                      "energy_convention, functional, training_set FROM models WHERE name = ?",
                  [CUSTOM])
    assert row == ("chgnet", "0.3.0", str(custom_checkpoint.resolve()), sha, MODEL,
                   "mp2020_corrected", "PBE/PBE+U", "MPtrj")
    official_sha = rows(db, "SELECT checkpoint_sha256 FROM models WHERE name = ?", [MODEL])
    assert official_sha == [(sha256_file(wheel_file(*OFFICIAL)),)] != [(sha,)]
    # each row records its checkpoint; same materials, same settings, energies 0.01 eV/atom apart
    by_model = rows(db, "SELECT model, material_id, settings_hash, checkpoint_sha256, "
                        "energy_single_point / n_atoms FROM calculations ORDER BY material_id, "
                        "model")
    assert len(by_model) == 4
    for (m1, mid1, s1, sha1, e1), (m2, mid2, s2, sha2, e2) in zip(by_model[::2], by_model[1::2],
                                                                  strict=True):
        assert (m1, m2) == (MODEL, CUSTOM) and mid1 == mid2 and s1 == s2
        assert sha1 == official_sha[0][0] and sha2 == sha
        assert e2 - e1 == pytest.approx(SHIFT, abs=2e-4)
    # the views keep them apart
    assert rows(db, "SELECT model, count(*) FROM model_energies GROUP BY model ORDER BY model"
                ) == [(MODEL, 2), (CUSTOM, 2)]

    # a rerun with the same file resumes (no-op: nothing written)
    with unchanged(db):
        again = relax(db, "--model", MODEL, *SMALL, "--checkpoint", custom_checkpoint,
                      "--as", CUSTOM)
    assert again.exit_code == 0 and "2 selected, 2 already done, none run" in again.stderr
    # another file under the same derived name is refused
    with unchanged(db):
        other = relax(db, "--model", MODEL, *SMALL, "--checkpoint", wheel_file(*OFFICIAL),
                      "--as", CUSTOM)
    assert_one_line_error(other, f"model {CUSTOM} is registered in {db} with checkpoint "
                          f"{custom_checkpoint.resolve()}", "pass another --as NAME")
    # the same name from another base model is refused
    with unchanged(db):
        base = relax(db, "--model", "chgnet-0.2.0", *SMALL, "--checkpoint", custom_checkpoint,
                     "--as", CUSTOM)
    assert_one_line_error(base, f"model {CUSTOM} in {db} is derived from {MODEL}, not from "
                          "chgnet-0.2.0")


@pytest.mark.parametrize(
    "extra,pieces",
    [
        (["--as", "chgnet-0.2.0"], ["--as chgnet-0.2.0:", "chgnet-0.2.0.toml already defines "
                                    "model chgnet-0.2.0 - pick a name of your own"]),
        (["--as", "Bad Name"], ["--as 'Bad Name': a model name is lower case letters"]),
    ],
)
def test_as_name_must_be_new_and_valid(official, custom_checkpoint: Path, extra, pieces) -> None:
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", custom_checkpoint, *extra)
    assert_one_line_error(result, *pieces)


def test_as_needs_a_checkpoint(official) -> None:
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--as", CUSTOM)
    assert_one_line_error(result, f"--as {CUSTOM} needs --checkpoint PATH")


def test_models_row_is_never_rewritten(official, tmp_path: Path) -> None:
    """A row whose energy convention (or functional) differs from the metadata is refused,
    not overwritten: the stored rows were made under it."""
    db = copy(official[0], tmp_path, "db.duckdb")
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE models SET energy_convention = 'raw' WHERE name = ?", [MODEL])
    # one more material to do, so the run would register (and used to overwrite) the row
    args = ("--model", MODEL, "--max-sites", "4", "--limit", "3", "--kind", "single-point")
    with unchanged(db):
        result = relax(db, *args)
    assert_one_line_error(result, f"model {MODEL} is registered in {db} with energy "
                          "convention 'raw'", "gives 'mp2020_corrected'", "--as NAME")
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE models SET energy_convention = 'mp2020_corrected', "
                    "functional = 'r2SCAN' WHERE name = ?", [MODEL])
    with unchanged(db):
        result = relax(db, *args)
    assert_one_line_error(result, "with functional 'r2SCAN'", "gives 'PBE/PBE+U'")


def test_user_checkpoint_model_registers_its_first_checkpoint(
    official, custom_checkpoint: Path, tmp_path: Path
) -> None:
    """A model with no published sha256 (user checkpoints: MACE, MatterSim, ...): the first
    checkpoint registers, another one later under the same name is refused (says --as)."""
    from mliapdb.compute.calculations import model_identity, register_model
    from mliapdb.compute.models.registry import get_model_spec, sha256_file
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as dbmod

    path = copy(official[0], tmp_path, "db.duckdb")
    spec = dataclasses.replace(get_model_spec(MODEL), name="chgnet-user", checkpoint="user",
                               checkpoint_sha256="")
    con = dbmod.connect(path)
    try:
        first = model_identity(con, spec, str(custom_checkpoint))
        assert first.spec is spec and first.checkpoint_sha256 == sha256_file(custom_checkpoint)
        info = {"checkpoint": str(custom_checkpoint), "checkpoint_sha256": first.checkpoint_sha256}
        register_model(con, spec, SimpleNamespace(mliapdb_info=info))
        assert model_identity(con, spec, str(custom_checkpoint)).checkpoint_sha256
        with pytest.raises(MliapdbError, match="model chgnet-user is registered in .* with "
                           r"checkpoint .*chgnet-finetuned.pth.tar .* pass --as NAME"):
            model_identity(con, spec, str(wheel_file(*OFFICIAL)))
        # and register_model itself refuses to overwrite the row
        other = {"checkpoint": "x", "checkpoint_sha256": "0" * 64}
        with pytest.raises(MliapdbError, match="pass --as NAME"):
            register_model(con, spec, SimpleNamespace(mliapdb_info=other))
        assert con.execute("SELECT checkpoint_sha256 FROM models WHERE name = 'chgnet-user'"
                           ).fetchall() == [(first.checkpoint_sha256,)]
    finally:
        con.close()


# --- case 2: a checkpoint of the wrong architecture ---------------------------------------------


@pytest.mark.parametrize("which", ["sevennet", "chgnet-0.2.0", "random"])
def test_wrong_architecture_is_one_line(official, folder: Path, which: str) -> None:
    db, _ = official
    if which == "random":
        checkpoint = folder / "random.pth.tar"
        checkpoint.write_bytes(bytes(range(256)) * 8)
        kind = "UnpicklingError"
    elif which == "sevennet":
        checkpoint, kind = wheel_file(*SEVENNET_0), "KeyError"
    else:  # CHGNet 0.2.0 has output biases that 0.3.0 (mlp_out_bias = false) has not
        checkpoint, kind = wheel_file(*CHGNET_020), "RuntimeError"
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", checkpoint,
                       "--as", "chgnet-wrong")
    assert_one_line_error(result, "cannot load model chgnet-wrong: checkpoint ",
                          f"{checkpoint} cannot be loaded as model 'chgnet-wrong' (chgnet): "
                          f"{kind}", "is it a chgnet checkpoint of the same architecture?")
    # without --as it is refused earlier, by its sha256
    with unchanged(db):
        result = relax(db, "--model", MODEL, *SMALL, "--checkpoint", checkpoint)
    assert_one_line_error(result, f"is not the checkpoint of model {MODEL}", "--as NAME")


# --- case 3: limits and sizes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "option,value,bound",
    [("--limit", "-1", "x>=1"), ("--limit", "0", "x>=1"), ("--max-sites", "0", "x>=1"),
     ("--min-nelements", "0", "x>=1"), ("--min-nelements", "-2", "x>=1"),
     ("--threads", "-1", "x>=0"), ("--max-steps", "0", "x>=1")],
)
def test_non_positive_limits_are_usage_errors(official, option, value, bound) -> None:
    """click usage errors: exit 2, the usage lines then one Error line, no traceback."""
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, option, value)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: Invalid value for '{option}': {value} is not in the range "
                      f"{bound}."]


def test_select_targets_refuses_non_positive_limits(official) -> None:
    from mliapdb.compute.calculations import select_targets
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as dbmod

    con = dbmod.connect(official[0])
    try:
        for kwargs, text in (({"limit": 0}, "--limit must be 1 or more, got 0"),
                             ({"max_sites": -3}, "--max-sites must be 1 or more, got -3"),
                             ({"min_nelements": 0}, "--min-nelements must be 1 or more")):
            with pytest.raises(MliapdbError, match=text):
                select_targets(con, **kwargs)
    finally:
        con.close()


# --- case 4: --chemsys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chemsys,pieces",
    [
        ("Li-Fe-O", ["--chemsys Li-Fe-O: the database holds no material with Fe, Li (of "
                     "Fe-Li-O)", "'mliapdb ingest mp --chemsys Fe-Li-O'",
                     "or leave Fe, Li out of --chemsys"]),
        ("Li-Fe", ["the database holds no material with Fe, Li (of Fe-Li) - ingest the "
                   "entries of Fe-Li first"]),
        ("Xx-O", ["--chemsys Xx-O: unknown element symbol(s) Xx - write it like Mn-O-Y"]),
        ("mn-o", ["unknown element symbol(s) mn, o"]),
        ("Mn--O", ["bad --chemsys 'Mn--O' - write it like Mn-O-Y"]),
    ],
)
def test_chemsys_names_what_the_database_lacks(official, chemsys: str, pieces) -> None:
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, "--chemsys", chemsys, *SMALL)
    assert_one_line_error(result, *pieces)


def test_chemsys_of_another_dataset(official) -> None:
    db, _ = official
    with unchanged(db):
        result = relax(db, "--model", MODEL, "--chemsys", "Mn-O", "--dataset", "other", *SMALL)
    assert_one_line_error(result, "dataset 'other' holds no material with Mn, O (of Mn-O)")


def test_status_line_says_how_many_were_selected(official) -> None:
    _, result = official
    assert f"{MODEL} (settings 62165a48d80d985a): 2 selected within Mn-O, 0 already done, " \
        "2 ok" in result.stderr


# --- the distributed (Dask) path --------------------------------------------------------------


def test_distributed_run_files_under_the_same_identity(
    official, custom_checkpoint: Path, tmp_path: Path
) -> None:
    """On a real LocalCluster: a foreign checkpoint is refused before any shard is
    submitted; with as_name the rows are the derived model's, with its sha256, equal to the
    serial path's."""
    from distributed import Client, LocalCluster

    from mliapdb.compute.calculations import RunOptions, select_targets
    from mliapdb.compute.cluster import parts_root, run_distributed
    from mliapdb.digest import sha256_file
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as dbmod

    serial = copy(official[0], tmp_path, "serial.duckdb")
    assert relax(serial, "--model", MODEL, *SMALL, "--checkpoint", custom_checkpoint,
                 "--as", CUSTOM).exit_code == 0
    path = copy(official[0], tmp_path, "db.duckdb")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        con = dbmod.connect(path)
        try:
            targets = select_targets(con, max_sites=4, limit=2)
            with unchanged(path), pytest.raises(MliapdbError, match="pass --as NAME"):
                run_distributed(con, path, MODEL, targets, RunOptions(
                    kind="single_point", checkpoint=str(custom_checkpoint)), client=client)
            report = run_distributed(con, path, MODEL, targets, RunOptions(
                kind="single_point", checkpoint=str(custom_checkpoint), as_name=CUSTOM),
                client=client)
        finally:
            con.close()
    assert report.model == CUSTOM and report.status_counts == {"ok": 2}
    assert not parts_root(path).exists()
    query = ("SELECT model, material_id, settings_hash, checkpoint_sha256, status, "
             "round(energy_single_point, 6) FROM calculations WHERE model = ? "
             "ORDER BY material_id")
    got = rows(path, query, [CUSTOM])
    assert got == rows(serial, query, [CUSTOM]) and len(got) == 2
    assert {r[3] for r in got} == {sha256_file(custom_checkpoint)}
    assert rows(path, "SELECT base_model, checkpoint_sha256 FROM models WHERE name = ?",
                [CUSTOM]) == [(MODEL, sha256_file(custom_checkpoint))]


def test_part_of_a_foreign_checkpoint_is_refused_at_merge(
    official, custom_checkpoint: Path, tmp_path: Path
) -> None:
    """A worker that loaded another file than the registered one (a remote cluster, where
    the client could not hash it) wrote a part: merging it is refused, nothing written."""
    from mliapdb.compute import cluster as distributed
    from mliapdb.compute.calculations import RunOptions, resolve_settings, select_targets
    from mliapdb.compute.models.registry import get_model_spec
    from mliapdb.compute.run import run_calculations
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as dbmod

    path = copy(official[0], tmp_path, "db.duckdb")
    con = dbmod.connect(path)
    try:
        targets = select_targets(con, max_sites=4, limit=3)
    finally:
        con.close()
    shash = resolve_settings(get_model_spec(MODEL), "single_point").settings_hash()
    (shard,) = distributed.make_shards(targets, MODEL, shash, 3)
    folder = distributed.run_dir(path, MODEL, shash)
    job = distributed.ShardJob(model=MODEL, kind="single_point", settings_overrides={},
                               checkpoint=str(custom_checkpoint), device="cpu", threads=1,
                               folder=str(folder))
    part = Path(distributed.run_shard(shard, job))
    meta = json.loads(distributed.part_metadata(part)["mliapdb_info"])
    assert meta["checkpoint"] == str(custom_checkpoint)
    con = dbmod.connect(path)
    try:
        with unchanged(path), pytest.raises(MliapdbError, match=f"part {part}: checkpoint "
                                            f"{custom_checkpoint} .* is not the checkpoint of "
                                            f"model {MODEL}"):
            run_calculations(con, MODEL, targets, RunOptions(kind="single_point"), db_path=path)
    finally:
        con.close()
    assert part.exists()  # left for the user to move away, as the message of a bad part says

    # a worker whose file is not the one the client hashed refuses its shard
    shutil.rmtree(distributed.parts_root(path))
    bad = dataclasses.replace(job, checkpoint_sha256="0" * 64)
    with pytest.raises(MliapdbError, match="on a worker: model chgnet-0.3.0: this worker's "
                       "checkpoint has sha256 .*, the client's 0000"):
        distributed.run_shard(shard, bad)
    assert not folder.exists() or not list(folder.glob("*.parquet"))


# --- migration 0006 ---------------------------------------------------------------------------


def test_migration_records_the_checkpoint_of_earlier_rows(tmp_path: Path) -> None:
    """A schema-5 database: its calculations take their model's registered sha256."""
    from datetime import datetime

    from mliapdb.store import database as dbmod

    path = tmp_path / "v5.duckdb"
    sha = "ab" * 32
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        for mig in schema.migrations()[:5]:
            con.execute(mig.path.read_text())
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [mig.version, mig.name, datetime(2025, 1, 1)])
        con.execute("INSERT INTO models (name, family, version, checkpoint, checkpoint_sha256, "
                    "energy_convention, registered_at) VALUES ('m', 'chgnet', '1', 'f', ?, "
                    "'raw', now())", [sha])
        con.execute("INSERT INTO calculations (dataset, material_id, model, settings_hash, "
                    "settings, status, n_atoms, converged, created_at) VALUES "
                    "('mp', 'mp-1', 'm', 's', '{}', 'ok', 1, true, now())")
    con = dbmod.connect(path)
    try:
        assert con.execute("SELECT checkpoint_sha256 FROM calculations").fetchall() == [(sha,)]
        assert con.execute("SELECT base_model FROM models").fetchall() == [(None,)]
    finally:
        con.close()
