"""Aggregate queries over the views, built only from allow-listed pieces; user values travel
as SQL parameters, never as SQL text."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.relax import CALC_KINDS

GROUPINGS: dict[str, tuple[str, str]] = {
    # --by value: (SQL expression over ehull_errors_all, output column)
    "dof": ("dof", "dof"),
    "lattice-dof": ("lattice_dof", "lattice_dof"),
    "wyckoff-dof": ("wyckoff_dof", "wyckoff_dof"),
    "crystal-system": ("crystal_system", "crystal_system"),
    "spacegroup": ("spacegroup_number", "spacegroup"),
    "nelements": ("nelements", "nelements"),
    "model": ("", ""),
}


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    description: str
    """What the numbers are (units, conventions, tolerance): printed on stderr."""


def default_symmetry(con: duckdb.DuckDBPyConnection) -> tuple[float, str]:
    symprec, method = con.execute("SELECT symprec, method FROM stg_defaults").fetchone()
    return float(symprec), str(method)


def ehull_mae(
    con: duckdb.DuckDBPyConnection,
    by: str = "dof",
    model: str | None = None,
    dataset: str | None = None,
    settings_hash: str | None = None,
    symprec: float | None = None,
    symmetry_method: str | None = None,
    kind: str = "relax",
) -> QueryResult:
    """Count, MAE, mean signed error (meV/atom) and fraction underpredicted of the model's
    Ehull (fixed DFT hull) per model and ``by`` group, over calculations of ``kind``
    (converged relaxations, or single points)."""
    if kind not in CALC_KINDS:
        raise MliapdbError(
            f"unknown calculation kind {kind!r} - use one of {', '.join(CALC_KINDS)}"
        )
    if by not in GROUPINGS:
        raise MliapdbError(f"unknown grouping {by!r} - use one of {', '.join(GROUPINGS)}")
    d_symprec, d_method = default_symmetry(con)
    symprec = d_symprec if symprec is None else symprec
    symmetry_method = symmetry_method or d_method
    where = ["symprec = ?", "symmetry_method = ?", "calc_kind = ?"]
    params: list = [symprec, symmetry_method, kind]
    for column, value in (("model", model), ("dataset", dataset), ("settings_hash", settings_hash)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    where_sql = " AND ".join(where)
    if model is not None and not con.execute(
        "SELECT count(*) FROM calculations WHERE model = ?", [model]
    ).fetchone()[0]:
        raise MliapdbError(
            f"no calculations with model '{model}' - run 'mliapdb ingest relax --model {model}'"
        )
    ambiguous = con.execute(
        f"SELECT model, string_agg(DISTINCT settings_hash, ', ' ORDER BY settings_hash) "
        f"FROM ehull_errors_all WHERE {where_sql} GROUP BY model "
        f"HAVING count(DISTINCT settings_hash) > 1 ORDER BY model",
        params,
    ).fetchall()
    if ambiguous:
        name, hashes = ambiguous[0]
        raise MliapdbError(
            f"model '{name}' has results under several relaxation settings ({hashes}) - "
            "pick one with --settings HASH"
        )
    expr, label = GROUPINGS[by]
    group_select = f"{expr} AS {label}, " if expr else ""
    group_by = "model, " + label if expr else "model"
    sql = f"""
        SELECT model, {group_select}
            count(*) AS n,
            round(avg(abs(e_above_hull_error)) * 1000, 2) AS mae_meV,
            round(avg(e_above_hull_error) * 1000, 2) AS mean_signed_error_meV,
            round(avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END), 3)
                AS frac_underpredicted
        FROM ehull_errors_all
        WHERE {where_sql}
        GROUP BY {group_by}
        ORDER BY {group_by}
    """
    cur = con.execute(sql, params)
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    description = (
        "Ehull error = model - DFT (meV/atom), fixed DFT hull (MP2020-corrected), "
        + ("single points on the DFT structures" if kind == "single_point" else
           f"converged {'symmetry-constrained ' if kind == 'relax_fixsym' else ''}relaxations")
        + f"; symmetry at symprec {symprec:g} A ({symmetry_method}); "
        "frac_underpredicted = share of materials with model Ehull < DFT Ehull"
    )
    return QueryResult(columns, rows, description)


def calculation_summary(
    con: duckdb.DuckDBPyConnection, model: str | None = None, dataset: str | None = None
) -> QueryResult:
    """Per model, settings and dataset: how many calculations ended ok, not converged or
    failed, with mean steps and wall time of the converged ones."""
    where, params = ["TRUE"], []
    for column, value in (("model", model), ("dataset", dataset)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    cur = con.execute(
        f"""
        SELECT model, calc_kind AS kind, settings_hash AS settings, dataset, count(*) AS n,
            count(*) FILTER (WHERE status = 'ok') AS ok,
            count(*) FILTER (WHERE status = 'not_converged') AS not_converged,
            count(*) FILTER (WHERE status = 'failed') AS failed,
            round(avg(n_steps) FILTER (WHERE status = 'ok'), 1) AS mean_steps,
            round(avg(wall_time_s) FILTER (WHERE status = 'ok'), 2) AS mean_wall_s
        FROM calculations WHERE {" AND ".join(where)}
        GROUP BY ALL ORDER BY model, kind, settings, dataset
        """,
        params,
    )
    return QueryResult(
        [d[0] for d in cur.description],
        cur.fetchall(),
        "calculations per model, settings hash and dataset (see the calculation_failures view "
        "for reasons)",
    )
