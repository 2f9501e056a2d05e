"""``mliapdb ingest entries|relax``: load MP entries, run MLIAP relaxations."""

from __future__ import annotations

from pathlib import Path

import click

from mliapdb.cli.cluster import cluster_options
from mliapdb.cli.common import dataset_option, db_option, resolve_db, symmetry_options
from mliapdb.cli.output import emit, format_option, status
from mliapdb.cli.progress import progress_bar, stderr_is_terminal
from mliapdb.compute.commits import DEFAULT_COMMIT_EVERY, DEFAULT_COMMIT_SECONDS


@click.group()
def ingest() -> None:
    """Load MP entries and run MLIAP calculations into the database."""


@ingest.command("entries")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@dataset_option
@symmetry_options
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes that parse, correct and analyse entries (0: one per "
              "core; 1: this process only).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Entries per chunk: the unit of work of a worker and of a commit to the "
              "staging file.")
@format_option
@db_option
@click.pass_context
def entries(ctx, paths, dataset, symprecs, symmetry_method, jobs, chunk_size, fmt,
            db_path) -> None:
    """Ingest pymatgen ComputedStructureEntry files (plain or .gz): a JSON list, JSON Lines,
    or a pandas DataFrame JSON with an 'entry' column (Matbench Discovery's MP dump
    2023-02-07-mp-computed-structure-entries.json.gz).

    Files are read entry by entry in bounded memory and processed in chunks by worker
    processes: MP2020 corrections re-applied to the raw energies, Wyckoff symmetry and DOF
    analysed. Each chunk is committed to a staging file beside the database
    (DB.ingest.duckdb): an interrupted ingest, run again, resumes where it stopped. Then one
    transaction publishes the new entries and rebuilds the dataset's DFT hull: a bad file or
    entry leaves the database as it was. A file already ingested into the dataset (same
    sha256) is skipped without being read; re-ingesting the same data changes nothing.

    \b
    Examples:
      mliapdb ingest entries ../shared/data/mp/Mn_O_entries.json.gz
      mliapdb ingest entries 2023-02-07-mp-computed-structure-entries.json.gz --jobs 2
    """
    from mliapdb.materials.ingest import check_dataset_name, check_symprecs
    from mliapdb.materials.streaming import StreamOptions, stream_ingest
    from mliapdb.store import database as db

    path = resolve_db(ctx, db_path)
    missing = [str(p) for p in paths if _missing(p)]
    if missing:
        from mliapdb.config import DATA_ENV
        from mliapdb.errors import MliapdbError

        raise MliapdbError(
            f"no such file: {missing[0]} - MP entry files are in ../shared/data/mp/ beside the "
            f"repository, or where ${DATA_ENV} points"
        )
    check_dataset_name(dataset)
    check_symprecs(symprecs)
    check_writable_db(path)
    options = StreamOptions(dataset=dataset, symprecs=tuple(symprecs), method=symmetry_method,
                            jobs=jobs, chunk_size=chunk_size)
    report = stream_ingest(path, list(paths), options, progress_bar)
    with db.opened(path) as con:
        refresh_model_hulls(con)
    for file, mid, reason in report.rejected:
        status(f"rejected by MP2020 compatibility: {file}: {mid}: {reason}")
    skipped = (f" ({report.n_skipped_files} already ingested, not read again)"
               if report.n_skipped_files else "")
    resumed = (f", resumed after {report.n_resumed_chunks} staged chunk(s)"
               if report.n_resumed_chunks else "")
    status(
        f"{path}: read {report.n_read} entries from {len(paths)} file(s){skipped} into dataset "
        f"'{dataset}'{resumed}: {report.n_new} new, {report.n_unchanged} unchanged, "
        f"{len(report.rejected)} rejected by MP2020; {report.n_symmetry} symmetry analyses "
        f"(symprec {', '.join(map(str, symprecs))}, {symmetry_method}); "
        + (f"DFT hull rebuilt ({report.n_hull} entries)" if report.n_new else "hull unchanged")
    )
    emit(
        ["dataset", "read", "new", "unchanged", "rejected", "symmetry_analyses", "hull_entries"],
        [(dataset, report.n_read, report.n_new, report.n_unchanged, len(report.rejected),
          report.n_symmetry, report.n_hull)],
        fmt,
    )


def _missing(path: Path) -> bool:
    """True when nothing is at ``path``; False when the system cannot tell (a name too long:
    reading the file says why)."""
    try:
        return not path.exists()
    except OSError:
        return False


def check_writable_db(db_path: str) -> None:
    """Refuse, before any file is parsed, a local ``--db`` that cannot be written
    (:func:`mliapdb.store.file.check_writable_location`); remote URLs are left to
    :func:`mliapdb.store.database.connect`."""
    from mliapdb.store.file import check_writable_location
    from mliapdb.store.remote import is_remote

    if not is_remote(db_path):
        check_writable_location(Path(db_path))


def refresh_model_hulls(con) -> None:
    """Rebuild the model hulls, then the stored error rows, whose inputs changed (status
    lines on stderr)."""
    from mliapdb.analysis.derived import refresh_derived

    refresh_derived(con, status)


@ingest.command("hulls")
@db_option
@click.option("--verify", is_flag=True,
              help="First compare every derived table with its inputs by hash and rebuild "
              "what differs (after writing to the file with another DuckDB client).")
@click.pass_context
def hulls(ctx, db_path, verify) -> None:
    """Rebuild the model hulls (model-hull conventions) and the stored error rows whose
    inputs changed.

    'ingest entries' and 'ingest relax' do this at the end of every run; run it after an
    interrupted 'ingest relax'. The views never serve stale data: the rows of a stale model
    hull or of stale error rows are left out of every view and query (the queries say how
    many) until this command stores them again. Every mliapdb write records a generation
    marker that the views compare; a write through another DuckDB client (SQL by hand)
    records none: run this command with --verify after it.
    """
    from mliapdb.analysis.error_rows import n_stale as n_stale_rows
    from mliapdb.analysis.model_hull import n_stale
    from mliapdb.store import database as db

    path = resolve_db(ctx, db_path)
    con = db.connect(path)
    try:
        if verify:
            from mliapdb.analysis.verify import verify_derived

            found = verify_derived(con)
            for dataset in found.dft_hulls:
                status(f"{path}: DFT hull of dataset {dataset} differed from its entries, "
                       "rebuilt")
        hulls_before, rows_before = n_stale(con), n_stale_rows(con)
        refresh_model_hulls(con)
    finally:
        con.close()
    status(f"{path}: {hulls_before} model hull(s) and {rows_before} error-row build(s) "
           "rebuilt" if hulls_before or rows_before else
           f"{path}: all model hulls and error rows are up to date")


def _log_result(target, result) -> None:
    """One status line per calculation, for logs (when stderr is not a terminal)."""
    steps = "" if result.n_steps is None else f", {result.n_steps} steps"
    why = f": {result.error}" if result.error else ""
    status(
        f"{target.dataset}/{target.material_id} {target.formula}: {result.status}{steps}, "
        f"{result.wall_time_s:.1f} s{why}"
    )


@ingest.command("relax")
@click.option("--model", required=True, help="Model name (see 'mliapdb models').")
@click.option(
    "--kind",
    type=click.Choice(["relax", "relax-fixsym", "single-point"]),
    default="relax",
    show_default=True,
    help="relax: free relaxation; relax-fixsym: relaxation keeping the DFT structure's space "
    "group (ASE FixSymmetry); single-point: the model on the DFT structure only.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Store a model whose functional is not MP's GGA/GGA+U (e.g. r2SCAN) anyway.",
)
@click.option("--dataset", default=None, help="Only materials of this dataset.")
@click.option(
    "--chemsys",
    default=None,
    help="Only materials whose elements are within this system, e.g. Mn-O-Y.",
)
@click.option("--material-id", "material_ids", multiple=True, help="Only these MP ids.")
@click.option(
    "--max-sites", type=click.IntRange(min=1), default=None, help="Skip cells with more sites."
)
@click.option(
    "--min-nelements",
    type=click.IntRange(min=1),
    default=None,
    help="Skip materials with fewer elements (2: compounds only, no elemental solids).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most N materials (smallest cells first).",
)
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda.")
@click.option(
    "--engine",
    type=click.Choice(["ase", "torch-sim"]),
    default="ase",
    show_default=True,
    help="ase: one structure at a time; torch-sim: many per model call (in-flight batching, "
    "SevenNet/MACE/MatterSim/ORB/fairchem), same protocol and settings hash.",
)
@click.option(
    "--max-atoms",
    type=click.IntRange(min=1),
    default=None,
    help="torch-sim engine: atoms per batch (default: 128 on cpu, 12000 on cuda).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="torch CPU threads (0: leave torch's default).",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Checkpoint file instead of the model's own one: the registered one (same sha256), "
    "or any other with --as.",
)
@click.option(
    "--as",
    "as_name",
    default=None,
    metavar="NAME",
    help="Store the results of --checkpoint as model NAME, derived from --model (its "
    "metadata with this checkpoint's sha256), never pooled with --model's rows.",
)
@click.option("--fmax", type=float, default=None, help="Force criterion, eV/A (model default).")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Step limit (model default; --kind single-point for none).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Run again the materials whose calculation failed."
)
@click.option(
    "--commit-every",
    type=click.IntRange(min=1),
    default=DEFAULT_COMMIT_EVERY,
    show_default=True,
    metavar="N",
    help="Commit once N results are uncommitted (or --commit-seconds passed).",
)
@click.option(
    "--commit-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_COMMIT_SECONDS,
    show_default=True,
    metavar="S",
    help="Commit once the oldest uncommitted result is S seconds old (or N are waiting).",
)
@cluster_options
@format_option
@db_option
@click.pass_context
def relax(
    ctx, model, kind, force, dataset, chemsys, material_ids, max_sites, min_nelements, limit,
    device, engine, max_atoms, threads, checkpoint, as_name, fmax,
    max_steps, retry_failed, commit_every, commit_seconds, fmt, db_path, **cluster,
) -> None:
    """Single point on the DFT structure and relaxation (ASE FIRE + FrechetCellFilter) with
    one MLIAP, for each selected material not done yet with these settings (--kind: free,
    symmetry-constrained, or single point only).

    Failures and unconverged relaxations are stored with their reason. The database is
    held only while the run reads what is done, commits a batch of results (every
    --commit-every results or --commit-seconds, whichever first) and refreshes the derived
    tables at the end: 'query', 'report', 'sql' and notebooks read it in between, and wait
    for a commit in progress (--lock-timeout). An interrupted run loses at most the batch it
    had not committed, and resumes where it stopped.

    With --workers, --scheduler or --slurm the materials run on a Dask cluster in shards of
    --shard-size: workers write one Parquet part per shard beside the database
    (DB.parts/MODEL/SETTINGS/), this process merges each part as it completes; parts left
    by an interrupted run are merged first.

    A checkpoint's results are filed under the model's name only if it is the registered
    one (the metadata's sha256, or the first one the database recorded for a model whose
    weights you give); any other is refused unless --as NAME stores it as a model of its
    own. Each row records its checkpoint's sha256.
    """
    from mliapdb.cli.cluster import cluster_from_params, log_merged
    from mliapdb.compute.calculations import RunOptions, select_targets
    from mliapdb.compute.commits import CommitOptions
    from mliapdb.compute.run import run_calculations
    from mliapdb.store import database as db

    on_cluster = cluster_from_params(cluster)

    overrides = {}
    if fmax is not None:
        overrides["fmax"] = fmax
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    options = RunOptions(kind=kind, device=device, checkpoint=checkpoint, as_name=as_name,
                         settings_overrides=overrides, retry_failed=retry_failed,
                         threads=threads or None, force=force, engine=engine,
                         max_atoms=max_atoms)
    commit = CommitOptions(every=commit_every, seconds=commit_seconds)
    path = resolve_db(ctx, db_path)
    with db.opened(path) as con:  # held only to select; each commit opens it again
        targets = select_targets(
            con, dataset=dataset, chemsys=chemsys, material_ids=material_ids,
            max_sites=max_sites, limit=limit, min_nelements=min_nelements,
        )
    holder = db.Holder(path)
    try:
        if on_cluster is None:
            report = run_calculations(
                holder, model, targets, options, progress=progress_bar,
                on_result=None if stderr_is_terminal() else _log_result, commit=commit,
            )
        else:
            from mliapdb.compute.cluster import run_distributed

            cluster_options, shard_size = on_cluster
            report = run_distributed(
                holder, path, model, targets, options, cluster=cluster_options,
                shard_size=shard_size, progress=progress_bar,
                on_shard=None if stderr_is_terminal() else log_merged, commit=commit,
            )
    except KeyboardInterrupt:
        status("interrupted - storing the model hulls and error rows of the results so far "
               "(Ctrl-C again skips it; 'mliapdb ingest hulls' does it later)")
        with holder.held() as con:
            refresh_model_hulls(con)
        raise
    with holder.held() as con:  # the end-of-run refresh, in a hold of its own
        refresh_model_hulls(con)
    if report.n_leftover_parts and on_cluster is None:
        status(f"{path}: merged {report.n_leftover_parts} Parquet part(s) left by an "
               "interrupted distributed run")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.status_counts.items())) or "none run"
    stored = report.model if report.model == model else f"{report.model} (from {model})"
    within = f" within {chemsys}" if chemsys else ""
    status(
        f"{path}: {stored} (settings {report.settings_hash}): {report.n_selected} selected"
        f"{within}, {report.n_skipped} already done, {counts} ({report.wall_time_s:.1f} s)"
    )
    c = report.status_counts
    emit(
        ["model", "settings", "selected", "already_done", "ok", "not_converged", "failed",
         "wall_s"],
        [(report.model, report.settings_hash, report.n_selected, report.n_skipped,
          c.get("ok", 0), c.get("not_converged", 0), c.get("failed", 0),
          round(report.wall_time_s, 1))],
        fmt,
    )
