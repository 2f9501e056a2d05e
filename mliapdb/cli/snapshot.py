"""``mliapdb snapshot publish|list|pull|verify|merge``: share verified databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option, status

INDEX = click.option(
    "--index",
    "indexes",
    multiple=True,
    metavar="URL|PATH",
    help="Another snapshot index (JSON) besides snapshots/index.json (repeat).",
)


@click.group()
def snapshot() -> None:
    """Publish, find, download, verify and merge shared database snapshots.

    A remote snapshot also opens without download: mliapdb --db https://host/NAME.duckdb
    query ... (read-only).
    """


@contextmanager
def transfer_bar(description: str, total: int | None, done: int) -> Iterator:
    """A rich byte-progress bar on stderr (silent when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


@snapshot.command("publish")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="Folder to write NAME.duckdb, NAME.parquet/ and "
              "NAME.manifest.json into.")
@click.option("--name", default=None, help="Snapshot name (default: the database's file name "
              "without .duckdb).")
@format_option
@db_option
@click.pass_context
def publish(ctx, out_dir, name, fmt, db_path) -> None:
    """Write a compacted copy of the database (DuckDB storage v1.0.0: readable by DuckDB 1.1
    and later), every table as Parquet, and a manifest with sha256 and size of each file,
    versions, row counts, models, settings and the MP data license.

    The database is only read (a read-only file publishes too); stale model hulls and
    stored error rows are rebuilt in the copy, so that the snapshot serves them. Views that
    are not mliapdb's are left out of the copy. Prints the files.
    """
    from mliapdb.sharing.snapshot import publish as run

    path = resolve_db(ctx, db_path)
    published = run(path, out_dir, name, on_status=status)
    m = published.manifest
    status(f"{published.manifest_path}: snapshot {m['name']}, schema version "
           f"{m['schema_version']}, {m['tables'].get('mp_materials', 0)} materials, "
           f"{m['tables'].get('calculations', 0)} calculations of {len(m['models'])} model(s); "
           f"add it to snapshots/index.json with its URL, sha256 and size to share it")
    emit(["path", "size", "sha256"],
         [(str(out_dir / f["path"]), f["size"], f["sha256"]) for f in m["files"]]
         + [(str(published.manifest_path), published.manifest_path.stat().st_size, None)], fmt)


@snapshot.command("list")
@INDEX
@format_option
def list_(indexes, fmt) -> None:
    """The published snapshots of snapshots/index.json (and of each --index).

    Control characters in a description are printed as visible \\xNN escapes (in every
    format); an entry whose name or URL holds one is refused.
    """
    from mliapdb.errors import printable
    from mliapdb.sharing.download import default_index, load_indexes

    entries = load_indexes(indexes)
    if not entries:
        status(f"no snapshots in {default_index()}"
               + (f" or {', '.join(indexes)}" if indexes else "")
               + " - publish one with 'mliapdb snapshot publish' (see snapshots/README.md)")
    emit(["name", "size", "sha256", "description", "url"],
         [(e.name, e.size, e.sha256, printable(e.description), e.url) for e in entries], fmt)


@snapshot.command("pull")
@click.argument("source", metavar="NAME|URL|PATH")
@click.option("--to", "to", type=click.Path(path_type=Path), default=None,
              help="File, or existing folder, to write to (default: the snapshot's file name in "
              "the working directory).")
@click.option("--deadline", type=float, default=3600.0, show_default=True, metavar="SECONDS",
              help="Give up when the whole download (resumes included) takes longer.")
@click.option("--min-rate", type=float, default=1024.0, show_default=True, metavar="BYTES/S",
              help="Give up when fewer bytes per second arrive, averaged over --rate-window "
              "(0: no minimum).")
@click.option("--rate-window", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="Window of the --min-rate average; also the longest wait for one byte.")
@INDEX
@format_option
def pull(source, to, deadline, min_rate, rate_window, indexes, fmt) -> None:
    """Download a snapshot by index name, URL or file path.

    Resumes an interrupted download (DEST.part), checks the sha256 from the index or from the
    manifest published beside the file before anything uses it, refuses a schema newer than
    this mliapdb reads, then renames it into place (with its manifest beside it).

    Bounded: stops as soon as the server sends more bytes than the index or manifest says
    (nothing kept), and gives up under --min-rate or past --deadline (a non-empty DEST.part is
    kept: the same command resumes it).
    """
    from mliapdb.sharing.download import TransferLimits, destination, resolve
    from mliapdb.sharing.download import pull as run

    limits = TransferLimits(deadline_s=deadline, min_rate=min_rate, window_s=rate_window)
    src = resolve(source, indexes)
    dest = destination(src, to)
    path = run(src, dest, progress=transfer_bar, on_status=status, limits=limits)
    status(f"{path}: {src.label} verified (sha256 {src.sha256}); query it with "
           f"'mliapdb --db {path} query ...'")
    emit(["path", "size", "sha256", "schema_version"],
         [(str(path), path.stat().st_size, src.sha256,
           (src.manifest or {}).get("schema_version"))], fmt)


@snapshot.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
              help="The manifest (default: NAME.manifest.json beside NAME.duckdb).")
@format_option
def verify(path, manifest_path, fmt) -> None:
    """Re-check a snapshot file (and the other files of its manifest, where present) against
    its manifest: size and sha256 of each, and that this mliapdb reads its schema."""
    from mliapdb.errors import MliapdbError
    from mliapdb.sharing.snapshot import verify as run

    manifest, checks = run(path, manifest_path)
    emit(["path", "status", "size", "sha256"],
         [(c.path, c.status, c.size, c.sha256) for c in checks], fmt)
    bad = [c for c in checks if c.status != "ok" and (c.is_database or c.status != "absent")]
    if bad:
        raise MliapdbError(f"{len(bad)} file(s) of snapshot {manifest['name']} differ from its "
                           f"manifest ({bad[0].path}: {bad[0].status}) - pull it again")
    status(f"{path}: snapshot {manifest['name']} matches its manifest (schema version "
           f"{manifest['schema_version']})")


@snapshot.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", required=True, type=click.Path(path_type=Path),
              help="The new merged database (must not exist).")
@format_option
def merge(inputs, into, fmt) -> None:
    """Merge databases (e.g. the same MP entries relaxed with different models) into a new one.

    Materials, entries, symmetry, models and calculations are unioned on their primary keys
    (the first file wins a duplicate calculation); the DFT and model hulls and stored error
    rows are rebuilt. Conflicting DFT data for a material refuses the merge and writes
    nothing. Older schemas are migrated in temporary copies.
    """
    from mliapdb.sharing.merge import merge as run

    report = run(inputs, into, on_status=status)
    for line in report.settings_differ:
        status(line)
    if report.duplicate_calculations:
        status(f"{report.duplicate_calculations} calculation(s) in more than one file, kept "
               f"once (the first file's); energies differ by up to "
               f"{report.max_duplicate_diff_meV or 0:.3g} meV/atom")
    for i, path in enumerate(report.inputs, 1):
        status(f"rows_{i}: {path}")
    status(f"{into}: merged {len(inputs)} databases")
    emit(["table", *(f"rows_{i}" for i in range(1, len(inputs) + 1)), "merged"],
         [(t, *counts) for t, counts in report.rows.items()], fmt)
