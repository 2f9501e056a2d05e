"""``mliapdb ingest relax`` on a real Dask LocalCluster (worker processes) with real CHGNet and
SevenNet on CPU over small real MP structures: rows equal to the serial path's, a worker
SIGKILLed mid-run loses and duplicates nothing, leftover parts are merged (not recomputed),
the CLI options, and one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.compute.calculations import RunOptions

pytestmark = pytest.mark.slow
CHGNET = "chgnet-0.3.0"
SEVENNET = "sevennet-0"
# Small Mn-O cells (1-3 sites): fcc Mn, two MnO, two MnO2.
IDS = ("mp-8634", "mp-1238899", "mp-1238773", "mp-25223", "mp-1221542")
OVERRIDES = {"fmax": 0.1, "max_steps": 20}
EV_PER_ATOM_TOL = 1e-6


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def id_args(ids=IDS) -> list[str]:
    return [arg for mid in ids for arg in ("--material-id", mid)]


@pytest.fixture(scope="module")
def base_db(tmp_path_factory, mp_dir: Path) -> Path:
    """A database holding the real MP entries of ``IDS`` (a subset of Mn_O_entries)."""
    folder = tmp_path_factory.mktemp("distributed")
    with gzip.open(mp_dir / "Mn_O_entries.json.gz", "rt") as fh:
        entries = [e for e in json.load(fh)
                   if any(e["entry_id"] == m or e["entry_id"].startswith(m + "-") for m in IDS)]
    assert len(entries) == len(IDS)
    source = folder / "Mn_O_subset.json.gz"
    with gzip.open(source, "wt") as fh:
        json.dump(entries, fh)
    path = folder / "base.duckdb"
    result = run("--db", path, "ingest", "entries", source)
    assert result.exit_code == 0, result.output
    return path


def copy_db(base_db: Path, folder: Path, name: str = "db.duckdb") -> Path:
    path = folder / name
    shutil.copy(base_db, path)
    return path


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: two worker processes of one thread each (with nannies)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


def select(path: Path, ids=IDS):
    from mliapdb.compute.calculations import select_targets
    from mliapdb.store import database as db

    con = db.connect(path)
    try:
        return select_targets(con, material_ids=ids)
    finally:
        con.close()


def energies(path: Path, model: str, settings_hash: str) -> dict[str, tuple]:
    """material_id -> (status, n_steps, single point and relaxed energies in eV/atom)."""
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT material_id, status, n_steps, energy_single_point / n_atoms, "
            "energy_relaxed / n_atoms FROM calculations WHERE model = ? AND settings_hash = ?",
            [model, settings_hash],
        ).fetchall()
        (n_models,) = con.execute("SELECT count(*) FROM models WHERE name = ?", [model]).fetchone()
    assert n_models == 1
    out = {r[0]: r[1:] for r in rows}
    assert len(out) == len(rows), "a material has more than one row"
    return out


def assert_same(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    assert sorted(got) == sorted(want)
    for mid, (status, steps, e_sp, e_rel) in want.items():
        g_status, g_steps, g_sp, g_rel = got[mid]
        assert (g_status, g_steps) == (status, steps), mid
        assert abs(g_sp - e_sp) <= EV_PER_ATOM_TOL, mid
        assert abs(g_rel - e_rel) <= EV_PER_ATOM_TOL, mid


def serial_energies(base_db: Path, folder: Path, model: str, overrides: dict, ids=IDS):
    """The serial path (run_calculations, 1 torch thread) on a copy of the database."""
    from mliapdb.compute.calculations import RunOptions
    from mliapdb.compute.run import run_calculations
    from mliapdb.store import database as db

    path = copy_db(base_db, folder, f"serial-{model}.duckdb")
    con = db.connect(path)
    try:
        report = run_calculations(con, model, select(path, ids),
                                  RunOptions(settings_overrides=overrides))
    finally:
        con.close()
    assert sum(report.status_counts.values()) == len(ids)
    return energies(path, model, report.settings_hash)


# --- no cluster needed --------------------------------------------------------------------


def test_shards_are_deterministic(base_db: Path) -> None:
    from mliapdb.compute.cluster import make_shards

    targets = select(base_db)
    shards = make_shards(targets, CHGNET, "abc", 2)
    again = make_shards(list(reversed(targets)), CHGNET, "abc", 2)
    assert [s.shard_id for s in shards] == [s.shard_id for s in again]
    assert [len(s.targets) for s in shards] == [2, 2, 1]
    keys = [(t.nsites, t.material_id) for s in shards for t in s.targets]
    assert keys == sorted(keys)  # select_targets' order
    assert len({s.shard_id for s in shards}) == 3
    other = make_shards(targets, CHGNET, "abd", 2)  # other settings: other shards
    assert not {s.shard_id for s in other} & {s.shard_id for s in shards}


def test_part_schema_follows_the_calculations_table(base_db: Path) -> None:
    from mliapdb.compute.cluster import calculation_schema, primary_key

    with duckdb.connect(str(base_db), read_only=True) as con:
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            "'calculations' ORDER BY ordinal_position").fetchall()]
    assert sorted(calculation_schema().names) == sorted(columns)
    assert primary_key() == ["dataset", "material_id", "model", "settings_hash"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "exclude each other"),
        (["--slurm-jobs", "2"], "--slurm-jobs only applies with --slurm"),
        (["--shard-size", "2"], "--shard-size only applies with --workers"),
        (["--workers", "2", "--shard-size", "0"], "--shard-size must be 1 or more"),
        (["--workers", "2", "--engine", "torch-sim", *id_args()],
         "torch-sim has no chgnet model - use --engine ase"),
    ],
)
def test_bad_cluster_options_are_one_line_errors(base_db: Path, args, message) -> None:
    result = run("--db", base_db, "ingest", "relax", "--model", CHGNET, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_unreachable_scheduler(base_db: Path, tmp_path: Path) -> None:
    import dask
    import distributed  # noqa: F401  (its config defaults must exist before config.set)

    path = copy_db(base_db, tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = run("--db", path, "ingest", "relax", "--model", CHGNET,
                     "--scheduler", "tcp://127.0.0.1:9", *id_args())
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert result.stderr.count("\n") == 1


def test_dask_not_installed(base_db: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what a missing package raises
    path = copy_db(base_db, tmp_path)
    result = run("--db", path, "ingest", "relax", "--model", CHGNET, "--workers", "2",
                 *id_args())
    assert result.exit_code == 1
    assert "pip install 'mliapdb[distributed]'" in result.stderr


def test_slurm_job_script() -> None:
    from mliapdb.compute.cluster import ClusterOptions, slurm_cluster

    options = ClusterOptions(slurm=True, slurm_processes=2, slurm_queue="debug",
                             slurm_account="matsci", slurm_walltime="00:10:00",
                             slurm_memory="8GB")
    cluster = slurm_cluster(options)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p debug", "#SBATCH -A matsci", "#SBATCH -t 00:10:00"):
        assert line in script
    assert "--nthreads 1" in script and "--nworkers 2" in script


# --- on a real LocalCluster ----------------------------------------------------------------


def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    base_db: Path, tmp_path: Path, client
) -> None:
    """SIGKILL a worker process after the first part is merged: the nanny restarts it, Dask
    reschedules its task, and every material ends with one row equal to the serial one."""
    from mliapdb.compute.cluster import run_dir, run_distributed
    from mliapdb.store import database as db

    path = copy_db(base_db, tmp_path)
    pids_before = client.run(os.getpid)
    killed: list[int] = []
    merged: list[str] = []

    def kill_a_busy_worker(part) -> None:
        merged.append(part.shard_id)
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy, "no worker holds a shard: nothing to reschedule"
        os.kill(pids_before[busy[0]], signal.SIGKILL)  # it holds a shard: Dask must redo it
        killed.append(pids_before[busy[0]])

    con = db.connect(path)
    try:
        report = run_distributed(con, path, CHGNET, select(path),
                                 RunOptions(settings_overrides=OVERRIDES), client=client,
                                 shard_size=1, on_shard=kill_a_busy_worker)
    finally:
        con.close()
    assert killed and len(merged) == report.n_shards == len(IDS)
    client.wait_for_workers(2)
    assert killed[0] not in client.run(os.getpid).values()  # that process is gone
    assert report.n_skipped == 0 and sum(report.status_counts.values()) == len(IDS)
    assert not run_dir(path, CHGNET, report.settings_hash).exists()
    got = energies(path, CHGNET, report.settings_hash)
    assert_same(got, serial_energies(base_db, tmp_path, CHGNET, OVERRIDES))


def test_sevennet_through_the_cluster(base_db: Path, tmp_path: Path, client) -> None:
    """A second model family: SevenNet-0 on the cluster equals SevenNet-0 in series."""
    from mliapdb.compute.cluster import run_distributed
    from mliapdb.compute.models import load_model_specs
    from mliapdb.store import database as db

    if SEVENNET not in load_model_specs():
        pytest.skip(f"{SEVENNET} is not in the model registry")
    ids, overrides = IDS[:2], {"fmax": 0.1, "max_steps": 5}  # one shard: one model load
    path = copy_db(base_db, tmp_path)
    con = db.connect(path)
    try:
        report = run_distributed(con, path, SEVENNET, select(path, ids),
                                 RunOptions(settings_overrides=overrides), client=client,
                                 shard_size=2)
    finally:
        con.close()
    assert report.n_shards == 1 and sum(report.status_counts.values()) == 2
    got = energies(path, SEVENNET, report.settings_hash)
    assert_same(got, serial_energies(base_db, tmp_path, SEVENNET, overrides, ids))
    with duckdb.connect(str(path), read_only=True) as con:
        (sha, sevenn) = con.execute(
            "SELECT checkpoint_sha256, package_versions->>'$.sevenn' FROM models "
            "WHERE name = ?", [SEVENNET]).fetchone()
    assert len(sha) == 64 and sevenn  # provenance from the worker's calculator


def test_torch_sim_engine_on_the_cluster(base_db: Path, tmp_path: Path, client) -> None:
    """Workers relax their shard as one torch-sim batch: same rows as the serial ASE path
    within 1 meV/atom (the batched path's tolerance), engine recorded per row."""
    from mliapdb.compute.cluster import run_distributed
    from mliapdb.store import database as db

    pytest.importorskip("torch_sim")
    ids, overrides = IDS[:4], {"fmax": 0.1, "max_steps": 20}
    path = copy_db(base_db, tmp_path)
    con = db.connect(path)
    try:
        report = run_distributed(con, path, SEVENNET, select(path, ids), RunOptions(
            settings_overrides=overrides, engine="torch-sim", max_atoms=6), client=client,
            shard_size=2)
    finally:
        con.close()
    assert report.n_shards == 2 and report.status_counts == {"ok": 4}
    got = energies(path, SEVENNET, report.settings_hash)
    want = serial_energies(base_db, tmp_path, SEVENNET, overrides, ids)
    assert sorted(got) == sorted(want)
    for mid, (status, _steps, e_sp, e_rel) in want.items():
        assert got[mid][0] == status
        assert abs(got[mid][2] - e_sp) < 1e-5 and abs(got[mid][3] - e_rel) < 1e-3, mid
    with duckdb.connect(str(path), read_only=True) as con:
        engines = con.execute("SELECT DISTINCT engine FROM calculations").fetchall()
    assert engines == [("torch-sim",)]


@pytest.mark.parametrize("how", ["cluster", "serial"])
def test_leftover_parts_are_merged_not_recomputed(
    base_db: Path, tmp_path: Path, client, how: str
) -> None:
    """An interrupted run left two parts; the next run (CLI, --scheduler, or serial without
    a cluster) merges them first and computes only the rest."""
    import pyarrow.parquet as pq

    from mliapdb.compute import cluster as distributed
    from mliapdb.compute.calculations import resolve_settings
    from mliapdb.compute.models import get_model_spec

    path = copy_db(base_db, tmp_path)
    overrides = {"fmax": 0.1, "max_steps": 10}
    shash = resolve_settings(get_model_spec(CHGNET), "relax", overrides).settings_hash()
    shards = distributed.make_shards(select(path), CHGNET, shash, 2)
    folder = distributed.run_dir(path, CHGNET, shash)
    job = distributed.ShardJob(model=CHGNET, kind="relax", settings_overrides=overrides,
                               checkpoint=None, device="cpu", threads=1, folder=str(folder))
    client.gather([client.submit(distributed.run_shard, s, job, pure=False)
                   for s in shards[:2]])
    parts = sorted(folder.glob("*.parquet"))
    assert len(parts) == 2
    written = {r["material_id"]: r["created_at"]
               for part in parts for r in pq.read_table(part).to_pylist()}
    # a rescheduled task whose part exists returns at once (no model loaded in this process)
    assert distributed.run_shard(shards[0], job) == str(distributed.part_path(folder,
                                                                            shards[0].shard_id))
    assert not distributed._MODELS

    cluster = ["--scheduler", client.scheduler.address, "--shard-size", "2"]
    result = run("--db", path, "ingest", "relax", "--model", CHGNET,
                 *(cluster if how == "cluster" else []), "--fmax", "0.1",
                 "--max-steps", "10", *id_args())
    assert result.exit_code == 0, result.output
    if how == "cluster":
        assert result.stderr.count("leftover part ") == 2
    else:
        assert "merged 2 Parquet part(s) left by an interrupted distributed run" in result.stderr
    assert f"{len(IDS)} selected, 4 already done, 1 ok" in result.stderr
    assert not folder.exists()
    with duckdb.connect(str(path), read_only=True) as con:
        stored = dict(con.execute(
            "SELECT material_id, created_at FROM calculations WHERE settings_hash = ?", [shash]
        ).fetchall())
    assert len(stored) == len(IDS)
    assert all(stored[mid] == created for mid, created in written.items())  # not recomputed


def test_cli_workers(base_db: Path, tmp_path: Path) -> None:
    """``ingest relax --workers 2``: a LocalCluster of its own, same summary as serial."""
    path = copy_db(base_db, tmp_path)
    args = ["--db", path, "ingest", "relax", "--model", CHGNET, "--workers", "2",
            "--shard-size", "2", "--fmax", "0.1", "--max-steps", "3", *id_args()]
    result = run(*args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "settings", "selected", "already_done", "ok",
                                "not_converged", "failed", "wall_s"]
    row = lines[2].split()
    assert row[0] == CHGNET and row[2:4] == ["5", "0"] and sum(map(int, row[4:7])) == 5
    assert result.stderr.count("shard ") == 3  # one status line per merged shard (3 shards)
    assert not Path(f"{path}.parts").exists()
    again = run(*args)
    assert again.exit_code == 0 and "5 selected, 5 already done, none run" in again.stderr


def test_cluster_run_holds_the_database_only_to_merge(base_db: Path, tmp_path: Path,
                                                      client) -> None:
    """On a path, the client opens the database only to read what is done and to merge a
    batch of parts: between merges another process opens it read-write; the rows equal the
    serial ones."""
    import subprocess

    from mliapdb.compute.cluster import run_distributed
    from mliapdb.compute.commits import CommitOptions

    path = copy_db(base_db, tmp_path)
    opened: list[int] = []

    def another_process_writes(part) -> None:
        done = subprocess.run(
            [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
             "print(c.execute('SELECT count(*) FROM calculations').fetchone()[0])", str(path)],
            capture_output=True, text=True)
        assert done.returncode == 0, done.stderr  # no lock held by this process
        opened.append(int(done.stdout))

    report = run_distributed(path, path, CHGNET, select(path),
                             RunOptions(settings_overrides=OVERRIDES), client=client,
                             shard_size=2, commit=CommitOptions(every=1),
                             on_shard=another_process_writes)
    assert report.n_shards == 3 and len(opened) == 3
    assert opened == sorted(opened) and opened[-1] == len(IDS)  # rows merged, part by part
    assert_same(energies(path, CHGNET, report.settings_hash),
                serial_energies(base_db, tmp_path, CHGNET, OVERRIDES))
