"""All of the Materials Project from its API (``ingest mp --all``): every GGA/GGA+U thermo
document, page by page, each page stored in its own transaction, resumable.

The pages are requests of one query (``thermo_types=GGA_GGA+U``, fields ``material_id`` and
``entries``) with explicit ``_skip``/``_limit``, made through mp-api's own request path one
at a time, so that no more than one page of documents is held in memory. Every answer is
bounded and checked like those of ``ingest mp --chemsys`` (:mod:`mliapdb.materials.mp_api`):
the query may claim at most ``ApiBounds.max_all_docs`` documents, every page must be full
(``min(_limit, total - _skip)`` documents), claim the same total, and repeat no document of
an earlier page, those of the interrupted run included. An answer that breaks off (a cut
connection) is asked again up to ``retries`` times.

Each page goes through :func:`mliapdb.materials.ingest.ingest_parsed` (MP2020, symmetry)
without the DFT hull, with its ``mp_api_pages`` row in the same transaction; the hull is
rebuilt once at the end (and after a failure, for the pages stored). A run resumes after the
last stored page of its dataset; a dataset whose pages add up to the claimed total is
complete, and running again fetches nothing. One MP database version per dataset: a resume
against an API that serves another one is refused.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mliapdb.config import DEFAULT_SYMPREC, MP_API_ENDPOINT
from mliapdb.errors import MliapdbError
from mliapdb.materials.mp_api import (
    DEFAULT_BOUNDS,
    THERMO_TYPE,
    ApiBounds,
    _AnswerGuard,
    _client,
    _open,
    _requests,
    check_key,
    check_snapshot,
    entries_sha256,
    pick_entry,
)

if TYPE_CHECKING:
    import duckdb

FIELDS = ("material_id", "entries")
"""The fields asked of every thermo document (the entries hold the ComputedStructureEntry
dicts, keyed by run type)."""


class ResumeRefused(MliapdbError):
    """The dataset's stored pages cannot be continued from what the API serves now (another
    MP database version, another total): running again does not help."""


@dataclass(frozen=True)
class PageOptions:
    """How ``ingest mp --all`` pages: ``page_size`` documents a request (MP's ``max_limit``
    is 1000); ``retries`` of a rate-limited, gateway-failed or broken-off request; waits of
    ``backoff`` x 2^n seconds between them."""

    page_size: int = 1000
    retries: int = 5
    backoff: float = 0.5


@dataclass
class MpPage:
    """Documents ``skip`` to ``skip + n_docs - 1`` of the ``total`` the query claims."""

    skip: int
    limit: int
    total: int
    material_ids: list[str]  # every document served, in order
    entries: list[dict]  # the GGA/GGA+U entries (pick_entry), in the order served
    skipped: list[tuple[str, str]] = field(default_factory=list)  # material id, reason

    @property
    def n_docs(self) -> int:
        return len(self.material_ids)

    @property
    def source(self) -> str:
        """The ``source_files.path`` of this page."""
        return f"mp-api:all:docs={self.skip}-{self.skip + self.n_docs - 1}"

    @property
    def sha256(self) -> str:
        """:func:`~mliapdb.materials.mp_api.entries_sha256` of the entries."""
        return entries_sha256(self.entries)


class WholeMp:
    """An open MP API client paging the whole-MP query (:func:`open_whole_mp`)."""

    def __init__(self, mpr, guard: _AnswerGuard, endpoint: str, options: PageOptions,
                 statuses: list[int]) -> None:
        self._mpr = mpr
        self._guard = guard
        self._statuses = statuses
        self.endpoint = endpoint
        self.options = options
        self.db_version: str | None = mpr.db_version or None
        self.client = _client()

    def resume_after(self, seen: Sequence[str]) -> None:
        """Refuse, from now on, pages that repeat one of the ``seen`` document ids (those of
        the pages stored before)."""
        self._guard.seen.update(seen)

    def pages(self, start: int = 0, total: int | None = None,
              dataset: str = "mp") -> Iterator[MpPage]:
        """The pages from document ``start`` on, one request each, fetched as they are asked
        for (so a consumer that stores each page before asking for the next has stored every
        document before the one a failure names); ``total``: the documents the stored pages
        of ``dataset`` claimed (a resume), which the query must claim again."""
        skip = start
        while total is None or skip < total:
            page = self._page(skip)
            if total is not None and page.total != total:
                raise ResumeRefused(
                    f"the Materials Project API claims {page.total} {THERMO_TYPE} documents "
                    f"of MP database {self.db_version}, the stored pages of dataset "
                    f"'{dataset}' {total} of the same version - fetch it into another "
                    "dataset with --dataset NAME")
            if page.total == 0:
                raise MliapdbError(
                    f"the Materials Project API at {self.endpoint} claims no {THERMO_TYPE} "
                    "thermo documents at all - check --endpoint")
            total = page.total
            yield page
            skip += page.n_docs

    def _page(self, skip: int) -> MpPage:
        options = self.options
        limit = options.page_size
        attempt = 0
        while True:
            cuts = self._guard.cuts
            try:
                with warnings.catch_warnings(), _requests(self.endpoint, self._statuses,
                                                          options.retries):
                    warnings.simplefilter("ignore")  # mp-api's notices; failures raise
                    answer = self._mpr.materials.thermo._query_resource(
                        criteria={"thermo_types": THERMO_TYPE, "_skip": skip, "_limit": limit},
                        fields=list(FIELDS), num_chunks=1, chunk_size=limit,
                    )
                break
            except MliapdbError:
                if self._guard.cuts == cuts:
                    raise
                if attempt >= options.retries:
                    raise MliapdbError(
                        f"the connection to the Materials Project API at {self.endpoint} broke "
                        f"off while it sent documents {skip}-{skip + limit - 1} (still after "
                        f"{options.retries} retries) - check the network connection"
                    ) from None
                time.sleep(options.backoff * 2 ** attempt)
                attempt += 1
        docs = answer.get("data") or []
        total = int((answer.get("meta") or {}).get("total_doc", 0))
        page = MpPage(skip, limit, total, [str(d.get("material_id")) for d in docs], [])
        for doc in docs:
            entry, why = pick_entry(doc)
            if entry is None:
                page.skipped.append((str(doc.get("material_id")), why or ""))
            else:
                page.entries.append(entry)
        return page


@contextmanager
def open_whole_mp(api_key: str | None, endpoint: str = MP_API_ENDPOINT,
                  options: PageOptions | None = None,
                  bounds: ApiBounds | None = None) -> Iterator[WholeMp]:
    """A :class:`WholeMp` on ``endpoint`` (its ``/heartbeat`` read, for the MP database
    version); one-line errors for a bad key, a missing client or a failed heartbeat."""
    options = options or PageOptions()
    if options.retries < 0 or options.backoff < 0:
        raise MliapdbError("--retries and --backoff must not be negative")
    if not 1 <= options.page_size <= 1000:
        raise MliapdbError(f"--page-size {options.page_size} is outside 1..1000 (MP's "
                           "max_limit is 1000)")
    check_key(api_key)
    endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
    statuses: list[int] = []
    guard = _AnswerGuard(bounds or DEFAULT_BOUNDS, whole=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpr = _open(api_key, endpoint, options.retries, options.backoff, statuses, guard)
    try:
        yield WholeMp(mpr, guard, endpoint, options, statuses)
    finally:
        mpr.session.close()


@dataclass
class AllProgress:
    """What a dataset holds of the whole-MP query: its stored pages."""

    dataset: str
    pages: int = 0
    n_docs: int = 0  # documents of the stored pages (the next page starts there)
    total: int | None = None  # documents the query claimed
    db_version: str | None = None
    seen: list[str] = field(default_factory=list)  # the stored pages' document ids

    @property
    def complete(self) -> bool:
        return self.total is not None and self.n_docs >= self.total


def read_progress(con: duckdb.DuckDBPyConnection, dataset: str) -> AllProgress:
    """The stored pages of ``dataset``; pages that do not follow each other are refused."""
    rows = con.execute(
        "SELECT page_skip, n_docs, total_doc, db_version, material_ids FROM mp_api_pages "
        "WHERE dataset = ? ORDER BY page_skip", [dataset]).fetchall()
    progress = AllProgress(dataset)
    for skip, n_docs, total, db_version, ids in rows:
        if skip != progress.n_docs or (progress.pages and (
                total != progress.total or db_version != progress.db_version)):
            raise MliapdbError(
                f"dataset '{dataset}': its stored --all pages do not follow each other (page "
                f"at document {skip} after {progress.n_docs} documents, total {total}) - the "
                "file was altered; fetch into another dataset with --dataset NAME")
        progress.pages += 1
        progress.n_docs += n_docs
        progress.total, progress.db_version = total, db_version
        progress.seen.extend(json.loads(ids))
    return progress


def check_resume(progress: AllProgress, db_version: str | None) -> None:
    """Refuse to continue or repeat a dataset's whole-MP pages from another MP database."""
    if progress.pages and progress.db_version != db_version:
        held = (f"all {progress.total} documents" if progress.complete else
                f"an unfinished --all run: {progress.n_docs} of {progress.total} documents")
        raise ResumeRefused(
            f"dataset '{progress.dataset}' holds MP database {progress.db_version} ({held}) "
            f"but the API serves {db_version} - fetch it into another dataset with --dataset "
            "NAME (one MP snapshot per dataset)")


def page_row(page: MpPage, api: WholeMp, dataset: str) -> dict:
    """The ``mp_api_pages`` row of a page, for the page's transaction."""
    from mliapdb.store.database import now
    from mliapdb.store.tables import MpApiPage

    return MpApiPage(
        dataset=dataset, page_skip=page.skip, page_limit=page.limit, n_docs=page.n_docs,
        total_doc=page.total, n_entries=len(page.entries), n_skipped=len(page.skipped),
        sha256=page.sha256, material_ids=json.dumps(page.material_ids),
        db_version=api.db_version, endpoint=api.endpoint, thermo_type=THERMO_TYPE,
        client=api.client, fetched_at=now(),
    ).model_dump()


@dataclass
class AllReport:
    """What one ``ingest mp --all`` run did (counts of documents and entries)."""

    dataset: str
    db_version: str | None
    total: int | None = None
    n_before: int = 0  # documents stored by earlier runs
    pages: int = 0  # pages stored by this run
    n_docs: int = 0
    n_entries: int = 0
    n_skipped: int = 0
    n_new: int = 0
    n_unchanged: int = 0
    n_symmetry: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # source, id, reason
    n_hull: int | None = None  # entries of the rebuilt DFT hull; None: not rebuilt

    @property
    def n_stored(self) -> int:
        """Documents the dataset holds of the query after this run."""
        return self.n_before + self.n_docs

    @property
    def complete(self) -> bool:
        return self.total is not None and self.n_stored >= self.total


def hull_lags(con: duckdb.DuckDBPyConnection, dataset: str) -> bool:
    """True when an accepted entry of ``dataset`` has no DFT hull row (pages were stored and
    the hull not rebuilt after them: pages only add entries)."""
    return bool(con.execute(
        "SELECT count(*) FROM dft_entries e WHERE e.dataset = ? AND e.compat_status = 'ok' "
        "AND NOT EXISTS (SELECT 1 FROM dft_hull h WHERE h.dataset = e.dataset "
        "AND h.material_id = e.material_id)", [dataset]).fetchone()[0])


def ingest_all(
    con: duckdb.DuckDBPyConnection,
    api: WholeMp,
    dataset: str = "mp",
    symprecs: Sequence[float] = (DEFAULT_SYMPREC,),
    method: str = "moyopy",
    on_page: Callable[[MpPage, AllReport], None] = lambda page, report: None,
) -> AllReport:
    """Store every page of the whole-MP query into ``dataset``, from the first document its
    stored pages lack (:func:`read_progress`); each page in one transaction with its
    ``mp_api_pages`` row, then the DFT hull once. ``on_page`` is called after each page.
    A failure keeps the stored pages (their hull rebuilt) and says how to resume."""
    from mliapdb.materials.entries import load_entries
    from mliapdb.materials.ingest import check_dataset_name, ingest_parsed, rebuild_dft_hull
    from mliapdb.store.database import transaction

    check_dataset_name(dataset)
    progress = read_progress(con, dataset)
    check_resume(progress, api.db_version)
    check_snapshot(con, dataset, api.db_version)
    report = AllReport(dataset, api.db_version, progress.total, progress.n_docs)
    try:
        if not progress.complete:
            api.resume_after(progress.seen)
            for page in api.pages(progress.n_docs, progress.total, dataset):
                report.total = page.total
                parsed = load_entries([(page.source, page.sha256, page.entries)]) \
                    if page.entries else []
                stored = ingest_parsed(
                    con, parsed, dataset, symprecs, method,
                    extra_rows={"mp_api_pages": [page_row(page, api, dataset)]},
                    rebuild_hull=False,
                )
                report.pages += 1
                report.n_docs += page.n_docs
                report.n_entries += len(page.entries)
                report.n_skipped += len(page.skipped)
                report.n_new += stored.n_new
                report.n_unchanged += stored.n_unchanged
                report.n_symmetry += stored.n_symmetry
                report.rejected += stored.rejected
                on_page(page, report)
    except MliapdbError as exc:
        if report.pages or progress.pages:
            if hull_lags(con, dataset):
                with transaction(con):
                    report.n_hull = rebuild_dft_hull(con, dataset)
            if isinstance(exc, ResumeRefused):
                raise
            total = report.total if report.total is not None else "?"
            raise MliapdbError(
                f"{exc}; {report.n_stored} of {total} documents are stored in dataset "
                f"'{dataset}', the same command resumes after them") from exc
        raise
    if report.n_new or hull_lags(con, dataset):
        with transaction(con):
            report.n_hull = rebuild_dft_hull(con, dataset)
    return report
