"""Aggregate queries over the views, built only from allow-listed pieces; user values travel
as SQL parameters, never as SQL text."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.relax import CALC_KINDS

GROUPINGS: dict[str, tuple[str, str]] = {
    # --by value: (SQL expression over ehull_errors_all, output column); "dof-bin" is built
    # from the bins (see :func:`_dof_bin_sql`)
    "dof": ("dof", "dof"),
    "dof-bin": ("", "dof_bin"),
    "lattice-dof": ("lattice_dof", "lattice_dof"),
    "wyckoff-dof": ("wyckoff_dof", "wyckoff_dof"),
    "crystal-system": ("crystal_system", "crystal_system"),
    "spacegroup": ("spacegroup_number", "spacegroup"),
    "nelements": ("nelements", "nelements"),
    "model": ("", ""),
}

CONVENTIONS = ("dft-hull", "model-hull", "model-hull-dft-refs")
"""Hull conventions of ``ehull_errors`` (see schema/views/30_stats.sql)."""

HULL_COVERAGES = {"complete": "hull_complete", "filled": "hull_complete_filled"}
"""Which model-hull rows count: complete chemical systems, or complete once fill-ins count
(the ``ehull_errors_all`` column for each)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    description: str
    """What the numbers are (units, conventions, tolerance): printed on stderr."""


def default_symmetry(con: duckdb.DuckDBPyConnection) -> tuple[float, str]:
    symprec, method = con.execute("SELECT symprec, method FROM stg_defaults").fetchone()
    return float(symprec), str(method)


def stats_settings(con: duckdb.DuckDBPyConnection) -> tuple[float, list[int]]:
    """(near-hull threshold eV/atom, DOF bin lower edges) stored in the database."""
    threshold, bins = con.execute(
        "SELECT near_hull_threshold, dof_bins FROM stg_stats_settings").fetchone()
    return float(threshold), list(bins)


def hull_coverage_setting(con: duckdb.DuckDBPyConnection) -> str:
    """The database's ``model_hull_coverage``: ``complete`` or ``filled``."""
    (value,) = con.execute("SELECT model_hull_coverage FROM stg_stats_settings").fetchone()
    return str(value)


def parse_bins(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (strictly increasing integers >= 0)."""
    error = MliapdbError(f"bad --bins {text!r} - write increasing integers like 1,2,4,8,16")
    try:
        bins = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise error from exc
    pairs = zip(bins, bins[1:], strict=False)
    if not bins or any(b < 0 for b in bins) or any(a >= b for a, b in pairs):
        raise error
    return bins


def _dof_bin_sql(bins: list[int]) -> tuple[str, str]:
    """(label expression, order expression) of DOF bins with lower edges ``bins``; no user
    text in the SQL: the edges are integers checked by :func:`parse_bins`."""
    edges = "[" + ", ".join(str(int(b)) for b in bins) + "]"
    order = f"len(list_filter({edges}, lambda x: x <= dof))"
    cases = [f"WHEN {order} = 0 THEN '<{bins[0]}'"]
    for i, lower in enumerate(bins):
        upper = bins[i + 1] - 1 if i + 1 < len(bins) else None
        label = f"{lower}+" if upper is None else (str(lower) if upper == lower
                                                  else f"{lower}-{upper}")
        cases.append(f"WHEN {order} = {i + 1} THEN '{label}'")
    return "CASE " + " ".join(cases) + " END", order


def ehull_mae(
    con: duckdb.DuckDBPyConnection,
    by: str = "dof",
    model: str | None = None,
    dataset: str | None = None,
    settings_hash: str | None = None,
    symprec: float | None = None,
    symmetry_method: str | None = None,
    kind: str = "relax",
    convention: str = "dft-hull",
    near_hull: float | None = None,
    bins: list[int] | None = None,
    hull_coverage: str | None = None,
) -> QueryResult:
    """Count, MAE, RMSE, mean and median signed error (meV/atom) and fraction underpredicted
    of the model's Ehull per model and ``by`` group, over calculations of ``kind`` under hull
    ``convention`` (model-hull conventions: materials whose chemical system is complete);
    ``near_hull`` (eV/atom) keeps materials with DFT Ehull below it; ``bins`` are the lower
    edges of the DOF bins (default: the database's); ``hull_coverage`` which model-hull rows
    count (:data:`HULL_COVERAGES`; default: the database's)."""
    if kind not in CALC_KINDS:
        raise MliapdbError(
            f"unknown calculation kind {kind!r} - use one of {', '.join(CALC_KINDS)}"
        )
    if by not in GROUPINGS:
        raise MliapdbError(f"unknown grouping {by!r} - use one of {', '.join(GROUPINGS)}")
    if convention not in CONVENTIONS:
        raise MliapdbError(
            f"unknown convention {convention!r} - use one of {', '.join(CONVENTIONS)}"
        )
    d_symprec, d_method = default_symmetry(con)
    symprec = d_symprec if symprec is None else symprec
    symmetry_method = symmetry_method or d_method
    _, d_bins = stats_settings(con)
    bins = bins or d_bins
    hull_coverage = hull_coverage or hull_coverage_setting(con)
    if hull_coverage not in HULL_COVERAGES:
        raise MliapdbError(f"unknown hull coverage {hull_coverage!r} - use one of "
                           f"{', '.join(HULL_COVERAGES)}")
    where = ["symprec = ?", "symmetry_method = ?", "calc_kind = ?", "convention = ?",
             HULL_COVERAGES[hull_coverage]]
    params: list = [symprec, symmetry_method, kind, convention]
    for column, value in (("model", model), ("dataset", dataset), ("settings_hash", settings_hash)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if near_hull is not None:
        where.append("dft_e_above_hull < ?")
        params.append(near_hull)
    where_sql = " AND ".join(where)
    if model is not None and not con.execute(
        "SELECT count(*) FROM calculations WHERE model = ?", [model]
    ).fetchone()[0]:
        raise MliapdbError(
            f"no calculations with model '{model}' - run 'mliapdb ingest relax --model {model}'"
        )
    # cheap checks on the calculations table (not on the joined view)
    calc_where, calc_params = ["status = 'ok'", "calc_kind = ?"], [kind]
    for column, value in (("model", model), ("dataset", dataset),
                          ("settings_hash", settings_hash)):
        if value is not None:
            calc_where.append(f"{column} = ?")
            calc_params.append(value)
    calc_sql = " AND ".join(calc_where)
    ambiguous = con.execute(
        f"SELECT model, string_agg(DISTINCT settings_hash, ', ' ORDER BY settings_hash) "
        f"FROM calculations WHERE {calc_sql} GROUP BY model "
        f"HAVING count(DISTINCT settings_hash) > 1 ORDER BY model",
        calc_params,
    ).fetchall()
    if ambiguous:
        name, hashes = ambiguous[0]
        raise MliapdbError(
            f"model '{name}' has results under several relaxation settings ({hashes}) - "
            "pick one with --settings HASH"
        )
    datasets = con.execute(
        f"SELECT DISTINCT dataset FROM calculations WHERE {calc_sql} ORDER BY 1", calc_params
    ).fetchall()
    if len(datasets) > 1:
        raise MliapdbError(
            f"results span datasets {', '.join(d[0] for d in datasets)} (different MP "
            "snapshots, never mixed) - pick one with --dataset NAME"
        )
    from mliapdb.error_rows import freshness, stored_rows_sql

    fresh = freshness(con)  # one fingerprint pass: the stored rows that may be served
    expr, label = GROUPINGS[by]
    source, order_by, group_by = stored_rows_sql(fresh.fresh_build_ids), label, "model, " + label
    if by == "dof-bin":
        bin_label, bin_order = _dof_bin_sql(bins)
        source = (f"(SELECT * REPLACE ({bin_label} AS dof_bin, {bin_order} AS dof_bin_order) "
                  f"FROM {source})")
        expr, order_by, group_by = "dof_bin", "dof_bin_order", "model, dof_bin, dof_bin_order"
    group_select = f"{expr} AS {label}, " if label else ""
    if not label:
        group_by = "model"
    sql = f"""
        SELECT model, {group_select}
            count(*) AS n,
            round(avg(abs(e_above_hull_error)) * 1000, 2) AS mae_meV,
            round(sqrt(avg(e_above_hull_error * e_above_hull_error)) * 1000, 2) AS rmse_meV,
            round(avg(e_above_hull_error) * 1000, 2) AS mean_signed_error_meV,
            round(median(e_above_hull_error) * 1000, 2) AS median_signed_error_meV,
            round(avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END), 3)
                AS frac_underpredicted
        FROM {source}
        WHERE {where_sql}
        GROUP BY {group_by}
        ORDER BY model{", " + order_by if label else ""}
    """
    cur = con.execute(sql, params)
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    what = {
        "single_point": "single points on the DFT structures",
        "relax": "converged relaxations",
        "relax_fixsym": "converged symmetry-constrained relaxations",
    }[kind]
    systems = ("complete chemical systems" if hull_coverage == "complete" else
               "chemical systems complete once fill-ins count: failed/unconverged relaxations "
               "enter the hull with their lowest energy")
    hull = {
        "dft-hull": "fixed DFT hull (MP2020-corrected)",
        "model-hull": f"model hull (model's own energies and elemental references; {systems})",
        "model-hull-dft-refs": f"model hull with DFT elemental references ({systems})",
    }[convention]
    description = (
        f"Ehull error = model - DFT (meV/atom), {hull}, {what}"
        + (f", near-hull materials (DFT Ehull < {near_hull * 1000:g} meV/atom)"
           if near_hull is not None else "")
        + f"; symmetry at symprec {symprec:g} A ({symmetry_method}); "
        "frac_underpredicted = share of materials with model Ehull < DFT Ehull"
        + (f"; DOF bins from {','.join(map(str, bins))}" if by == "dof-bin" else "")
        + _stale_note(con, convention, len(fresh.stale))
    )
    return QueryResult(columns, rows, description)


def near_hull(
    con: duckdb.DuckDBPyConnection, threshold: float | None = None, **kwargs
) -> QueryResult:
    """:func:`ehull_mae` over the materials with DFT Ehull below ``threshold`` (eV/atom;
    default: the database's ``near_hull_threshold``)."""
    if threshold is None:
        threshold = stats_settings(con)[0]
    return ehull_mae(con, near_hull=threshold, **kwargs)


def _stale_note(
    con: duckdb.DuckDBPyConnection, convention: str, n_stale_rows: int | None = None
) -> str:
    """What the views leave out now: stale model hulls (model-hull conventions) and stale
    stored error rows (every convention)."""
    from mliapdb.error_rows import freshness
    from mliapdb.model_hull import n_stale

    notes = []
    if convention != "dft-hull" and (stale := n_stale(con)):
        notes.append(f"{stale} model hull(s) missing or stale")
    if n_stale_rows is None:
        n_stale_rows = len(freshness(con).stale)
    if n_stale_rows:
        notes.append(f"{n_stale_rows} result set(s) changed since their error rows were stored")
    if not notes:
        return ""
    return f"; {' and '.join(notes)}, their rows are left out - run 'mliapdb ingest hulls'"


def _view_query(
    con: duckdb.DuckDBPyConnection,
    view: str,
    columns: list[tuple[str, str]],
    filters: dict[str, object],
    order: str,
    description: str,
) -> QueryResult:
    """SELECT allow-listed ``columns`` (expression, name) from ``view`` with ``filters``
    (column -> value, None = no filter) as parameters."""
    where, params = ["TRUE"], []
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    select = ", ".join(f"{expr} AS {name}" for expr, name in columns)
    cur = con.execute(
        f"SELECT {select} FROM {view} WHERE {' AND '.join(where)} ORDER BY {order}", params
    )
    return QueryResult([d[0] for d in cur.description], cur.fetchall(), description)


def energy_error(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull",
) -> QueryResult:
    """MAE, mean signed error (meV/atom) and fraction underpredicted of the total and the
    formation energy per model."""
    return _view_query(
        con, "energy_error_stats",
        [("model", "model"), ("n", "n"),
         ("round(e_mae * 1000, 2)", "e_mae_meV"),
         ("round(e_mean_signed_error * 1000, 2)", "e_mean_signed_error_meV"),
         ("round(e_frac_underpredicted, 3)", "e_frac_underpredicted"),
         ("round(e_form_mae * 1000, 2)", "e_form_mae_meV"),
         ("round(e_form_mean_signed_error * 1000, 2)", "e_form_mean_signed_error_meV"),
         ("round(e_form_frac_underpredicted, 3)", "e_form_frac_underpredicted")],
        {"model": model, "calc_kind": kind, "convention": convention}, "model",
        f"total and formation energy error = model - DFT (meV/atom), MP2020-corrected, {kind}, "
        f"{convention} formation energies" + _stale_note(con, convention),
    )


def stability(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull",
) -> QueryResult:
    """Stability classification per model at 0 eV/atom: TP/FP/TN/FN, precision, recall, F1,
    accuracy, DAF."""
    return _view_query(
        con, "stability_classification",
        [("model", "model"), ("n", "n"), ("tp", "tp"), ("fp", "fp"), ("tn", "tn"),
         ("fn", "fn"), ("round(precision, 3)", "precision"), ("round(recall, 3)", "recall"),
         ("round(f1, 3)", "f1"), ("round(accuracy, 3)", "accuracy"),
         ("round(prevalence, 3)", "prevalence"), ("round(daf, 2)", "daf")],
        {"model": model, "calc_kind": kind, "convention": convention}, "model",
        f"stable = Ehull <= 0 eV/atom (DFT: truth, model: prediction), {kind}, {convention}; "
        "DAF = precision / prevalence" + _stale_note(con, convention),
    )


def relaxation_effect(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull", by: str = "model",
) -> QueryResult:
    """The same materials after a single point on the DFT structure and after a relaxation of
    ``kind``: Ehull MAE, mean signed error and fraction underpredicted of both, and the
    relaxation energy (meV/atom), per model (``by="model"``) or per model and DOF bin
    (``by="dof-bin"``)."""
    if kind == "single_point":
        raise MliapdbError("--kind must be a relaxation (relax or relax-fixsym): the effect "
                           "of relaxing is measured against the single points")
    if by not in ("model", "dof-bin"):
        raise MliapdbError(f"unknown grouping {by!r} - use one of model, dof-bin")
    columns = [("model", "model")]
    if by == "dof-bin":
        columns.append(("group_value", "dof_bin"))
    columns += [
        ("n", "n"),
        ("round(single_point_mae * 1000, 2)", "sp_mae_meV"),
        ("round(relaxed_mae * 1000, 2)", "relaxed_mae_meV"),
        ("round(single_point_mean_signed_error * 1000, 2)", "sp_mean_signed_error_meV"),
        ("round(relaxed_mean_signed_error * 1000, 2)", "relaxed_mean_signed_error_meV"),
        ("round(single_point_frac_underpredicted, 3)", "sp_frac_underpredicted"),
        ("round(relaxed_frac_underpredicted, 3)", "relaxed_frac_underpredicted"),
        ("round(mean_relaxation_energy * 1000, 2)", "mean_relaxation_energy_meV"),
        ("round(median_relaxation_energy * 1000, 2)", "median_relaxation_energy_meV"),
        ("round(frac_symmetry_kept, 3)", "frac_symmetry_kept"),
    ]
    return _view_query(
        con, "relaxation_effect_stats", columns,
        {"model": model, "calc_kind": kind, "convention": convention,
         "grouping": "dof_bin" if by == "dof-bin" else "all"},
        "model, group_order",
        f"Ehull error = model - DFT (meV/atom), {convention}, the same materials after a single "
        f"point on the DFT structure (sp) and after {kind}; relaxation energy = relaxed - "
        "single-point model energy" + _stale_note(con, convention),
    )


def symmetry(con: duckdb.DuckDBPyConnection, model: str | None = None) -> QueryResult:
    """Space group kept / lowered / raised / changed after relaxation, per model and kind."""
    return _view_query(
        con, "symmetry_changes",
        [("model", "model"), ("calc_kind", "kind"), ("n", "n"), ("kept", "kept"),
         ("lowered", "lowered"), ("raised", "raised"), ("changed", "changed"),
         ("round(frac_kept, 3)", "frac_kept"), ("round(mean_rmsd, 4)", "mean_rmsd_A")],
        {"model": model}, "model, kind",
        "space group before (DFT structure) and after relaxation, moyopy at 0.1 A; lowered / "
        "raised = point group of lower / higher order; rmsd in internal coordinates (A)",
    )


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
