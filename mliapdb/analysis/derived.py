"""Derived tables rebuilt from the base tables when their inputs change: the model hulls
(:mod:`mliapdb.analysis.model_hull`), then the stored error rows
(:mod:`mliapdb.analysis.error_rows`), whose rows include the model hulls'. Which changed is
read from the generation markers (:mod:`mliapdb.store.generations`): only the touched
chemical systems and their supersystems are rebuilt where the markers say which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb


@dataclass
class Refreshed:
    """What a refresh built: model hulls, then error-row builds."""

    hulls: list = field(default_factory=list)
    rows: list = field(default_factory=list)


def refresh_derived(
    con: duckdb.DuckDBPyConnection, log: Callable[[str], None] | None = None,
    verify: bool = False,
) -> Refreshed:
    """Rebuild the stale model hulls, then the stale error rows; ``log`` gets one line per
    model hull and one for the error rows. ``verify``: first compare every derived table
    with its inputs by hash (:func:`mliapdb.analysis.verify.verify_derived`, for writes of
    other DuckDB clients) and rebuild what differs."""
    from mliapdb.analysis.error_rows import rebuild_error_rows
    from mliapdb.analysis.model_hull import rebuild_model_hulls
    from mliapdb.store.database import transaction
    from mliapdb.store.generations import prune

    log = log or (lambda _line: None)
    if verify:
        from mliapdb.analysis.verify import verify_derived

        found = verify_derived(con)
        for dataset in found.dft_hulls:
            log(f"DFT hull of dataset {dataset} differed from its entries: rebuilt")
        if found.model_hulls or found.error_rows or found.unmarked:
            log(f"verified by hash: {found.model_hulls} model hull(s) and {found.error_rows} "
                f"error-row build(s) differ from their inputs, {found.unmarked} result or "
                "entry set(s) had no generation marker")
    out = Refreshed(rebuild_model_hulls(con))
    for built in out.hulls:
        k = built.key
        filled = (f", {built.n_complete_filled} once fill-ins count ({built.n_filled} "
                  "fill-in energies)" if built.n_complete_filled != built.n_complete else "")
        log(
            f"model hull {k.model} ({k.calc_kind}, settings {k.settings_hash}, dataset "
            f"{k.dataset}): {built.n_entries} entries, {built.n_complete} with complete "
            f"chemical systems{filled}"
        )
    stored = out.rows = rebuild_error_rows(con)
    if stored:
        log(f"error rows stored for {len(stored)} model x settings x kind "
            f"({sum(b.n_rows for b in stored)} rows)")
    with transaction(con):
        prune(con)
    return out
