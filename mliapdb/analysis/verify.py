"""Verification of the derived tables against their inputs by hash (``mliapdb ingest hulls
--verify``): what a write through another DuckDB client needs, since it bumps no generation
marker (:mod:`mliapdb.store.generations`).

Each dataset's DFT hull is recomputed whole and compared; each model-hull and error-row
build's stored fingerprint is compared with the live one (``stg_model_hull_inputs``,
``stg_error_row_inputs``: count and order-free hash of the columns read). What differs is
rebuilt, the DFT hull at once, the others marked unknown so that the next refresh rebuilds
them whole; a calculation set or dataset without a marker gets one.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mliapdb.store.database import transaction


@dataclass
class Verified:
    """What a verification found different (and rebuilt or marked for rebuilding)."""

    dft_hulls: list[str]
    model_hulls: int
    error_rows: int
    unmarked: int


def verify_derived(con: duckdb.DuckDBPyConnection) -> Verified:
    """Compare every derived table with its inputs by hash, in one transaction; rebuild the
    DFT hulls that differ and mark the model-hull and error-row builds that differ as
    unknown (:func:`mliapdb.analysis.derived.refresh_derived` then rebuilds them whole)."""
    from mliapdb.analysis.error_rows import stale_error_keys
    from mliapdb.analysis.model_hull import stale_keys_by_hash
    from mliapdb.materials.dft_hull import verify_dft_hull
    from mliapdb.store.generations import Scope, bump

    with transaction(con):
        unmarked = [Scope(*r) for r in con.execute(
            "SELECT DISTINCT dataset, '', '', '' FROM dft_entries UNION "
            "SELECT DISTINCT dataset, model, settings_hash, calc_kind FROM calculations "
            "EXCEPT SELECT dataset, model, settings_hash, calc_kind FROM generations "
            "ORDER BY ALL").fetchall()]
        for scope in unmarked:
            bump(con, scope)
        datasets = [r[0] for r in con.execute(
            "SELECT DISTINCT dataset FROM dft_entries ORDER BY 1").fetchall()]
        differ = [d for d in datasets if verify_dft_hull(con, d)]
        for dataset in differ:
            bump(con, Scope(dataset))
        hulls, gone = stale_keys_by_hash(con)
        for key in {*gone, *stale_error_keys(con)[1]}:  # built, their inputs deleted
            bump(con, Scope(*vars(key).values()))
        for key, _ in hulls:
            con.execute("UPDATE model_hull_builds SET calc_generation = NULL WHERE dataset = ? "
                        "AND model = ? AND settings_hash = ? AND calc_kind = ?",
                        list(vars(key).values())).fetchall()
        rows = stale_error_keys(con)[0]
        for key, _ in rows:
            con.execute("UPDATE ehull_error_builds SET calc_generation = NULL WHERE "
                        "dataset = ? AND model = ? AND settings_hash = ? AND calc_kind = ?",
                        list(vars(key).values())).fetchall()
    return Verified(differ, len(hulls) + len(gone), len(rows), len(unmarked))
