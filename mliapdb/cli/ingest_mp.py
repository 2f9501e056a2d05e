"""``mliapdb ingest mp``: fetch whole chemical systems from the Materials Project API and
ingest them like entry files."""

from __future__ import annotations

import click

from mliapdb.cli.common import dataset_option, db_option, resolve_db, symmetry_options
from mliapdb.cli.output import emit, format_option, status
from mliapdb.cli.progress import progress_bar
from mliapdb.config import MP_API_ENDPOINT


@click.command("mp")
@click.option(
    "--chemsys",
    "chemsys",
    multiple=True,
    metavar="SYSTEM",
    help="Chemical system, e.g. Li-Fe-O: all its entries and those of every subsystem "
    "(Li, Fe, O, Li-Fe, ...); repeat for several.",
)
@click.option(
    "--material-id",
    "material_ids",
    multiple=True,
    metavar="ID",
    help="MP material id, e.g. mp-19006: the whole chemical system it belongs to; repeatable.",
)
@click.option(
    "--all",
    "whole",
    is_flag=True,
    help="Every GGA/GGA+U thermo document of MP (about 154,000), page by page, each page "
    "stored at once: an interrupted run resumes after its last stored page, a finished one "
    "fetches nothing.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=1000,
    show_default=True,
    help="Documents per request of --all (MP serves at most 1000).",
)
@dataset_option
@click.option(
    "--api-key",
    envvar="MP_API_KEY",
    show_envvar=True,
    metavar="KEY",
    help="Materials Project API key (https://materialsproject.org/api).",
)
@click.option(
    "--endpoint",
    envvar="MP_API_ENDPOINT",
    show_envvar=True,
    default=MP_API_ENDPOINT,
    show_default=True,
    help="MP API address.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Retries of a request that is rate limited (HTTP 429) or meets a gateway error "
    "(502-504), and with --all of an answer that broke off.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Backoff factor in seconds: waits of BACKOFF x 2^n between retries (or the "
    "server's Retry-After).",
)
@symmetry_options
@format_option
@db_option
@click.pass_context
def mp(
    ctx, chemsys, material_ids, whole, page_size, dataset, api_key, endpoint, retries, backoff,
    symprecs, symmetry_method, fmt, db_path,
) -> None:
    """Fetch GGA/GGA+U entries from the Materials Project API (mp-api client) and ingest them.

    Each system comes whole, with every subsystem, so its hull is complete. The entries take
    the path of 'ingest entries' (MP2020 re-applied, symmetry, DFT hull, one transaction);
    the MP database version is recorded per fetch (table mp_api_fetches), and a dataset
    holds one version. Entries without a structure or not GGA/GGA+U are left out and listed.
    Any failure (no or rejected key, rate limit, server error, no network) writes nothing.

    With --all: every GGA/GGA+U thermo document, a page (--page-size documents) a request,
    each page stored in its own transaction (table mp_api_pages) and the DFT hull rebuilt
    once at the end (and after a failure, for the pages stored). A failure keeps the stored
    pages; the same command resumes after them, against the same MP database version only.
    """
    path = resolve_db(ctx, db_path)
    if whole:
        if chemsys or material_ids:
            raise click.UsageError("pass --all, or --chemsys/--material-id, not both")
        _mp_all(path, dataset, api_key, endpoint, page_size, retries, backoff, symprecs,
                symmetry_method, fmt)
        return
    _mp_systems(path, chemsys, material_ids, dataset, api_key, endpoint, retries, backoff,
                symprecs, symmetry_method, fmt)


def _mp_systems(path, chemsys, material_ids, dataset, api_key, endpoint, retries, backoff,
                symprecs, symmetry_method, fmt) -> None:
    """``ingest mp --chemsys/--material-id``: whole systems in one transaction."""
    from mliapdb.cli.ingest import refresh_model_hulls
    from mliapdb.materials.entries import load_entries
    from mliapdb.materials.ingest import check_dataset_name, ingest_parsed
    from mliapdb.materials.mp_api import fetch_entries, fetch_rows, subsystems
    from mliapdb.store import database as db

    check_dataset_name(dataset)
    fetch = fetch_entries(
        api_key, chemsys=chemsys, material_ids=material_ids, endpoint=endpoint,
        retries=retries, backoff=backoff, progress=progress_bar,
    )
    version = fetch.db_version or "unknown"
    for system in fetch.systems:
        status(
            f"{system.source}: {len(system.entries)} entries of "
            f"{len(subsystems(system.chemsys))} chemical system(s) (MP database {version})"
        )
        for mid, why in system.skipped:
            status(f"left out {mid} ({system.chemsys}): {why}")
    parsed = load_entries(fetch.sources)
    with db.opened(path, create=True) as con:  # a new file is removed again on failure
        report = ingest_parsed(
            con, parsed, dataset, symprecs, symmetry_method, progress_bar,
            extra_rows={"mp_api_fetches": fetch_rows(con, fetch, dataset)},
        )
        refresh_model_hulls(con)
    for source, mid, reason in report.rejected:
        status(f"rejected by MP2020 compatibility: {source}: {mid}: {reason}")
    n_skipped = sum(len(s.skipped) for s in fetch.systems)
    status(
        f"{path}: fetched {report.n_read} entries ({n_skipped} left out) from {fetch.endpoint} "
        f"(MP database {version}) into dataset '{dataset}': {report.n_new} new, "
        f"{report.n_unchanged} unchanged, {len(report.rejected)} rejected by MP2020; "
        f"{report.n_symmetry} symmetry analyses (symprec {', '.join(map(str, symprecs))}, "
        f"{symmetry_method}); "
        + (f"DFT hull rebuilt ({report.n_hull} entries)" if report.n_new else "hull unchanged")
    )
    emit(
        ["dataset", "mp_db_version", "chemsys", "fetched", "left_out", "new", "unchanged",
         "rejected", "symmetry_analyses", "hull_entries"],
        [(dataset, fetch.db_version, " ".join(s.chemsys for s in fetch.systems), report.n_read,
          n_skipped, report.n_new, report.n_unchanged, len(report.rejected), report.n_symmetry,
          report.n_hull)],
        fmt,
    )


def _mp_all(path, dataset, api_key, endpoint, page_size, retries, backoff, symprecs,
            symmetry_method, fmt) -> None:
    """``ingest mp --all``: page by page, resumable (:mod:`mliapdb.materials.mp_all`); a
    database file this run created is removed again when no page was stored."""
    import time
    from pathlib import Path

    from mliapdb.cli.ingest import refresh_model_hulls
    from mliapdb.cli.progress import progress_line
    from mliapdb.materials.ingest import check_dataset_name
    from mliapdb.materials.mp_all import PageOptions, ingest_all, open_whole_mp
    from mliapdb.store import database as db

    check_dataset_name(dataset)
    options = PageOptions(page_size=page_size, retries=retries, backoff=backoff)
    start = time.monotonic()
    stored: list[int] = []  # documents of each page this run stored

    def on_page(page, report) -> None:
        stored.append(page.n_docs)
        todo = report.total - report.n_before
        line = progress_line("mp-api:all", report.n_docs, todo, time.monotonic() - start)
        status(
            f"{line}: documents {page.skip}-{page.skip + page.n_docs - 1} of {page.total} "
            f"stored ({len(page.entries)} entries, {len(page.skipped)} left out)"
        )
        for mid, why in page.skipped:
            status(f"left out {mid}: {why}")

    with open_whole_mp(api_key, endpoint, options) as api:
        new_file = not Path(path).exists()
        con = db.connect(path, create=True)
        try:
            report = ingest_all(con, api, dataset, symprecs, symmetry_method, on_page)
            refresh_model_hulls(con)
        except BaseException:
            con.close()
            if new_file and not stored:
                for leftover in (Path(path), Path(f"{path}.wal")):
                    leftover.unlink(missing_ok=True)
            raise
        con.close()
    version = report.db_version or "unknown"
    for source, mid, reason in report.rejected:
        status(f"rejected by MP2020 compatibility: {source}: {mid}: {reason}")
    if report.pages:
        hull = f"DFT hull rebuilt ({report.n_hull} entries)" if report.n_hull is not None \
            else "hull unchanged"
        status(
            f"{path}: fetched {report.n_docs} documents in {report.pages} pages from "
            f"{api.endpoint} (MP database {version}) into dataset '{dataset}': "
            f"{report.n_entries} entries ({report.n_skipped} left out), {report.n_new} new, "
            f"{report.n_unchanged} unchanged, {len(report.rejected)} rejected by MP2020; "
            f"{report.n_symmetry} symmetry analyses; {hull}; dataset '{dataset}' holds "
            f"{report.n_stored} of {report.total} documents"
        )
    else:
        status(
            f"{path}: dataset '{dataset}' holds all {report.total} GGA/GGA+U documents of MP "
            f"database {version} - nothing to fetch"
            + (f"; DFT hull rebuilt ({report.n_hull} entries)" if report.n_hull is not None
               else "")
        )
    emit(
        ["dataset", "mp_db_version", "documents", "total", "pages", "entries", "left_out",
         "new", "unchanged", "rejected", "symmetry_analyses", "hull_entries"],
        [(dataset, report.db_version, report.n_stored, report.total, report.pages,
          report.n_entries, report.n_skipped, report.n_new, report.n_unchanged,
          len(report.rejected), report.n_symmetry, report.n_hull)],
        fmt,
    )

