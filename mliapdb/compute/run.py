"""Run one model over stored materials in this process (the serial path of ``mliapdb ingest
relax``; :mod:`mliapdb.compute.cluster` is the distributed one), the results committed in
batches, each in a short hold of the database (:mod:`mliapdb.compute.commits`)."""

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
from mliapdb.compute.cluster import merge_leftovers, spill_part
from mliapdb.compute.commits import CommitOptions
from mliapdb.progress import Progress, no_progress
from mliapdb.store.database import Holder


def run_calculations(
    con: duckdb.DuckDBPyConnection | Holder | str | Path,
    model: str,
    targets: Sequence[Target],
    options: RunOptions | None = None,
    *,
    progress: Progress = no_progress,
    on_result: Callable[[Target, Any], None] | None = None,
    db_path: str | Path | None = None,
    commit: CommitOptions | None = None,
) -> RunReport:
    """Calculation ``options.kind`` (``single_point``, ``relax``, ``relax_fixsym``; a relaxation
    stores the single point of its input too) of each target not done yet with this model and
    settings.

    A model trained on another functional than MP's GGA/GGA+U (PBE) is refused unless
    ``options.force``: its energies cannot be compared with the DFT hull.

    Model failures and unconverged relaxations are stored with their reason (status
    ``failed`` / ``not_converged``) and the run goes on. The results are committed in
    batches (``commit``, :class:`~mliapdb.compute.commits.CommitOptions`: by default every
    100 results or 10 s on a path, each result on a connection); ``on_result(target, result)``
    is called for each once its batch is committed. ``con`` is an open read-write connection (kept
    open), or the database's path (or a :class:`~mliapdb.store.database.Holder`): the file is
    then opened read-write only to read what is done and for each commit, so that other
    processes read it in between (a commit waits for a reader,
    :class:`~mliapdb.store.database.LockWait`). ``threads`` sets torch's CPU threads for the
    run (1 by default: MP cells are small graphs, and extra threads cost more than they give,
    badly so on a shared CPU; see ``bench/bench_relax.py`` and docs/benchmarks.md); None
    leaves torch's setting alone.

    ``engine="torch-sim"`` relaxes many structures per model call (:mod:`mliapdb.compute.batched`,
    at most ``max_atoms`` atoms per batch) under the same protocol and settings hash as the
    ASE path; the engine is recorded per row.

    With ``db_path`` (the file of ``con``; a path ``con`` is its own), Parquet parts that an
    interrupted distributed run of the same model and settings left beside it (or a serial
    run whose last batch met the file locked) are merged first, not recomputed.

    ``checkpoint`` other than the model's registered one is refused unless ``as_name``
    names the model its results are stored as (:func:`model_identity`), checked before
    anything is written; each row records its checkpoint's sha256.
    """
    o = options or RunOptions()
    holder = Holder.of(con)
    if db_path is None and holder.short:
        db_path = holder.path
    spec, settings = prepare_run(model, o.kind, o.settings_overrides, o.engine, o.force, targets)
    shash = settings.settings_hash()
    with holder.held() as held:
        identity = model_identity(held, spec, o.checkpoint, o.as_name)
        spec = identity.spec
        report = RunReport(model=spec.name, settings_hash=shash, n_selected=len(targets))
        if db_path is not None:
            report.n_leftover_parts = merge_leftovers(held, db_path, spec, shash)
        done = done_keys(held, spec.name, shash, o.retry_failed)
    todo = [t for t in targets if (t.dataset, t.material_id) not in done]
    report.n_skipped = len(targets) - len(todo)
    if not todo:
        return report
    check_device(o.device)
    spill = None
    if db_path is not None:
        def spill(rows, loaded):
            return spill_part(db_path, spec.name, shash, rows, loaded)
    with _torch_threads(o.threads):
        _run(holder, spec, todo, o.device, identity, settings, report, progress, on_result,
             o.engine, o.max_atoms, commit, spill)
    return report

