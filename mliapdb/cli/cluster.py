"""Cluster options of ``mliapdb ingest relax`` (``--workers``, ``--scheduler``, ``--slurm``...):
without them the serial path runs; with them :mod:`mliapdb.compute.cluster` does."""

from __future__ import annotations

from typing import Any

import click

from mliapdb.cli.output import status
from mliapdb.errors import MliapdbError

_OPTIONS = [
    click.option(
        "--workers",
        type=int,
        default=None,
        help="Run on a local Dask cluster of N worker processes (1 thread each).",
    ),
    click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Run on the workers of a running Dask scheduler, e.g. tcp://host:8786.",
    ),
    click.option("--slurm", is_flag=True, help="Run on Dask workers started as SLURM jobs."),
    click.option("--slurm-jobs", type=int, default=None, help="SLURM jobs to start [1]."),
    click.option(
        "--slurm-processes",
        type=int,
        default=None,
        help="Worker processes (1 thread each) per SLURM job [1].",
    ),
    click.option("--slurm-queue", default=None, help="SLURM partition (sbatch -p)."),
    click.option("--slurm-account", default=None, help="SLURM account (sbatch -A)."),
    click.option(
        "--slurm-walltime", default=None, help="Time limit of each SLURM job [01:00:00]."
    ),
    click.option("--slurm-memory", default=None, help="Memory of each SLURM job [4GB]."),
    click.option(
        "--shard-size",
        type=int,
        default=None,
        help="Materials per task on a cluster (one Parquet part each) [8].",
    ),
]

_NAMES = ("workers", "scheduler", "slurm", "slurm_jobs", "slurm_processes", "slurm_queue",
          "slurm_account", "slurm_walltime", "slurm_memory", "shard_size")


def cluster_options(func):
    """Add the cluster options to a command (they reach it as keyword arguments)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def cluster_from_params(params: dict[str, Any]):
    """``(ClusterOptions, shard_size)`` from the command's keyword arguments, or None when
    no cluster is asked for (the serial path). Raises :class:`MliapdbError` for bad ones."""
    from mliapdb.compute.cluster import DEFAULT_SHARD_SIZE, ClusterOptions

    values = {name: params.get(name) for name in _NAMES}
    shard_size = values.pop("shard_size")
    values["slurm"] = bool(values["slurm"])
    options = ClusterOptions(**values)
    options.check()
    if not options.enabled:
        if shard_size is not None:
            raise MliapdbError("--shard-size only applies with --workers, --scheduler or --slurm")
        return None
    if shard_size is not None and shard_size < 1:
        raise MliapdbError(f"--shard-size must be 1 or more, got {shard_size}")
    return options, shard_size or DEFAULT_SHARD_SIZE


def log_merged(part) -> None:
    """One status line per merged shard, for logs (when stderr is not a terminal)."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(part.status_counts.items()))
    what = "leftover part" if part.leftover else "shard"
    status(f"{what} {part.shard_id} merged: {', '.join(part.material_ids)}: {counts}")
