"""Derived tables rebuilt from the base tables when their inputs change: the model hulls
(:mod:`mliapdb.analysis.model_hull`), then the stored error rows
(:mod:`mliapdb.analysis.error_rows`), whose rows include the model hulls'."""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def refresh_derived(
    con: duckdb.DuckDBPyConnection, log: Callable[[str], None] | None = None
) -> None:
    """Rebuild the stale model hulls, then the stale error rows; ``log`` gets one line per
    model hull and one for the error rows."""
    from mliapdb.analysis.error_rows import rebuild_error_rows
    from mliapdb.analysis.model_hull import rebuild_model_hulls

    log = log or (lambda _line: None)
    for built in rebuild_model_hulls(con):
        k = built.key
        filled = (f", {built.n_complete_filled} once fill-ins count ({built.n_filled} "
                  "fill-in energies)" if built.n_complete_filled != built.n_complete else "")
        log(
            f"model hull {k.model} ({k.calc_kind}, settings {k.settings_hash}, dataset "
            f"{k.dataset}): {built.n_entries} entries, {built.n_complete} with complete "
            f"chemical systems{filled}"
        )
    stored = rebuild_error_rows(con)
    if stored:
        log(f"error rows stored for {len(stored)} model x settings x kind "
            f"({sum(b.n_rows for b in stored)} rows)")
