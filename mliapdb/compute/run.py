"""Run one model over stored materials in this process (the serial path of ``mliapdb ingest
relax``; :mod:`mliapdb.compute.cluster` is the distributed one), each row committed as it comes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.compute.calculations import (
    RunOptions,
    RunReport,
    Target,
    _run,
    _torch_threads,
    check_device,
    done_keys,
    model_identity,
    prepare_run,
)
from mliapdb.compute.cluster import merge_leftovers
from mliapdb.progress import Progress, no_progress


def run_calculations(
    con: duckdb.DuckDBPyConnection,
    model: str,
    targets: Sequence[Target],
    options: RunOptions | None = None,
    *,
    progress: Progress = no_progress,
    on_result: Callable[[Target, Any], None] | None = None,
    db_path: str | Path | None = None,
) -> RunReport:
    """Calculation ``options.kind`` (``single_point``, ``relax``, ``relax_fixsym``; a relaxation
    stores the single point of its input too) of each target not done yet with this model and
    settings.

    A model trained on another functional than MP's GGA/GGA+U (PBE) is refused unless
    ``options.force``: its energies cannot be compared with the DFT hull.

    Model failures and unconverged relaxations are stored with their reason (status
    ``failed`` / ``not_converged``) and the run goes on. Each row commits on its own;
    ``on_result(target, result)`` is called after each commit. ``threads`` sets torch's CPU
    threads for the run (1 by default: MP cells are small graphs, and extra threads cost more
    than they give, badly so on a shared CPU; see ``bench/bench_relax.py`` and
    docs/benchmarks.md); None leaves torch's setting alone.

    ``engine="torch-sim"`` relaxes many structures per model call (:mod:`mliapdb.compute.batched`,
    at most ``max_atoms`` atoms per batch) under the same protocol and settings hash as the
    ASE path; the engine is recorded per row.

    With ``db_path`` (the file of ``con``), Parquet parts that an interrupted distributed run
    of the same model and settings left beside it are merged first, not recomputed.

    ``checkpoint`` other than the model's registered one is refused unless ``as_name``
    names the model its results are stored as (:func:`model_identity`), checked before
    anything is written; each row records its checkpoint's sha256.
    """
    o = options or RunOptions()
    spec, settings = prepare_run(model, o.kind, o.settings_overrides, o.engine, o.force, targets)
    identity = model_identity(con, spec, o.checkpoint, o.as_name)
    spec = identity.spec
    shash = settings.settings_hash()
    report = RunReport(model=spec.name, settings_hash=shash, n_selected=len(targets))
    if db_path is not None:
        report.n_leftover_parts = merge_leftovers(con, db_path, spec, shash)
    done = done_keys(con, spec.name, shash, o.retry_failed)
    todo = [t for t in targets if (t.dataset, t.material_id) not in done]
    report.n_skipped = len(targets) - len(todo)
    if not todo:
        return report
    check_device(o.device)
    with _torch_threads(o.threads):
        _run(con, spec, todo, o.device, identity, settings, report, progress, on_result,
             o.engine, o.max_atoms)
    return report

