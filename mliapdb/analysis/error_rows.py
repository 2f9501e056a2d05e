"""Stored per-row Ehull errors: the rows of ``stg_ehull_errors_live`` (every usable
calculation x hull convention x symmetry analysis, with its DOF, bins and errors in eV/atom)
written to ``ehull_error_rows`` per (dataset, model, settings hash, calculation kind), so that
the statistics views aggregate one table instead of re-joining eight.

Each build records the fingerprint of its inputs (``stg_error_row_inputs``: the model hull's
inputs, the calculations' symmetry columns, the dataset's materials, DFT hull and symmetry
analyses, the statistics settings and the model-hull build). ``ehull_errors_all`` serves a
build's rows only while that fingerprint matches, so stored rows are never served stale: the
rows of a stale build are left out until :func:`rebuild_error_rows` stores them again (every
ingest does at its end; ``mliapdb ingest hulls`` on demand). A view that computed stale builds
live instead would cost the live computation on every query, stale or not: DuckDB evaluates
both sides of the ``UNION ALL`` (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from mliapdb.analysis.model_hull import HullKey, rebuild_stale, stale_builds
from mliapdb.store.database import duckdb_version, insert_rows, now

_KEY = ("dataset", "model", "settings_hash", "calc_kind")
_WHERE = " AND ".join(f"{c} = ?" for c in _KEY)


@dataclass
class ErrorRowsBuild:
    key: HullKey
    n_rows: int


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
    """(keys to build with their current fingerprint, stored keys whose inputs are gone)."""
    return stale_builds(con, "stg_error_row_inputs", "ehull_error_builds")


def rebuild_error_rows(
    con: duckdb.DuckDBPyConnection, keys: Sequence[HullKey] | None = None
) -> list[ErrorRowsBuild]:
    """Store the error rows of every stale (dataset, model, settings, kind) (or only ``keys``
    among them), each in one transaction; delete builds whose inputs are gone. Run it after
    :func:`mliapdb.analysis.model_hull.rebuild_model_hulls` (their rows include the model
    hull's)."""
    return rebuild_stale(con, stale_error_keys(con), _delete, _build, keys)


def _params(key: HullKey) -> list[str]:
    return [key.dataset, key.model, key.settings_hash, key.calc_kind]


def _delete(con: duckdb.DuckDBPyConnection, key: HullKey) -> None:
    con.execute(
        "DELETE FROM ehull_error_rows WHERE build_id IN "
        f"(SELECT build_id FROM ehull_error_builds WHERE {_WHERE})", _params(key)
    ).fetchall()
    con.execute(f"DELETE FROM ehull_error_builds WHERE {_WHERE}", _params(key)).fetchall()


def _build(con: duckdb.DuckDBPyConnection, key: HullKey, fingerprint: str) -> ErrorRowsBuild:
    _delete(con, key)
    (build_id,) = con.execute(
        "SELECT coalesce(max(build_id), 0) + 1 FROM ehull_error_builds").fetchone()
    # ordered by convention, then material: a filter on the convention skips row groups
    (n_rows,) = con.execute(
        f"INSERT INTO ehull_error_rows BY NAME SELECT *, {int(build_id)} AS build_id "
        f"FROM stg_ehull_errors_live WHERE {_WHERE} "
        "ORDER BY convention, material_id, symprec, symmetry_method",
        _params(key),
    ).fetchone()
    insert_rows(con, "ehull_error_builds", [{
        "dataset": key.dataset, "model": key.model, "settings_hash": key.settings_hash,
        "calc_kind": key.calc_kind, "build_id": int(build_id), "fingerprint": fingerprint,
        "n_rows": int(n_rows), "built_at": now(), "duckdb_version": duckdb_version(con),
    }])
    return ErrorRowsBuild(key, int(n_rows))


def n_stale(con: duckdb.DuckDBPyConnection) -> int:
    """How many error-row builds are missing or stale (their rows are computed live)."""
    return len(stale_error_keys(con)[0])
