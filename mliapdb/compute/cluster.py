"""Run the calculations of one ``mliapdb ingest relax`` on a Dask cluster.

The client (the process running the CLI) is the only one that opens the database. It splits
the targets not done yet into deterministic shards (sorted as :func:`select_targets` sorts
them, ``shard_size`` per shard, the shard id a hash of model, settings and the material
keys) and submits one task per shard. A worker task builds the calculator once per worker
process, calculates its shard and writes ONE Parquet part atomically (temp file in the same
folder, fsync, ``os.replace``) into the run folder ``<db>.parts/<model>/<settings_hash>/``;
if the part already exists it returns at once. The client merges each part as it completes,
in one transaction keyed by the primary key of ``calculations`` (delete, then insert), and
then deletes it. Parts left over by an interrupted run (same model and settings) are merged
at the start of the next. The ``models`` row is registered once, by the client, from the
calculator info (checkpoint sha256, package versions) that each part carries in its Parquet
metadata: the client never loads the model.

A worker killed mid-run loses nothing: Dask reschedules its task (the nanny restarts the
worker), a part is either complete or absent, and merging twice replaces the same rows.
Workers and client must see the run folder at the same path (one machine or a shared file
system). Dask is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mliapdb.compute.calculations import (
    RunOptions,
    RunReport,
    Target,
    calculation_row,
    check_device,
    check_identity,
    done_keys,
    register_model,
)
from mliapdb.errors import MliapdbError
from mliapdb.progress import Progress, no_progress
from mliapdb.store.database import transaction
from mliapdb.store.generations import bump_calculations
from mliapdb.store.tables import Calculation

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from distributed import Client

DEFAULT_SHARD_SIZE = 8
"""Materials per shard (one task, one Parquet part, one merge transaction)."""

INSTALL_HINT = "pip install 'mliapdb[distributed]'"
TABLE = "calculations"
PART_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"

SLURM_DEFAULTS: dict[str, Any] = {
    "slurm_jobs": 1,
    "slurm_processes": 1,
    "slurm_walltime": "01:00:00",
    "slurm_memory": "4GB",
}
"""Defaults of the SLURM options (jobs, worker processes per job, walltime, memory per job)."""


# --- where the shards run ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterOptions:
    """Where the shards run: exactly one of ``workers`` (a local cluster of that many worker
    processes, 1 thread each), ``scheduler`` (address of a running Dask scheduler) or
    ``slurm`` (a dask-jobqueue SLURMCluster). ``slurm_*`` left None take
    :data:`SLURM_DEFAULTS`; ``slurm_memory`` is per job (e.g. ``"8GB"``)."""

    workers: int | None = None
    scheduler: str | None = None
    slurm: bool = False
    slurm_jobs: int | None = None
    slurm_processes: int | None = None
    slurm_queue: str | None = None
    slurm_account: str | None = None
    slurm_walltime: str | None = None
    slurm_memory: str | None = None

    @property
    def enabled(self) -> bool:
        """True when any of the three cluster kinds is asked for."""
        return self.workers is not None or self.scheduler is not None or self.slurm

    def slurm_option(self, name: str) -> Any:
        """``slurm_<name>`` with its default applied."""
        value = getattr(self, name)
        return SLURM_DEFAULTS.get(name) if value is None else value

    def check(self) -> None:
        """Raise :class:`MliapdbError` for contradictory or out-of-range options."""
        chosen = [name for name, on in (("--workers", self.workers is not None),
                                        ("--scheduler", self.scheduler is not None),
                                        ("--slurm", self.slurm)) if on]
        if len(chosen) > 1:
            raise MliapdbError(f"{' and '.join(chosen)} exclude each other - pick one")
        if self.workers is not None and self.workers < 1:
            raise MliapdbError(f"--workers must be 1 or more (processes), got {self.workers}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise MliapdbError("--scheduler needs an address, e.g. tcp://host:8786")
        slurm_set = [
            "--" + name.replace("_", "-") for name in self.__dataclass_fields__
            if name.startswith("slurm_") and getattr(self, name) is not None
        ]
        if slurm_set and not self.slurm:
            verb = "applies" if len(slurm_set) == 1 else "apply"
            raise MliapdbError(f"{', '.join(slurm_set)} only {verb} with --slurm")
        for name in ("slurm_jobs", "slurm_processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MliapdbError(f"--{name.replace('_', '-')} must be 1 or more, got {value}")


def _import_distributed():
    """The ``distributed`` package, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise MliapdbError(
            f"running on a Dask cluster needs dask.distributed, which is not installed ({exc})"
            f" - {INSTALL_HINT}"
        ) from exc
    return distributed


def slurm_cluster(options: ClusterOptions):
    """A dask-jobqueue ``SLURMCluster`` (not scaled yet): each job runs ``slurm_processes``
    worker processes of 1 thread each, with ``slurm_memory`` per job."""
    _import_distributed()
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise MliapdbError(
            f"--slurm needs dask-jobqueue, which is not installed ({exc}) - {INSTALL_HINT}"
        ) from exc
    processes = options.slurm_option("slurm_processes")
    kwargs = {
        "cores": processes,
        "processes": processes,
        "memory": options.slurm_option("slurm_memory"),
        "walltime": options.slurm_option("slurm_walltime"),
        "queue": options.slurm_queue,
        "account": options.slurm_account,
    }
    try:
        return SLURMCluster(**{k: v for k, v in kwargs.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise MliapdbError(f"bad SLURM options: {exc}") from exc


@contextmanager
def open_client(options: ClusterOptions) -> Iterator[Client]:
    """A Dask client on the cluster ``options`` asks for; a cluster started here is shut
    down on exit. The scheduler connect timeout is Dask's ``distributed.comm.timeouts.connect``
    (env ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``)."""
    options.check()
    if not options.enabled:
        raise MliapdbError("no cluster asked for: pass --workers N, --scheduler ADDRESS or --slurm")
    distributed = _import_distributed()
    cluster = None
    try:
        if options.workers is not None:
            cluster = distributed.LocalCluster(
                n_workers=options.workers, threads_per_worker=1, processes=True,
                dashboard_address=None,
            )
            client = distributed.Client(cluster)
        elif options.scheduler is not None:
            try:
                client = distributed.Client(options.scheduler)
            except (OSError, TimeoutError, ValueError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MliapdbError(
                    f"cannot reach the Dask scheduler at {options.scheduler} ({first}) - start "
                    "one with 'dask scheduler' and workers with 'dask worker ADDRESS', or fix "
                    "--scheduler"
                ) from exc
        else:
            cluster = slurm_cluster(options)
            cluster.scale(jobs=options.slurm_option("slurm_jobs"))
            client = distributed.Client(cluster)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --- shards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """A fixed group of targets: one task, one Parquet part, one merge transaction."""

    shard_id: str
    model: str
    settings_hash: str
    targets: tuple[Target, ...]


def target_order(target: Target) -> tuple[int, str, str]:
    """Sort key of :func:`mliapdb.compute.calculations.select_targets`: sites, material id,
    dataset."""
    return (target.nsites, target.material_id, target.dataset)


def shard_id(model: str, settings_hash: str, targets: Sequence[Target]) -> str:
    """First 16 hex characters of the sha256 of model, settings hash and the ordered
    (dataset, material_id) keys: the same selection gives the same shards."""
    keys = [[t.dataset, t.material_id] for t in targets]
    text = json.dumps([model, settings_hash, keys], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_shards(
    targets: Sequence[Target], model: str, settings_hash: str, shard_size: int
) -> list[Shard]:
    """``targets`` sorted like ``select_targets`` and cut into shards of ``shard_size``."""
    if shard_size < 1:
        raise MliapdbError(f"--shard-size must be 1 or more, got {shard_size}")
    ordered = sorted(targets, key=target_order)
    shards = []
    for start in range(0, len(ordered), shard_size):
        chunk = tuple(ordered[start : start + shard_size])
        shards.append(Shard(shard_id(model, settings_hash, chunk), model, settings_hash, chunk))
    return shards


def parts_root(db_path: str | Path) -> Path:
    """``<db>.parts`` beside the database (absolute, as workers may run elsewhere)."""
    db_path = Path(db_path).expanduser().resolve()
    return db_path.with_name(db_path.name + ".parts")


def run_dir(db_path: str | Path, model: str, settings_hash: str) -> Path:
    """Folder of the Parquet parts of one run: ``<db>.parts/<model>/<settings_hash>``."""
    return parts_root(db_path) / model / settings_hash


def part_path(folder: str | Path, shard: str) -> Path:
    """Path of the Parquet part of shard id ``shard``."""
    return Path(folder) / f"{shard}{PART_SUFFIX}"


# --- Parquet parts ----------------------------------------------------------------------------


def calculation_schema() -> pa.Schema:
    """Arrow schema of a part: every column of the :class:`Calculation` SQLModel, in order,
    typed from its SQLAlchemy column type (so columns added to the model follow)."""
    import pyarrow as pa
    from sqlalchemy import types

    arrow_types = (  # Boolean before Integer, DateTime before anything date-like
        (types.Boolean, pa.bool_()),
        (types.Integer, pa.int64()),
        (types.Float, pa.float64()),
        (types.Numeric, pa.float64()),
        (types.DateTime, pa.timestamp("us")),
        (types.String, pa.string()),
    )
    fields = []
    for column in Calculation.__table__.columns:
        sa_type = column.type
        if isinstance(sa_type, types.TypeDecorator):  # e.g. SQLModel's AutoString
            sa_type = sa_type.impl_instance
        arrow = next((a for sa, a in arrow_types if isinstance(sa_type, sa)), None)
        if arrow is None:
            raise TypeError(f"no Arrow type for {TABLE}.{column.name} ({column.type!r})")
        fields.append(pa.field(column.name, arrow, nullable=bool(column.nullable)))
    return pa.schema(fields)


def primary_key() -> list[str]:
    """Primary-key columns of ``calculations`` (from the SQLModel)."""
    return [column.name for column in Calculation.__table__.primary_key.columns]


def write_part(path: Path, rows: Sequence[dict], metadata: dict[str, str]) -> None:
    """Write ``rows`` (dicts from :func:`calculation_row`) as one Parquet file, atomically:
    a temp file in the same folder, fsync, ``os.replace``, fsync of the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = calculation_schema().with_metadata({k: str(v) for k, v in metadata.items()})
    table = pa.Table.from_pylist(list(rows), schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on some systems (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def part_metadata(path: Path) -> dict[str, str]:
    """The key-value metadata of a part (model, settings hash, shard id, calculator info)."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"mliapdb_")}


# --- worker side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """What every worker task needs besides its shard (no database: workers never open it)."""

    model: str
    kind: str
    settings_overrides: dict[str, Any]
    checkpoint: str | None
    device: str
    threads: int | None
    folder: str
    """Run folder of the parts (see :func:`run_dir`)."""
    engine: str = "ase"
    max_atoms: int | None = None
    """torch-sim engine: atoms per batch on the worker."""
    base_model: str = ""
    """For a derived model (``--as``): the model of a metadata file that ``model`` is derived
    from, loaded with ``checkpoint``; ``""``: ``model`` is itself such a model."""
    checkpoint_sha256: str = ""
    """sha256 the client found for the checkpoint (``""``: not readable there); a worker
    whose file differs refuses the shard."""

    @property
    def spec_name(self) -> str:
        """The model of a metadata file to load (and take the settings of)."""
        return self.base_model or self.model


_MODELS: dict[tuple[str, str, str | None, str, str], Any] = {}
"""Models of this (worker) process by (model, base model, checkpoint, device, engine): built
once each."""


def _worker_model(job: ShardJob) -> Any:
    """The ASE calculator or torch-sim model of ``job`` in this process, built on first use;
    its checkpoint's sha256 must be the client's (where the client could read it)."""
    key = (job.model, job.base_model, job.checkpoint, job.device, job.engine)
    if key not in _MODELS:
        from mliapdb.compute.calculations import load_model
        from mliapdb.compute.models.registry import (
            ModelUnavailableError,
            derive_spec,
            get_model_spec,
            resolve_checkpoint,
        )

        check_device(job.device)
        try:
            spec, checkpoint = get_model_spec(job.spec_name), job.checkpoint
            if job.base_model:
                try:
                    path = resolve_checkpoint(spec, job.checkpoint).resolve()
                except ModelUnavailableError as exc:
                    raise MliapdbError(f"cannot load model {job.model}: {exc}") from exc
                spec = derive_spec(spec, job.model, path, job.checkpoint_sha256)
                checkpoint = None  # loading the derived spec checks the sha256
            _MODELS[key] = load_model(spec, job.engine, job.device, checkpoint)
        except MliapdbError as exc:
            raise MliapdbError(f"on a worker: {exc}") from exc
    model = _MODELS[key]
    sha = (getattr(model, "mliapdb_info", {}) or {}).get("checkpoint_sha256")
    if job.checkpoint_sha256 and sha != job.checkpoint_sha256:
        raise MliapdbError(
            f"on a worker: model {job.model}: this worker's checkpoint has sha256 {sha}, the "
            f"client's {job.checkpoint_sha256} - give every worker the same file"
        )
    return model


def run_shard(shard: Shard, job: ShardJob) -> str:
    """Worker task: calculate every target of ``shard`` and write its Parquet part.

    Returns the part's path. If the part exists already (a rerun after a crash), returns at
    once. Model failures become rows with status ``failed``, as in the serial path.
    """
    from mliapdb.compute.calculations import _torch_threads, calculate

    path = part_path(job.folder, shard.shard_id)
    if path.exists():
        return str(path)
    from mliapdb.compute.calculations import model_settings

    _, settings = model_settings(job.spec_name, job.kind, job.settings_overrides)
    if settings.settings_hash() != shard.settings_hash:
        raise MliapdbError(
            f"worker computes settings {settings.settings_hash()} for {job.model}, the client "
            f"{shard.settings_hash}: run workers and client from the same mliapdb version"
        )
    with _torch_threads(job.threads):
        model = _worker_model(job)
        results = calculate(model, shard.targets, settings, job.engine, job.max_atoms)
        info = dict(getattr(model, "mliapdb_info", {}) or {})
        sha = info.get("checkpoint_sha256")
        rows = [calculation_row(t, job.model, r, job.device, sha) for t, r in results]
    rows.sort(key=lambda row: (row["dataset"], row["material_id"]))
    write_part(path, rows, {
        "mliapdb_shard": shard.shard_id,
        "mliapdb_model": job.model,
        "mliapdb_settings_hash": shard.settings_hash,
        "mliapdb_info": json.dumps(info, sort_keys=True, default=str),
    })
    return str(path)


# --- client side: the one writer --------------------------------------------------------------


@dataclass
class DistributedReport(RunReport):
    """A :class:`RunReport` with the shard counts of a distributed run."""

    n_shards: int = 0
    n_workers: int = 0


@dataclass(frozen=True)
class MergedPart:
    """A part merged into the database (passed to ``on_shard``)."""

    path: Path
    shard_id: str
    material_ids: tuple[str, ...]
    status_counts: dict[str, int] = field(default_factory=dict)
    leftover: bool = False


def _table_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = current_schema() AND table_catalog = current_database()", [TABLE]
    ).fetchall()
    return {r[0] for r in rows}


class PartMerger:
    """Merges parts into ``calculations`` (the one writer); registers the model once, from
    the calculator info the first merged part carries. Every part's checkpoint must be the
    model's (:func:`mliapdb.compute.calculations.check_identity`): a part made with another one is
    refused before anything of it is written."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spec) -> None:
        self.con = con
        self.spec = spec
        self.registered = False
        self.columns = _table_columns(con)

    def merge(self, path: Path, leftover: bool = False) -> MergedPart:
        """Merge one part in one transaction (delete rows with the same primary key, insert),
        then delete the file. Merging the same part twice leaves the same rows."""
        import pyarrow.parquet as pq

        try:
            part = pq.read_table(path)
        except Exception as exc:  # a truncated file cannot be a part: os.replace is atomic
            raise MliapdbError(f"cannot read part {path}: {exc} - delete it and run again") from exc
        meta = part_metadata(path)
        if meta.get("mliapdb_model") != self.spec.name:
            raise MliapdbError(
                f"part {path} is of model {meta.get('mliapdb_model')!r}, not {self.spec.name!r}"
                " - move it out of the run folder"
            )
        unknown = [c for c in part.column_names if c not in self.columns]
        if unknown:
            raise MliapdbError(
                f"part {path} has column(s) {unknown} that {TABLE} lacks - open the database "
                "with the mliapdb version that wrote the part"
            )
        info = json.loads(meta.get("mliapdb_info") or "{}")
        try:
            check_identity(self.con, self.spec, info.get("checkpoint_sha256"),
                           info.get("checkpoint"))
        except MliapdbError as exc:
            raise MliapdbError(f"part {path}: {exc}") from exc
        if not self.registered:
            from types import SimpleNamespace

            register_model(self.con, self.spec, SimpleNamespace(mliapdb_info=info))
            self.registered = True
        cols = ", ".join(part.column_names)
        match = " AND ".join(f"c.{k} = p.{k}" for k in primary_key())
        _mliapdb_part = part  # noqa: F841  (read by DuckDB's replacement scan, by name)
        with transaction(self.con):
            self.con.execute(
                f"DELETE FROM {TABLE} AS c USING _mliapdb_part AS p WHERE {match}"
            ).fetchall()
            self.con.execute(
                f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM _mliapdb_part"
            ).fetchall()
            bump_calculations(self.con, part)
        path.unlink(missing_ok=True)
        counts: dict[str, int] = {}
        for value in part.column("status").to_pylist():
            counts[value] = counts.get(value, 0) + 1
        return MergedPart(
            path=path,
            shard_id=meta.get("mliapdb_shard", path.stem),
            material_ids=tuple(part.column("material_id").to_pylist()),
            status_counts=counts,
            leftover=leftover,
        )


def merge_leftovers(
    con: duckdb.DuckDBPyConnection,
    db_path: str | Path,
    spec,
    settings_hash: str,
    on_shard: Callable[[MergedPart], None] | None = None,
    merger: PartMerger | None = None,
) -> int:
    """Merge the parts an interrupted distributed run of this model and settings left beside
    the database (the serial path calls this too, so they are never recomputed); returns
    how many. Needs no Dask."""
    folder = run_dir(db_path, spec.name, settings_hash)
    if not folder.is_dir():
        return 0
    _clean_tmp(folder)
    merger = merger or PartMerger(con, spec)
    n = 0
    for path in sorted(folder.glob(f"*{PART_SUFFIX}")):
        merged = merger.merge(path, leftover=True)
        n += 1
        if on_shard is not None:
            on_shard(merged)
    _remove_empty(folder, parts_root(db_path))
    return n


def _clean_tmp(folder: Path) -> None:
    """Remove temp files of parts that a killed worker never finished."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` (included) while they are empty."""
    while folder != stop.parent:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _task_error(shard: Shard, exc: BaseException) -> MliapdbError:
    if isinstance(exc, MliapdbError):
        return MliapdbError(f"shard {shard.shard_id}: {exc}")
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300]
    if name == "KilledWorker":
        return MliapdbError(
            f"shard {shard.shard_id}: the workers running it died too often ({text}) - out of "
            "memory? Its materials: " + ", ".join(t.material_id for t in shard.targets)
        )
    return MliapdbError(f"shard {shard.shard_id} failed on a worker: {name}: {text}")


def run_distributed(
    con: duckdb.DuckDBPyConnection,
    db_path: str | Path,
    model: str,
    targets: Sequence[Target],
    options: RunOptions | None = None,
    *,
    cluster: ClusterOptions | None = None,
    client: Client | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: Progress = no_progress,
    on_shard: Callable[[MergedPart], None] | None = None,
) -> DistributedReport:
    """:func:`mliapdb.compute.run.run_calculations` on a Dask cluster (same rows).

    ``con`` is the read-write connection of the database at ``db_path`` (the parts go to
    :func:`run_dir` beside it). The shards run on ``client`` if given (left open), else on a
    cluster opened from ``cluster`` and closed at the end. ``progress`` wraps the loop over
    merged shards; ``on_shard`` is called after each merge. ``wall_time_s`` is the wall time
    of the distributed part (seconds), from cluster start to the last merge. With
    ``engine="torch-sim"`` each worker relaxes its shard as one in-flight batch (at most
    ``max_atoms`` atoms): one GPU per worker on a GPU cluster.

    The checkpoint identity is that of the serial path (``as_name``, refusals, per-row
    sha256): the client hashes the checkpoint where it can read it (always with ``as_name``
    or local workers); each worker checks its own file against that, and every part is
    checked again as it is merged.
    """
    from mliapdb.compute.calculations import model_identity, prepare_run

    o = options or RunOptions()
    kind, device, checkpoint, as_name = o.kind, o.device, o.checkpoint, o.as_name
    settings_overrides, engine, max_atoms, threads = (o.settings_overrides, o.engine,
                                                      o.max_atoms, o.threads)
    spec, settings = prepare_run(model, kind, settings_overrides, engine, o.force, targets)
    local = cluster is not None and cluster.workers is not None
    base = spec.name
    identity = model_identity(con, spec, checkpoint, as_name, need_packages=local,
                              unresolved_ok=not local)
    spec = identity.spec
    model = spec.name
    if shard_size < 1:
        raise MliapdbError(f"--shard-size must be 1 or more, got {shard_size}")
    if client is None:
        cluster = cluster or ClusterOptions()
        cluster.check()
        if not cluster.enabled:
            raise MliapdbError("no cluster asked for: pass --workers N, --scheduler or --slurm")
        _import_distributed()
    shash = settings.settings_hash()
    report = DistributedReport(model=model, settings_hash=shash, n_selected=len(targets))
    folder = run_dir(db_path, model, shash)
    merger = PartMerger(con, spec)
    report.n_leftover_parts = merge_leftovers(con, db_path, spec, shash, on_shard, merger)
    done = done_keys(con, model, shash, o.retry_failed)
    todo = [t for t in targets if (t.dataset, t.material_id) not in done]
    report.n_skipped = len(targets) - len(todo)
    if not todo:
        _remove_empty(folder, parts_root(db_path))
        return report
    shards = make_shards(todo, model, shash, shard_size)
    report.n_shards = len(shards)
    if local:
        # local workers: this machine's devices and files are theirs, fail before starting
        # (packages and checkpoint were checked by model_identity)
        check_device(device)
    job = ShardJob(model=model, kind=kind, settings_overrides=dict(settings_overrides or {}),
                   checkpoint=checkpoint, device=device, threads=threads, folder=str(folder),
                   engine=engine, max_atoms=max_atoms,
                   base_model=base if spec.base_model else "",
                   checkpoint_sha256=identity.checkpoint_sha256 or "")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if client is not None:
            _run_shards(client, shards, job, merger, report, progress, on_shard)
        else:
            with open_client(cluster) as own:
                _run_shards(own, shards, job, merger, report, progress, on_shard)
        _clean_tmp(folder)  # all shards merged: what is left is from killed workers
    finally:
        report.wall_time_s = time.perf_counter() - start
        _remove_empty(folder, parts_root(db_path))
    return report


def _run_shards(client, shards, job, merger, report, progress, on_shard) -> None:
    """Submit one task per shard and merge the parts as they complete."""
    from distributed import as_completed

    report.n_workers = len(client.scheduler_info().get("workers", {}))
    run_token = uuid.uuid4().hex[:8]  # keys unique per run: never a stale cached result
    futures = {}
    for shard in shards:
        key = f"mliapdb-shard-{shard.shard_id}-{run_token}"
        futures[client.submit(run_shard, shard, job, key=key)] = shard

    def merged() -> Iterator[MergedPart]:
        for future in as_completed(list(futures)):
            shard = futures[future]
            try:
                path = Path(future.result())
            except Exception as exc:
                client.cancel(list(futures))
                raise _task_error(shard, exc) from exc
            future.release()  # else a later worker death would recompute a merged shard
            if not path.exists():
                client.cancel(list(futures))
                raise MliapdbError(
                    f"a worker wrote {path}, but it is not here: the workers must see the "
                    "database's folder at the same path (same machine or shared file system)"
                )
            yield merger.merge(path)

    n_targets = sum(len(s.targets) for s in shards)
    description = f"{job.model} ({n_targets} materials in {len(shards)} shards)"
    for part in progress(merged(), len(shards), description):
        for status, n in part.status_counts.items():
            report.status_counts[status] = report.status_counts.get(status, 0) + n
        if on_shard is not None:
            on_shard(part)
