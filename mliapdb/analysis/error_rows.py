"""Stored per-row Ehull errors: the rows of ``stg_ehull_errors_live`` (every usable
calculation x hull convention x symmetry analysis, with its DOF, bins and errors in eV/atom)
written to ``ehull_error_rows`` per (dataset, model, settings hash, calculation kind), so that
the statistics views aggregate one table instead of re-joining eight.

Each build records the generation markers it was built from, the statistics settings and
whether its model hull was fresh (``stg_error_row_status``). ``ehull_errors_all`` serves a
build's rows only while those are current, so stored rows are never served stale: the rows
of a stale build are left out until :func:`rebuild_error_rows` stores them again (every
ingest does at its end; ``mliapdb ingest hulls`` on demand), only those of the materials the
changed chemical systems reach where the markers say which. The hash fingerprint of its
inputs (``stg_error_row_inputs``) is stored for ``ingest hulls --verify``. A view that
computed stale builds live instead would cost the live computation on every query, stale or
not: DuckDB evaluates both sides of the ``UNION ALL`` (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from mliapdb.analysis.model_hull import (
    DatasetInputs,
    HullKey,
    Plan,
    refresh_stale,
    stale_builds,
)
from mliapdb.store.database import duckdb_version, insert_rows, now

_KEY = ("dataset", "model", "settings_hash", "calc_kind")
_WHERE = " AND ".join(f"{c} = ?" for c in _KEY)


@dataclass
class ErrorRowsBuild:
    key: HullKey
    n_rows: int
    n_rebuilt: int | None = None  # materials whose rows were stored again (None: all)


@dataclass
class Freshness:
    """Stored error-row builds usable now, and the (dataset, model, settings, kind) with
    results whose stored rows are missing or stale."""

    fresh_build_ids: list[int]
    stale: list[HullKey]


def freshness(con: duckdb.DuckDBPyConnection) -> Freshness:
    """One fingerprint pass (``stg_error_row_builds``): fresh build ids and stale keys."""
    rows = con.execute(
        "SELECT dataset, model, settings_hash, calc_kind, build_id, fresh "
        "FROM stg_error_row_builds ORDER BY ALL").fetchall()
    return Freshness([int(r[4]) for r in rows if r[5]],
                     [HullKey(*r[:4]) for r in rows if not r[5]])


def stored_rows_sql(fresh_build_ids: Sequence[int]) -> str:
    """A subquery equal to ``ehull_errors_all`` for these fresh builds (integer ids from
    :func:`freshness`, written into the SQL as literals): one fingerprint pass per query
    instead of two."""
    ids = ", ".join(str(int(i)) for i in fresh_build_ids) or "NULL"
    return f"(SELECT * EXCLUDE (build_id) FROM ehull_error_rows WHERE build_id IN ({ids}))"


def stale_error_keys(
    con: duckdb.DuckDBPyConnection,
) -> tuple[list[tuple[HullKey, str]], list[HullKey]]:
    """By hash fingerprint (``--verify``): (keys whose stored build differs from its inputs,
    with their current fingerprint; stored keys whose inputs are gone)."""
    return stale_builds(con, "stg_error_row_inputs", "ehull_error_builds")


INCREMENTAL_SHARE = 0.5
"""Above this share of a dataset's materials reached by a change, the rows are stored whole."""


def rebuild_error_rows(
    con: duckdb.DuckDBPyConnection, keys: Sequence[HullKey] | None = None
) -> list[ErrorRowsBuild]:
    """Store the error rows of every stale (dataset, model, settings, kind) (or only ``keys``
    among them), each in one transaction, only those of the materials the touched chemical
    systems reach where the generation markers say which; delete builds whose inputs are
    gone. Run it after :func:`mliapdb.analysis.model_hull.rebuild_model_hulls` (their rows
    include the model hull's)."""
    return refresh_stale(con, "stg_error_row_status", "stg_error_row_inputs", _delete, _build,
                         keys)


def _params(key: HullKey) -> list[str]:
    return [key.dataset, key.model, key.settings_hash, key.calc_kind]


def _delete(con: duckdb.DuckDBPyConnection, key: HullKey) -> None:
    con.execute(
        "DELETE FROM ehull_error_rows WHERE build_id IN "
        f"(SELECT build_id FROM ehull_error_builds WHERE {_WHERE})", _params(key)
    ).fetchall()
    con.execute(f"DELETE FROM ehull_error_builds WHERE {_WHERE}", _params(key)).fetchall()


def _build(con: duckdb.DuckDBPyConnection, p: Plan, fingerprint: str | None,
           inputs: DatasetInputs) -> ErrorRowsBuild | None:
    """Store the rows of ``p``: whole, or only those of the materials its touched chemical
    systems reach. None when the key has no calculations left (its build is deleted)."""
    import pyarrow as pa

    key = p.key
    status = con.execute(
        f"SELECT hull_fresh, settings, build_id FROM stg_error_row_status WHERE {_WHERE}",
        _params(key)).fetchone()
    if fingerprint is None or status is None:
        _delete(con, key)
        return None
    hull_fresh, settings, build_id = status
    affected = None
    if p.touched is not None and build_id is not None:
        got = inputs.reach(key.dataset, p.touched)
        (n_materials,) = con.execute("SELECT count(*) FROM mp_materials WHERE dataset = ?",
                                     [key.dataset]).fetchone()
        if len(got.affected) <= INCREMENTAL_SHARE * max(n_materials, 1):
            affected = got.affected
    if affected is None:
        _delete(con, key)
        (build_id,) = con.execute(
            "SELECT coalesce(max(build_id), 0) + 1 FROM ehull_error_builds").fetchone()
        only = ""
    else:
        _mliapdb_ids = pa.table({"material_id": pa.array(sorted(affected), pa.string())})  # noqa: F841
        con.execute(f"DELETE FROM ehull_error_rows WHERE build_id = {int(build_id)} AND "
                    "material_id IN (SELECT material_id FROM _mliapdb_ids)").fetchall()
        # a constant list: DuckDB pushes it into the view's scans (2-3x faster than a
        # semi join on the Arrow table, measured at 150k x 9)
        listed = ", ".join("'" + m.replace("'", "''") + "'" for m in sorted(affected))
        only = f" AND material_id IN ({listed})"
    # ordered by convention, then material: a filter on the convention skips row groups
    con.execute(
        f"INSERT INTO ehull_error_rows BY NAME SELECT *, {int(build_id)} AS build_id "
        f"FROM stg_ehull_errors_live WHERE {_WHERE}{only} "
        "ORDER BY convention, material_id, symprec, symmetry_method",
        _params(key),
    ).fetchall()
    (n_rows,) = con.execute(f"SELECT count(*) FROM ehull_error_rows WHERE build_id = "
                            f"{int(build_id)}").fetchone()
    # built on a stale model hull: no model-hull rows; stale once the hull is built
    record = {
        "fingerprint": fingerprint, "n_rows": int(n_rows), "built_at": now(),
        "duckdb_version": duckdb_version(con), "dft_generation": p.dft_generation,
        "calc_generation": p.calc_generation, "settings": settings,
        "on_fresh_hull": bool(hull_fresh),
    }
    if affected is None:
        insert_rows(con, "ehull_error_builds", [{
            "dataset": key.dataset, "model": key.model, "settings_hash": key.settings_hash,
            "calc_kind": key.calc_kind, "build_id": int(build_id), **record}])
    else:  # the same build, updated in place
        con.execute(f"UPDATE ehull_error_builds SET {', '.join(f'{c} = ?' for c in record)} "
                    f"WHERE {_WHERE}", [*record.values(), *_params(key)]).fetchall()
    return ErrorRowsBuild(key, int(n_rows), None if affected is None else len(affected))


def n_stale(con: duckdb.DuckDBPyConnection) -> int:
    """How many error-row builds are missing or stale (their rows are left out)."""
    (n,) = con.execute("SELECT count(*) FROM stg_error_row_status WHERE NOT fresh").fetchone()
    return int(n)
