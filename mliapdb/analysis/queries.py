"""Aggregate queries over the views, built only from allow-listed pieces; user values travel
as SQL parameters, never as SQL text."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import duckdb

from mliapdb.compute.relaxation import calc_kind
from mliapdb.config import SYMPREC_RANGE
from mliapdb.errors import MliapdbError

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
    "hubbard": ("hubbard", "hubbard"),
    "model": ("", ""),
}
"""``hubbard``: GGA vs GGA+U of the material's DFT entry
(:data:`mliapdb.analysis.fair.HUBBARD_SQL`); several ``--by`` combine (:func:`by_tuple`)."""


def by_tuple(by) -> tuple[str, ...]:
    """``--by`` value(s) as a tuple of groupings: ``model`` alone means per model only,
    and is dropped next to other groupings (every query groups by model anyway)."""
    bys = (by,) if isinstance(by, str) else tuple(dict.fromkeys(by or ("model",)))
    for b in bys:
        if b not in GROUPINGS:
            raise MliapdbError(f"unknown grouping {b!r} - use one of {', '.join(GROUPINGS)}")
    rest = tuple(b for b in bys if b != "model")
    return rest or ("model",)


def _fancy(bys: tuple[str, ...], common: bool, ci: float | None,
           exclude_suspicious: bool = False) -> bool:
    """Whether a query needs the Python aggregation (:mod:`mliapdb.analysis.fair`)."""
    return (common or ci is not None or exclude_suspicious or len(bys) > 1
            or "hubbard" in bys)


SUSPICIOUS_REASONS = ("volume", "rmsd", "energy_drop")
"""Why a relaxation is suspicious (``stg_suspicious.suspicious_reason``)."""


def suspicious_settings(con: duckdb.DuckDBPyConnection) -> tuple[float, float, float]:
    """(volume change, RMSD in A, energy drop in eV/atom): the database's thresholds of a
    suspicious relaxation (``db_settings.suspicious_*``, defaults 0.2, 0.5, 0.3)."""
    row = con.execute("SELECT suspicious_volume_change, suspicious_rmsd, "
                      "suspicious_energy_drop FROM stg_stats_settings").fetchone()
    return float(row[0]), float(row[1]), float(row[2])


def with_suspicious(source: str) -> str:
    """``source`` (rows keyed like ``ehull_errors_all``) plus ``suspicious`` and
    ``suspicious_reason`` (``stg_suspicious``), as in the ``ehull_errors`` view."""
    return (f"(SELECT r.*, s.suspicious_reason IS NOT NULL AS suspicious, s.suspicious_reason "
            f"FROM {source} AS r LEFT JOIN stg_suspicious AS s ON s.dataset = r.dataset AND "
            "s.material_id = r.material_id AND s.model = r.model AND "
            "s.settings_hash = r.settings_hash AND s.calc_kind = r.calc_kind)")


def _exclude_suspicious(con: duckdb.DuckDBPyConnection, source: str, where_sql: str,
                        params: list, flag: str = "suspicious",
                        reason: str = "suspicious_reason") -> tuple[str, str, int]:
    """(``where_sql`` without the suspicious rows, the note saying how many were left out and
    why, that count) over ``source``, whose ``flag`` / ``reason`` columns flag the rows."""
    counts = ", ".join(f"count(*) FILTER (WHERE list_contains(string_split({reason}, ','), "
                       f"'{r}'))" for r in SUSPICIOUS_REASONS)
    n, *by_reason = con.execute(
        f"SELECT count(*), {counts} FROM {source} WHERE ({where_sql}) AND {flag}",
        params).fetchone()
    volume, rmsd, drop = suspicious_settings(con)
    why = ", ".join(f"{k} {c}" for k, c in zip(SUSPICIOUS_REASONS, by_reason, strict=True)
                    if c)
    note = (f"; --exclude-suspicious: {n} suspicious relaxation row(s) left out"
            + (f" ({why})" if why else "")
            + f": |volume ratio - 1| > {volume:g}, RMSD > {rmsd:g} A or relaxed - single-point "
            f"energy < -{drop:g} eV/atom (db_settings suspicious_volume_change, "
            "suspicious_rmsd, suspicious_energy_drop)")
    return f"({where_sql}) AND NOT {flag}", note, int(n)


def _all_suspicious_hint(n: int) -> str:
    return (f"every matching row is a suspicious relaxation ({n} left out by "
            "--exclude-suspicious) - leave out --exclude-suspicious, or see the "
            "stg_suspicious view")


def _group_columns(bys: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(order expression, label expression, output column) of each grouping but model."""
    out = []
    for b in bys:
        if b == "model":
            continue
        if b == "dof-bin":
            out.append(("dof_bin_order", "dof_bin", "dof_bin"))
        else:
            expr, label = GROUPINGS[b]
            out.append((expr, expr, label))
    return out


def _fair_query(
    con: duckdb.DuckDBPyConnection, source: str, where_sql: str, params: list,
    series_cols: list[str], bys: tuple[str, ...], value_exprs: list[str], stat_cells,
    ci_specs, common: bool, ci: float | None, seed: int,
) -> tuple[list[str], list[tuple], int, int, int]:
    """Fetch ``series_cols``, dataset, material_id, the group columns of ``bys`` and
    ``value_exprs`` from ``source`` and aggregate with :func:`mliapdb.analysis.fair.aggregate`:
    (group column names, rows (series..., labels..., cells...), materials in common,
    materials in any series, number of series)."""
    import numpy as np

    from mliapdb.analysis.fair import aggregate_coded, with_hubbard

    if "hubbard" in bys:
        source = with_hubbard(source)
    groups = _group_columns(bys)
    series = ", ".join(series_cols)
    order = ", ".join(f"{o} NULLS LAST, {lab} NULLS LAST" for o, lab, _ in groups)
    g_code = f"dense_rank() OVER (ORDER BY {order}) - 1" if groups else "0"
    labels = "".join(f", {lab} AS _l{i}" for i, (_, lab, _) in enumerate(groups))
    values = ", ".join(f"{v} AS _v{i}" for i, v in enumerate(value_exprs))
    sql = (f"SELECT dense_rank() OVER (ORDER BY {series}) - 1 AS _s, "
           "dense_rank() OVER (ORDER BY dataset, material_id) - 1 AS _m, "
           f"{g_code} AS _g, {series}{labels}, {values} FROM {source} WHERE {where_sql} "
           "ORDER BY _s, _g, _m")
    data = con.execute(sql, params).fetchnumpy()

    def plain(col):
        if isinstance(col, np.ma.MaskedArray):
            col = col.astype(object).filled(None) if col.dtype.kind in "OUS" else \
                col.astype(float).filled(np.nan)
        return np.asarray(col)

    cols = {k: plain(v) for k, v in data.items()}
    out, n_common, n_any = aggregate_coded(
        cols["_s"], cols["_m"], cols["_g"], [cols[f"_v{i}"] for i in range(len(value_exprs))],
        stat_cells, ci_specs, ci, seed, common)
    names = [*series_cols, *(f"_l{i}" for i in range(len(groups)))]

    def value(name, i):
        x = cols[name][i]
        return x.item() if isinstance(x, np.generic) else x

    result = [(*(value(n, first) for n in names), *cells) for _, _, first, cells in out]
    n_series = len(np.unique(cols["_s"]))
    return [name for _, _, name in groups], result, n_common, n_any, n_series


_COMMON_EMPTY = ("no material is counted by every compared model (--common; {n_any} are "
                 "counted by some) - leave out --common, or pick the models with --model")


def _fair_columns(base: list[str], ci_names: list[str], ci: float | None,
                  common: bool) -> list[str]:
    cols = list(base)
    if ci is not None:
        for name in ci_names:
            stem, unit = (name[:-4], "_meV") if name.endswith("_meV") else (name, "")
            cols += [f"{stem}_lo{unit}", f"{stem}_hi{unit}"]
    if common:
        cols.append("coverage")
    return cols


def _fair_note(common: bool, ci: float | None, seed: int, n_common: int, n_any: int,
               n_series: int) -> str:
    from mliapdb.analysis.fair import N_BOOT

    note = ""
    if common:
        note += (f"; --common: {n_common} of {n_any} materials are counted by every one of "
                 f"the {n_series} compared series (coverage = common / any, per row)")
    if ci is not None:
        note += (f"; {ci:g} intervals (_lo/_hi): percentile bootstrap over the materials of "
                 f"each row, {N_BOOT} resamples, seed {seed}")
    return note


def _mean(x, scale=1000.0):
    from mliapdb.analysis.fair import mean_or_none

    return mean_or_none(x, scale)

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
    hint: str = ""
    """When ``rows`` is empty: why, and what to do (printed on stderr)."""


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


MAX_BIN_EDGE = 100_000
"""Largest DOF bin edge accepted (the DOF of MP's largest cells are in the thousands)."""


def _valid_bins(bins: list) -> bool:
    """Strictly increasing integers from 0 to :data:`MAX_BIN_EDGE`, at least one."""
    pairs = zip(bins, bins[1:], strict=False)
    return (bool(bins) and all(isinstance(b, int) and not isinstance(b, bool) for b in bins)
            and all(0 <= b <= MAX_BIN_EDGE for b in bins) and all(a < b for a, b in pairs))


def parse_bins(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (strictly increasing integers >= 0)."""
    error = MliapdbError(f"bad --bins {text!r} - write increasing integers like 1,2,4,8,16")
    try:
        bins = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise error from exc
    if not _valid_bins(bins):
        raise error
    return bins


def check_bins(by, bins: list[int] | None) -> None:
    """``bins`` (DOF bin lower edges) apply to the ``dof-bin`` grouping only, and must be
    strictly increasing integers >= 0."""
    if bins is None:
        return
    bys = (by,) if isinstance(by, str) else tuple(by)
    if "dof-bin" not in bys:
        raise MliapdbError(f"--bins applies to --by dof-bin only (got --by "
                           f"{' --by '.join(bys)}) - add --by dof-bin or leave --bins out")
    if not _valid_bins(list(bins)):
        raise MliapdbError(f"bad --bins {','.join(map(str, bins))!r} - write increasing "
                           "integers like 1,2,4,8,16")


def check_threshold(value: float | None, option: str = "--near-hull") -> None:
    """A near-hull threshold (eV/atom) is a finite number above 0: a DFT Ehull is never
    negative, so 0 or less selects nothing, and NaN would select everything."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise MliapdbError(f"bad {option} {value:g} - give the DFT Ehull (eV/atom) below "
                           "which a material counts as near the hull: a number above 0, "
                           "e.g. 0.05")


def check_symprec(value: float | None, option: str = "--symprec") -> None:
    """A symmetry tolerance (Angstrom) within :data:`mliapdb.config.SYMPREC_RANGE`."""
    low, high = SYMPREC_RANGE
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise MliapdbError(f"bad {option} {value:g} - give a symmetry tolerance from {low:g} "
                           f"to {high:g} A, e.g. 0.1")


def check_query_inputs(
    by: str = "dof", bins: list[int] | None = None, near_hull: float | None = None,
    symprec: float | None = None, near_hull_option: str = "--near-hull",
) -> None:
    """The checks of :func:`ehull_mae` that need no database (the CLI runs them before it
    opens one)."""
    check_bins(by, bins)
    check_threshold(near_hull, near_hull_option)
    check_symprec(symprec)


def _listing(items: list[str], limit: int = 5) -> str:
    """The first ``limit`` items, comma-separated, and how many more."""
    shown = ", ".join(items[:limit]) or "none"
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _kind_option(calc_kind: str) -> str:
    """``single_point`` -> ``single-point`` (the ``--kind`` value)."""
    return calc_kind.replace("_", "-")


def check_filters(
    con: duckdb.DuckDBPyConnection, dataset: str | None = None,
    settings_hash: str | None = None, symprec: float | None = None,
    symmetry_method: str | None = None,
) -> None:
    """Refuse a ``--dataset``, ``--settings`` or ``--symprec`` / ``--symmetry-method`` the
    database holds nothing of, naming the stored ones (``symprec`` and ``symmetry_method``:
    both given, as the query will use them)."""
    if dataset is not None:
        stored = [r[0] for r in con.execute(
            "SELECT DISTINCT dataset FROM mp_materials ORDER BY 1").fetchall()]
        if dataset not in stored:
            raise MliapdbError(f"no dataset {dataset!r} in the database (stored: "
                               f"{_listing(stored)}) - pick one with --dataset NAME")
    if settings_hash is not None:
        stored = con.execute(
            "SELECT settings_hash, string_agg(DISTINCT model || ' ' || "
            "replace(calc_kind, '_', '-'), ', ' ORDER BY model || ' ' || "
            "replace(calc_kind, '_', '-')) FROM calculations GROUP BY 1 ORDER BY 1").fetchall()
        if settings_hash not in {r[0] for r in stored}:
            raise MliapdbError(
                f"no calculations with settings hash {settings_hash!r} (stored: "
                f"{_listing([f'{h} ({what})' for h, what in stored])}) - pick one with "
                "--settings HASH, or leave it out")
    if symprec is not None and symmetry_method is not None:
        (n,) = con.execute("SELECT count(*) FROM symmetry_analyses WHERE symprec = ? AND "
                           "method = ?", [symprec, symmetry_method]).fetchone()
        if not n:
            stored = con.execute("SELECT DISTINCT symprec, method FROM symmetry_analyses "
                                 "ORDER BY 2, 1").fetchall()
            raise MliapdbError(
                f"no symmetry analyses at symprec {symprec:g} A ({symmetry_method}) (stored: "
                f"{_listing([f'{p:g} A ({m})' for p, m in stored])}) - pick one with "
                "--symprec/--symmetry-method, or store it with 'mliapdb ingest entries FILE "
                f"--symprec {symprec:g} --symmetry-method {symmetry_method}'")


def stale_hint(fresh, calc_kinds: tuple[str, ...], model: str | None = None,
                dataset: str | None = None, settings_hash: str | None = None) -> str | None:
    """The hint when result sets the query would read have stale stored error rows (their
    calculations changed after the rows were stored: an interrupted ``ingest relax``, or rows
    written by hand): their rows are left out until ``ingest hulls`` stores them again."""
    stale = [k for k in fresh.stale if k.calc_kind in calc_kinds
             and all(v is None or getattr(k, f) == v for f, v in
                     (("model", model), ("dataset", dataset), ("settings_hash", settings_hash)))]
    if not stale:
        return None
    names = [f"{k.model} {_kind_option(k.calc_kind)} {k.settings_hash[:8]} ({k.dataset})"
             for k in stale]
    return (f"the stored error rows of {len(stale)} result set(s) ({_listing(names, 3)}) are "
            "out of date, so they are left out: the calculations changed after the rows were "
            "stored (an interrupted 'ingest relax'?) - run 'mliapdb ingest hulls' to store "
            "them again")


def explain_empty(
    con: duckdb.DuckDBPyConnection,
    kind: str = "relax",
    convention: str = "dft-hull",
    model: str | None = None,
    dataset: str | None = None,
    settings_hash: str | None = None,
    symprec: float | None = None,
    symmetry_method: str | None = None,
    hull_coverage: str | None = None,
    near_hull: float | None = None,
    near_hull_option: str = "--near-hull",
    coverage_option: bool = True,
    fresh=None,
) -> str | None:
    """Why a query over the stored error rows with these filters finds nothing, and what to
    do, in one line; ``None`` when no specific reason is found. Checks, in order: usable
    calculations, stale stored rows, rows at the symmetry tolerance, rows of the convention,
    complete chemical systems (model-hull conventions; ``coverage_option``: suggest
    ``--hull-coverage filled`` where it helps), the near-hull threshold."""
    from mliapdb.analysis.error_rows import freshness, stored_rows_sql

    where, params = ["calc_kind = ?"], [kind]
    for column, value in (("model", model), ("dataset", dataset),
                          ("settings_hash", settings_hash)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    cond = " AND ".join(where)
    option = _kind_option(kind)
    what = (f"{option} calculations" + (f" of model '{model}'" if model else "")
            + (f" with settings {settings_hash}" if settings_hash else "")
            + (f" in dataset '{dataset}'" if dataset else ""))
    n_all, n_ok = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM calculations "
        f"WHERE {cond}", params).fetchone()
    relax = f"'mliapdb ingest relax --kind {option} --model {model or 'MODEL'}'"
    if n_all and not n_ok:
        return (f"none of the {n_all} {what} ended ok (failed or not converged) - see "
                "'mliapdb query calculations' and the calculation_failures view for why, "
                f"then rerun them with {relax}")
    if not n_ok and not con.execute("SELECT count(*) FROM calculations").fetchone()[0]:
        return "no usable calculations match - run 'mliapdb ingest relax --model MODEL' first"
    if not n_ok:
        have = con.execute(
            "SELECT calc_kind, count(*) FROM calculations WHERE status = 'ok'"
            + (" AND model = ?" if model else "") + " GROUP BY 1 ORDER BY 1",
            [model] if model else []).fetchall()
        stored = _listing([f"{_kind_option(k)} {n}" for k, n in have])
        return f"no usable {what} (usable stored: {stored}) - run {relax}"
    fresh = fresh or freshness(con)
    if (stale := stale_hint(fresh, (kind,), model, dataset, settings_hash)):
        return stale
    if symprec is None or symmetry_method is None:
        d_symprec, d_method = default_symmetry(con)
        symprec = d_symprec if symprec is None else symprec
        symmetry_method = symmetry_method or d_method
    source = stored_rows_sql(fresh.fresh_build_ids)

    def count(extra: str, extra_params: list) -> int:
        return con.execute(f"SELECT count(*) FROM {source} WHERE {cond} AND {extra}",
                           params + extra_params).fetchone()[0]

    at = "symprec = ? AND symmetry_method = ? AND convention = ?"
    if not count(at, [symprec, symmetry_method, "dft-hull"]):
        if count("convention = 'dft-hull'", []):
            return (f"the materials of the {n_ok} usable {what} have no symmetry analysis at "
                    f"symprec {symprec:g} A ({symmetry_method}) - store it with 'mliapdb "
                    f"ingest entries FILE --symprec {symprec:g} --symmetry-method "
                    f"{symmetry_method}'")
        return (f"the materials of the {n_ok} usable {what} have no DFT Ehull (an element "
                "without an elemental entry in the dataset?) or no symmetry analysis - "
                "ingest their elemental entries with 'mliapdb ingest entries FILE'")
    counted = "TRUE"
    if convention != "dft-hull":
        if not count(at, [symprec, symmetry_method, convention]):
            from mliapdb.analysis.model_hull import stale_keys

            missing = [k for k, _ in stale_keys(con)[0] if k.calc_kind == kind and all(
                v is None or getattr(k, f) == v for f, v in
                (("model", model), ("dataset", dataset), ("settings_hash", settings_hash)))]
            if missing:
                names = [f"{k.model} {option} {k.settings_hash[:8]}" for k in missing]
                return (f"the model hull of {len(missing)} result set(s) ({_listing(names, 3)}) "
                        "is missing or out of date, so it is left out - run 'mliapdb ingest "
                        "hulls'")
            if convention == "model-hull-dft-refs":
                return (f"model-hull-dft-refs has no rows for elemental materials (the DFT "
                        f"elemental references are their hull) and every material of the "
                        f"{n_ok} usable {what} is an element - relax compounds too, or use "
                        "--convention model-hull")
            return None
        hull_coverage = hull_coverage or hull_coverage_setting(con)
        counted = HULL_COVERAGES[hull_coverage]
        if not count(f"{at} AND {counted}", [symprec, symmetry_method, convention]):
            return _incomplete_hint(con, source, cond, params, kind, convention, symprec,
                                    symmetry_method, hull_coverage, coverage_option)
    if near_hull is not None:
        (lowest,) = con.execute(
            f"SELECT min(dft_e_above_hull) FROM {source} WHERE {cond} AND {at} AND {counted}",
            params + [symprec, symmetry_method, convention]).fetchone()
        if lowest is not None and lowest >= near_hull:
            return (f"no material with usable results has a DFT Ehull below "
                    f"{near_hull * 1000:g} meV/atom (the lowest is {lowest * 1000:g} "
                    f"meV/atom) - raise {near_hull_option}")
    return None


def _incomplete_hint(
    con: duckdb.DuckDBPyConnection, source: str, cond: str, params: list, kind: str,
    convention: str, symprec: float, symmetry_method: str, hull_coverage: str,
    coverage_option: bool,
) -> str:
    """No counted model-hull row: name the incomplete chemical systems (first three, with
    how many of their entries lack a model energy, and the count) and how to complete them
    (``--hull-coverage filled`` only where fill-ins complete a named system)."""
    from mliapdb.analysis.model_hull import FAR_ABOVE_HULL

    counted = HULL_COVERAGES[hull_coverage]
    systems = con.execute(
        f"SELECT dataset, model, settings_hash, chemsys, count(*) AS n FROM {source} "
        f"WHERE {cond} AND symprec = ? AND symmetry_method = ? AND convention = ? "
        f"AND NOT {counted} GROUP BY ALL ORDER BY n DESC, chemsys, model, settings_hash",
        params + [symprec, symmetry_method, convention]).fetchall()
    several = len({(r[1], r[2]) for r in systems}) > 1
    items, fill_completes = [], False
    for ds, model, settings, chemsys, _n in systems[:3]:
        n_entries, n_missing, n_fill = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE e.e_per_atom_model IS NULL), "
            "count(*) FILTER (WHERE e.e_per_atom_model IS NULL AND (f.e_per_atom_fill IS NOT "
            "NULL OR h.e_above_hull >= ?)) "
            "FROM dft_entries d JOIN mp_materials m USING (dataset, material_id) "
            "LEFT JOIN dft_hull h USING (dataset, material_id) "
            "LEFT JOIN stg_model_energies e ON e.dataset = d.dataset AND "
            "e.material_id = d.material_id AND e.model = ? AND e.settings_hash = ? AND "
            "e.calc_kind = ? AND e.e_per_atom_model IS NOT NULL "
            "LEFT JOIN stg_model_fill_energies f ON f.dataset = d.dataset AND "
            "f.material_id = d.material_id AND f.model = ? AND f.settings_hash = ? AND "
            "f.calc_kind = ? "
            "WHERE d.dataset = ? AND d.compat_status = 'ok' "
            "AND list_has_all(string_split(?, '-'), string_split(m.chemsys, '-'))"
            + (" AND m.nelements > 1" if convention == "model-hull-dft-refs" else ""),
            [FAR_ABOVE_HULL, model, settings, kind, model, settings, kind, ds, chemsys],
        ).fetchone()
        fill_completes |= n_missing == n_fill
        lacking = n_missing - n_fill if hull_coverage == "filled" else n_missing
        items.append(f"{chemsys} ({f'{model}: ' if several else ''}{lacking} of {n_entries} "
                     "entries without a usable model energy)")
    more = f" and {len(systems) - 3} more" if len(systems) > 3 else ""
    model, chemsys = systems[0][1], systems[0][3]
    need = ("a usable model energy (or a fill-in)" if hull_coverage == "filled"
            else "a usable model energy")
    fill = (", count fill-ins with --hull-coverage filled"
            if coverage_option and hull_coverage == "complete" and fill_completes else "")
    return (f"no material with usable results lies in a complete chemical system under "
            f"{convention} (every entry of every subsystem needs {need}): {len(systems)} "
            f"incomplete system(s): {', '.join(items)}{more} - relax the missing materials of "
            f"those systems (e.g. 'mliapdb ingest relax --model {model} --kind "
            f"{_kind_option(kind)} --chemsys {chemsys}'){fill}, or use --convention dft-hull")


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
    near_hull_option: str = "--near-hull",
    common: bool = False,
    ci: float | None = None,
    seed: int | None = None,
    exclude_suspicious: bool = False,
) -> QueryResult:
    """Count, MAE, RMSE, mean and median signed error (meV/atom) and fraction underpredicted
    of the model's Ehull per model and ``by`` group, over calculations of ``kind`` under hull
    ``convention`` (model-hull conventions: materials whose chemical system is complete);
    ``near_hull`` (eV/atom) keeps materials with DFT Ehull below it; ``bins`` are the lower
    edges of the DOF bins (default: the database's); ``hull_coverage`` which model-hull rows
    count (:data:`HULL_COVERAGES`; default: the database's). Inputs that cannot apply are
    refused (:func:`check_query_inputs`, :func:`check_filters`); an empty result carries a
    ``hint`` (:func:`explain_empty`); ``near_hull_option`` names the threshold in messages;
    ``exclude_suspicious`` leaves out suspicious relaxations (``stg_suspicious``) and says
    how many."""
    kind = calc_kind(kind)
    from mliapdb.analysis.fair import DEFAULT_SEED, check_level

    bys = by_tuple(by)
    check_level(ci)
    seed = DEFAULT_SEED if seed is None else seed
    fancy = _fancy(bys, common, ci, exclude_suspicious)
    by = bys[0]
    if convention not in CONVENTIONS:
        raise MliapdbError(
            f"unknown convention {convention!r} - use one of {', '.join(CONVENTIONS)}"
        )
    check_query_inputs(bys, bins, near_hull, symprec, near_hull_option)
    symmetry_given = symprec is not None or symmetry_method is not None
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
    check_filters(con, dataset, settings_hash, *((symprec, symmetry_method) if symmetry_given
                                                 else (None, None)))
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
    from mliapdb.analysis.error_rows import freshness, stored_rows_sql

    fresh = freshness(con)  # one fingerprint pass: the stored rows that may be served
    expr, label = GROUPINGS[by]
    source, order_by, group_by = stored_rows_sql(fresh.fresh_build_ids), label, "model, " + label
    if "dof-bin" in bys:
        bin_label, bin_order = _dof_bin_sql(bins)
        source = (f"(SELECT * REPLACE ({bin_label} AS dof_bin, {bin_order} AS dof_bin_order) "
                  f"FROM {source})")
        expr, order_by, group_by = "dof_bin", "dof_bin_order", "model, dof_bin, dof_bin_order"
    group_select = f"{expr} AS {label}, " if label else ""
    if not label:
        group_by = "model"
    note, n_any, n_suspicious = "", 0, 0
    if exclude_suspicious:
        source = with_suspicious(source)
        where_sql, suspicious_note, n_suspicious = _exclude_suspicious(
            con, source, where_sql, params)
    if fancy:
        import numpy as np

        def cells(v):
            e = v[0]
            return [len(e), _mean(np.abs(e)), float(np.sqrt(np.mean(e * e))) * 1000,
                    _mean(e), float(np.median(e)) * 1000, _mean(e < 0, 1.0)]

        specs = [(lambda v: np.abs(v[0]), 1000.0), (lambda v: v[0], 1000.0),
                 (lambda v: v[0] < 0, 1.0)]
        names, rows, n_common, n_any, n_series = _fair_query(
            con, source, where_sql, params, ["model"], bys, ["e_above_hull_error"], cells,
            specs, common, ci, seed)
        columns = _fair_columns(
            ["model", *names, "n", "mae_meV", "rmse_meV", "mean_signed_error_meV",
             "median_signed_error_meV", "frac_underpredicted"],
            ["mae_meV", "mean_signed_error_meV", "frac_underpredicted"], ci, common)
        note = _fair_note(common, ci, seed, n_common, n_any, n_series)
        if exclude_suspicious:
            note += suspicious_note
    sql = f"""
        SELECT model, {group_select}
            count(*) AS n,
            avg(abs(e_above_hull_error)) * 1000 AS mae_meV,
            sqrt(avg(e_above_hull_error * e_above_hull_error)) * 1000 AS rmse_meV,
            avg(e_above_hull_error) * 1000 AS mean_signed_error_meV,
            median(e_above_hull_error) * 1000 AS median_signed_error_meV,
            avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END)
                AS frac_underpredicted
        FROM {source}
        WHERE {where_sql}
        GROUP BY {group_by}
        ORDER BY model{", " + order_by if label else ""}
    """
    if not fancy:
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
        + (f"; DOF bins from {','.join(map(str, bins))}" if "dof-bin" in bys else "")
        + ("; hubbard: GGA or GGA+U DFT entry (dft_entries.is_hubbard)" if "hubbard" in bys
           else "")
        + note
        + _stale_note(con, convention, len(fresh.stale))
    )
    hint = "" if rows else (
        (_COMMON_EMPTY.format(n_any=n_any) if fancy and common and n_any else None)
        or (_all_suspicious_hint(n_suspicious) if n_suspicious else None)
        or explain_empty(
            con, kind, convention, model, dataset, settings_hash, symprec, symmetry_method,
            hull_coverage, near_hull, near_hull_option, fresh=fresh,
        ) or "no usable results match these filters - see 'mliapdb query calculations'")
    return QueryResult(columns, rows, description, hint)


def near_hull(
    con: duckdb.DuckDBPyConnection, threshold: float | None = None, **kwargs
) -> QueryResult:
    """:func:`ehull_mae` over the materials with DFT Ehull below ``threshold`` (eV/atom;
    default: the database's ``near_hull_threshold``)."""
    check_threshold(threshold, "--threshold")
    if threshold is None:
        threshold = stats_settings(con)[0]
    return ehull_mae(con, near_hull=threshold, near_hull_option="--threshold", **kwargs)


def _stale_note(
    con: duckdb.DuckDBPyConnection, convention: str, n_stale_rows: int | None = None
) -> str:
    """What the views leave out now: stale model hulls (model-hull conventions) and stale
    stored error rows (every convention)."""
    from mliapdb.analysis.error_rows import freshness
    from mliapdb.analysis.model_hull import n_stale

    notes = []
    if convention != "dft-hull" and (stale := n_stale(con)):
        notes.append(f"{stale} model hull(s) missing or stale")
    if n_stale_rows is None:
        n_stale_rows = len(freshness(con).stale)
    if n_stale_rows:
        notes.append(f"{n_stale_rows} result set(s) changed since their error rows were stored")
    no_u = _no_u_note(con)
    if not notes:
        return no_u
    return (f"; {' and '.join(notes)}, their rows are left out - run 'mliapdb ingest hulls'"
            + no_u)


def _no_u_note(con: duckdb.DuckDBPyConnection) -> str:
    """The models trained without +U (``models.trained_with_u`` false) that have results: the
    views compare them only with DFT entries computed without U (``""`` if there are none)."""
    names = [row[0] for row in con.execute(
        "SELECT name FROM models WHERE trained_with_u IS FALSE AND name IN "
        "(SELECT DISTINCT model FROM calculations) ORDER BY name"
    ).fetchall()]
    if not names:
        return ""
    return (f"; {', '.join(names)} trained without +U: compared on GGA entries only (GGA+U "
            "entries left out)")


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


_NO_MATCH = "no usable results match these filters - see 'mliapdb query calculations'"


def _with_hint(con: duckdb.DuckDBPyConnection, result: QueryResult, **kwargs) -> QueryResult:
    """``result``, with the :func:`explain_empty` hint for ``kwargs`` when it has no rows."""
    if result.rows or result.hint:
        return result
    return replace(result, hint=explain_empty(con, **kwargs) or _NO_MATCH)


def _view_fair(
    con: duckdb.DuckDBPyConnection, source: str, filters: dict[str, object], extra: str,
    series_cols: list[str], series_out: int, by, value_exprs: list[str], stat_cells,
    base_columns: list[str], ci_specs, ci_names: list[str], common: bool,
    ci: float | None, seed: int | None, description: str, exclude_suspicious: bool = False,
) -> QueryResult:
    """A per-model view query computed by :func:`_fair_query` over the rows of ``source``
    (``filters``: column -> value, None = no filter; ``extra``: a fixed SQL condition);
    ``series_out``: how many of ``series_cols`` are output columns; ``exclude_suspicious``:
    leave out the rows ``source`` flags ``suspicious`` and say how many."""
    from mliapdb.analysis.fair import DEFAULT_SEED, check_level

    check_level(ci)
    seed = DEFAULT_SEED if seed is None else seed
    bys = by_tuple(by)
    where, params = [extra], []
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    where_sql, suspicious_note, n_suspicious = " AND ".join(where), "", 0
    if exclude_suspicious:
        where_sql, suspicious_note, n_suspicious = _exclude_suspicious(
            con, source, where_sql, params)
    names, rows, n_common, n_any, n_series = _fair_query(
        con, source, where_sql, params, series_cols, bys, value_exprs, stat_cells,
        ci_specs if ci is not None else (), common, ci, seed)
    drop = len(series_cols) - series_out
    rows = [r[:series_out] + r[series_out + drop:] for r in rows] if drop else rows
    columns = _fair_columns([*base_columns[:series_out], *names, *base_columns[series_out:]],
                            ci_names, ci, common)
    note = ("; hubbard: GGA or GGA+U DFT entry (dft_entries.is_hubbard)" if "hubbard" in bys
            else "")
    hint = _COMMON_EMPTY.format(n_any=n_any) if common and n_any and not rows else ""
    if not rows and not hint and n_suspicious:
        hint = _all_suspicious_hint(n_suspicious)
    return QueryResult(columns, rows, description + note
                       + _fair_note(common, ci, seed, n_common, n_any, n_series)
                       + suspicious_note, hint)


def energy_error(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull", by="model", common: bool = False,
    ci: float | None = None, seed: int | None = None, exclude_suspicious: bool = False,
) -> QueryResult:
    """MAE, mean signed error (meV/atom) and fraction underpredicted of the total and the
    formation energy per model (and ``by`` group; ``common``, ``ci``, ``seed``: see
    :mod:`mliapdb.analysis.fair`; ``exclude_suspicious``: without suspicious relaxations)."""
    kind = calc_kind(kind)
    if _fancy(by_tuple(by), common, ci, exclude_suspicious):
        import numpy as np

        def cells(v):
            e, f = v
            return [len(e), _mean(np.abs(e)), _mean(e), _mean(e < 0, 1.0),
                    _mean(np.abs(f)), _mean(f), _mean(f < 0, 1.0)]

        specs = [(lambda v: np.abs(v[0]), 1000.0), (lambda v: v[0], 1000.0),
                 (lambda v: v[0] < 0, 1.0), (lambda v: np.abs(v[1]), 1000.0),
                 (lambda v: v[1], 1000.0), (lambda v: v[1] < 0, 1.0)]
        names = ["e_mae_meV", "e_mean_signed_error_meV", "e_frac_underpredicted",
                 "e_form_mae_meV", "e_form_mean_signed_error_meV",
                 "e_form_frac_underpredicted"]
        return _with_hint(con, _view_fair(
            con, "ehull_errors", {"model": model, "calc_kind": kind, "convention": convention},
            "hull_counted", ["model", "settings_hash"], 1, by, ["e_error", "e_form_error"],
            cells, ["model", "n", *names], specs, names, common, ci, seed,
            f"total and formation energy error = model - DFT (meV/atom), MP2020-corrected, "
            f"{kind}, {convention} formation energies" + _stale_note(con, convention),
            exclude_suspicious),
        kind=kind, convention=convention, model=model, coverage_option=False)
    return _with_hint(con, _view_query(
        con, "energy_error_stats",
        [("model", "model"), ("n", "n"),
         ("e_mae * 1000", "e_mae_meV"),
         ("e_mean_signed_error * 1000", "e_mean_signed_error_meV"),
         ("e_frac_underpredicted", "e_frac_underpredicted"),
         ("e_form_mae * 1000", "e_form_mae_meV"),
         ("e_form_mean_signed_error * 1000", "e_form_mean_signed_error_meV"),
         ("e_form_frac_underpredicted", "e_form_frac_underpredicted")],
        {"model": model, "calc_kind": kind, "convention": convention}, "model",
        f"total and formation energy error = model - DFT (meV/atom), MP2020-corrected, {kind}, "
        f"{convention} formation energies" + _stale_note(con, convention),
    ), kind=kind, convention=convention, model=model, coverage_option=False)


def _classification_cells(v):
    import numpy as np

    model_stable, dft_stable = (np.asarray(x, dtype=bool) for x in v)
    n = len(model_stable)
    tp = int(np.sum(model_stable & dft_stable))
    fp = int(np.sum(model_stable & ~dft_stable))
    tn = int(np.sum(~model_stable & ~dft_stable))
    fn = int(np.sum(~model_stable & dft_stable))

    def ratio(a, b):
        return a / b if b else None

    precision = tp / (tp + fp) if tp + fp else None
    prevalence = (tp + fn) / n if n else None
    daf = (precision / prevalence if precision is not None and prevalence
           else None)
    return [n, tp, fp, tn, fn, ratio(tp, tp + fp), ratio(tp, tp + fn),
            ratio(2 * tp, 2 * tp + fp + fn), ratio(tp + tn, n), ratio(tp + fn, n), daf]


def stability(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull", by="model", common: bool = False,
    exclude_suspicious: bool = False,
) -> QueryResult:
    """Stability classification per model (and ``by`` group) at 0 eV/atom: TP/FP/TN/FN,
    precision, recall, F1, accuracy, DAF (``common``: see :mod:`mliapdb.analysis.fair`;
    ``exclude_suspicious``: without suspicious relaxations)."""
    kind = calc_kind(kind)
    if _fancy(by_tuple(by), common, None, exclude_suspicious):
        return _with_hint(con, _view_fair(
            con, "ehull_errors", {"model": model, "calc_kind": kind, "convention": convention},
            "hull_counted", ["model", "settings_hash"], 1, by,
            ["model_stable", "dft_stable"], _classification_cells,
            ["model", "n", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "accuracy",
             "prevalence", "daf"], (), [], common, None, None,
            f"stable = Ehull <= 0 eV/atom (DFT: truth, model: prediction), {kind}, "
            f"{convention}; DAF = precision / prevalence" + _stale_note(con, convention),
            exclude_suspicious),
        kind=kind, convention=convention, model=model, coverage_option=False)
    return _with_hint(con, _view_query(
        con, "stability_classification",
        [("model", "model"), ("n", "n"), ("tp", "tp"), ("fp", "fp"), ("tn", "tn"),
         ("fn", "fn"), ("precision", "precision"), ("recall", "recall"),
         ("f1", "f1"), ("accuracy", "accuracy"),
         ("prevalence", "prevalence"), ("daf", "daf")],
        {"model": model, "calc_kind": kind, "convention": convention}, "model",
        f"stable = Ehull <= 0 eV/atom (DFT: truth, model: prediction), {kind}, {convention}; "
        "DAF = precision / prevalence" + _stale_note(con, convention),
    ), kind=kind, convention=convention, model=model, coverage_option=False)


_RELAX_PAIRS = """(SELECT rx.* EXCLUDE (e_above_hull_error), sp.settings_hash AS sp_settings_hash,
    sp.e_above_hull_error AS sp_error, rx.e_above_hull_error AS rx_error,
    rx.model_e_per_atom - sp.model_e_per_atom AS relaxation_energy,
    CASE WHEN rx.symmetry_change = 'kept' THEN 1.0 ELSE 0.0 END AS symmetry_kept
    FROM ehull_errors AS rx JOIN ehull_errors AS sp
    ON sp.dataset = rx.dataset AND sp.material_id = rx.material_id AND sp.model = rx.model
    AND sp.convention = rx.convention AND sp.calc_kind = 'single_point' AND sp.hull_counted
    WHERE rx.calc_kind <> 'single_point' AND rx.hull_counted)"""
"""Counted rows of a relaxation paired with the same material's counted single point."""


def _relax_effect_fair(con, model, kind, convention, by, common, ci, seed, description,
                       exclude_suspicious=False):
    import numpy as np

    def cells(v):
        sp, rx, er, kept = v
        return [len(sp), _mean(np.abs(sp)), _mean(np.abs(rx)), _mean(sp), _mean(rx),
                _mean(sp < 0, 1.0), _mean(rx < 0, 1.0), _mean(er),
                float(np.median(er)) * 1000, _mean(kept, 1.0)]

    specs = [(lambda v: np.abs(v[0]), 1000.0), (lambda v: np.abs(v[1]), 1000.0),
             (lambda v: v[0], 1000.0), (lambda v: v[1], 1000.0),
             (lambda v: v[0] < 0, 1.0), (lambda v: v[1] < 0, 1.0)]
    names = ["sp_mae_meV", "relaxed_mae_meV", "sp_mean_signed_error_meV",
             "relaxed_mean_signed_error_meV", "sp_frac_underpredicted",
             "relaxed_frac_underpredicted"]
    return _view_fair(
        con, _RELAX_PAIRS, {"model": model, "calc_kind": kind, "convention": convention},
        "TRUE", ["model", "settings_hash", "sp_settings_hash"], 1, by,
        ["sp_error", "rx_error", "relaxation_energy", "symmetry_kept"], cells,
        ["model", "n", *names, "mean_relaxation_energy_meV", "median_relaxation_energy_meV",
         "frac_symmetry_kept"], specs, names, common, ci, seed, description,
        exclude_suspicious)


def relaxation_effect(
    con: duckdb.DuckDBPyConnection, model: str | None = None, kind: str = "relax",
    convention: str = "dft-hull", by="model", common: bool = False,
    ci: float | None = None, seed: int | None = None, exclude_suspicious: bool = False,
) -> QueryResult:
    """The same materials after a single point on the DFT structure and after a relaxation of
    ``kind``: Ehull MAE, mean signed error and fraction underpredicted of both, and the
    relaxation energy (meV/atom), per model (``by="model"``) or per model and DOF bin
    (``by="dof-bin"``)."""
    kind = calc_kind(kind)
    if kind == "single_point":
        raise MliapdbError("--kind must be a relaxation (relax or relax-fixsym): the effect "
                           "of relaxing is measured against the single points")
    bys = by_tuple(by)
    fancy = (_fancy(bys, common, ci, exclude_suspicious) or len(bys) > 1
             or bys[0] not in ("model", "dof-bin"))
    by = bys[0]
    columns = [("model", "model")]
    if by == "dof-bin":
        columns.append(("group_value", "dof_bin"))
    columns += [
        ("n", "n"),
        ("single_point_mae * 1000", "sp_mae_meV"),
        ("relaxed_mae * 1000", "relaxed_mae_meV"),
        ("single_point_mean_signed_error * 1000", "sp_mean_signed_error_meV"),
        ("relaxed_mean_signed_error * 1000", "relaxed_mean_signed_error_meV"),
        ("single_point_frac_underpredicted", "sp_frac_underpredicted"),
        ("relaxed_frac_underpredicted", "relaxed_frac_underpredicted"),
        ("mean_relaxation_energy * 1000", "mean_relaxation_energy_meV"),
        ("median_relaxation_energy * 1000", "median_relaxation_energy_meV"),
        ("frac_symmetry_kept", "frac_symmetry_kept"),
    ]
    description = (
        f"Ehull error = model - DFT (meV/atom), {convention}, the same materials after a single "
        f"point on the DFT structure (sp) and after {kind}; relaxation energy = relaxed - "
        "single-point model energy" + _stale_note(con, convention))
    if fancy:
        result = _relax_effect_fair(con, model, kind, convention, bys, common, ci, seed,
                                    description, exclude_suspicious)
    else:
        result = _view_query(
            con, "relaxation_effect_stats", columns,
            {"model": model, "calc_kind": kind, "convention": convention,
             "grouping": "dof_bin" if by == "dof-bin" else "all"},
            "model, group_order", description,
        )
    if result.rows or result.hint:
        return result
    args = {"convention": convention, "model": model, "coverage_option": False}
    hint = (explain_empty(con, kind, **args) or explain_empty(con, "single_point", **args)
            or f"no material has usable results of both kinds (single-point and "
            f"{_kind_option(kind)}){f' of model {model!r}' if model else ''} - relax the same "
            f"materials both ways ('mliapdb ingest relax --kind single-point' and "
            f"'--kind {_kind_option(kind)}')")
    return replace(result, hint=hint)


def _symmetry_cells(v):
    import numpy as np

    change, rmsd = v
    counts = [int(np.sum(change == c)) for c in ("kept", "lowered", "raised", "changed")]
    return [len(change), *counts, counts[0] / len(change),
            float(np.nanmean(rmsd)) if np.isfinite(rmsd).any() else None]


def symmetry(con: duckdb.DuckDBPyConnection, model: str | None = None, by="model",
             common: bool = False, exclude_suspicious: bool = False) -> QueryResult:
    """Space group kept / lowered / raised / changed after relaxation, per model and kind
    (and ``by`` group; ``common``: materials every model x kind shown has;
    ``exclude_suspicious``: without suspicious relaxations)."""
    description = (
        "space group before (DFT structure) and after relaxation, moyopy at 0.1 A; lowered / "
        "raised = point group of lower / higher order; rmsd in internal coordinates (A)")
    if _fancy(by_tuple(by), common, None, exclude_suspicious):
        result = _view_fair(
            con, "ehull_errors", {"model": model},
            "convention = 'dft-hull' AND calc_kind <> 'single_point' AND symmetry_change IS "
            "NOT NULL", ["model", "calc_kind", "settings_hash"], 2, by,
            ["symmetry_change", "coalesce(rmsd, 'NaN'::DOUBLE)"], _symmetry_cells,
            ["model", "kind", "n", "kept", "lowered", "raised", "changed", "frac_kept",
             "mean_rmsd_A"], (), [], common, None, None, description, exclude_suspicious)
    else:
        result = _view_query(
            con, "symmetry_changes",
            [("model", "model"), ("calc_kind", "kind"), ("n", "n"), ("kept", "kept"),
             ("lowered", "lowered"), ("raised", "raised"), ("changed", "changed"),
             ("frac_kept", "frac_kept"), ("mean_rmsd", "mean_rmsd_A")],
            {"model": model}, "model, kind", description,
        )
    if result.rows or result.hint:
        return result
    from mliapdb.analysis.error_rows import freshness

    relaxations = ("relax", "relax_fixsym")
    hint = stale_hint(freshness(con), relaxations, model) or (
        f"no usable relaxations{f' of model {model!r}' if model else ''} (single points "
        "keep the structure) - run 'mliapdb ingest relax --kind relax --model "
        f"{model or 'MODEL'}'")
    return replace(result, hint=hint)


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
            avg(n_steps) FILTER (WHERE status = 'ok') AS mean_steps,
            avg(wall_time_s) FILTER (WHERE status = 'ok') AS mean_wall_s
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
