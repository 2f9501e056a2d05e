"""Benchmark every statistics query of the CLI on a synthetic MP-scale database.

Workload: the database of ``bench/synthetic_db.py`` (150,000 materials x 9 models by default,
generated first when ``--db`` does not exist), opened read-only with
``mliapdb.store.database.connect``. Each query runs once as a warm-up, then ``--repeat``
times; the table gives the rows it returns and the median wall-clock seconds (fetch of every
row included), marked against the ``--target`` (0.5 s by default).

Queries: what ``mliapdb query`` runs (``mliapdb.analysis.queries``: ehull-mae by every grouping and
hull convention, near-hull, energy-error, stability, symmetry, calculations), a full read of
each statistics view (what ``mliapdb report`` reads), the model-hull staleness check, and
two alternatives measured in the same run: pandas (fetch the rows of ``ehull_errors`` into a
DataFrame, then groupby) and DuckDB over a materialised copy of ``ehull_errors`` (a TEMP table).
With ``--rebuild-hull`` it also times :func:`mliapdb.analysis.model_hull.rebuild_model_hulls`
for one model x kind and for all of them, on a copy of the database.

    python bench/bench_stats.py [--db PATH] [--materials N] [--models M] [--repeat R]
        [--target S] [--rebuild-hull] [--report]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402

from mliapdb.analysis import queries  # noqa: E402
from mliapdb.store.database import connect  # noqa: E402

DEFAULT_DB = Path(__file__).resolve().parent / ".synthetic" / "mliapdb-150k.duckdb"


@dataclass
class Timing:
    """One benchmarked query: rows returned, run times (seconds)."""

    name: str
    rows: int
    times: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _time(fn: Callable[[], int], repeat: int, warmup: bool = True) -> tuple[int, list[float]]:
    """Run ``fn`` (returning a row count) once to warm up, then ``repeat`` times."""
    if warmup:
        fn()
    times, rows = [], 0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t0)
    return rows, times


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None):
    return lambda: len(con.execute(sql, params or []).fetchall())


def cli_queries(
    con: duckdb.DuckDBPyConnection, conventions: list[str], threshold: float
) -> list[tuple[str, Callable[[], int]]]:
    """The ``mliapdb query`` commands, as (label, callable returning the row count)."""
    out: list[tuple[str, Callable[[], int]]] = []
    for conv in conventions:
        tag = "" if conv == "dft-hull" else f" --convention {conv}"
        for by in queries.GROUPINGS:
            out.append((
                f"query ehull-mae --by {by}{tag}",
                lambda by=by, conv=conv: len(queries.ehull_mae(con, by=by, convention=conv).rows),
            ))  # fmt: skip
        out.append((
            f"query near-hull --by model{tag}",
            lambda conv=conv: len(
                queries.ehull_mae(con, by="model", convention=conv, near_hull=threshold).rows
            ),
        ))  # fmt: skip
        out.append((
            f"query near-hull --by dof-bin{tag}",
            lambda conv=conv: len(
                queries.ehull_mae(con, by="dof-bin", convention=conv, near_hull=threshold).rows
            ),
        ))  # fmt: skip
        out.append((
            f"query energy-error{tag}",
            lambda conv=conv: len(queries.energy_error(con, convention=conv).rows),
        ))  # fmt: skip
        out.append((
            f"query stability{tag}",
            lambda conv=conv: len(queries.stability(con, convention=conv).rows),
        ))  # fmt: skip
    out.append((
        "query ehull-mae --by dof --kind single-point",
        lambda: len(queries.ehull_mae(con, by="dof", kind="single_point").rows),
    ))  # fmt: skip
    out.append(("query symmetry", lambda: len(queries.symmetry(con).rows)))
    out.append(("query calculations", lambda: len(queries.calculation_summary(con).rows)))
    return out


def view_queries(con: duckdb.DuckDBPyConnection) -> list[tuple[str, Callable[[], int]]]:
    """Full reads of the statistics views (what ``mliapdb report`` reads), and the model-hull
    staleness check that every model-hull query runs."""
    out = [
        (f"SELECT * FROM {v}", _sql(con, f"SELECT * FROM {v}"))
        for v in (
            "ehull_error_stats", "near_hull_stats", "energy_error_stats",
            "stability_classification", "symmetry_changes",
        )
    ]  # fmt: skip
    count = "SELECT count(*) FROM ehull_errors"
    out.append((count, _sql(con, count)))
    out.append((
        "report: ehull_errors rows of one model x convention",
        _sql(con,
             "SELECT model, settings_hash, dof, dof_bin, dof_bin_order, near_hull, "
             "dft_e_above_hull, model_e_above_hull, e_above_hull_error FROM ehull_errors "
             "WHERE hull_complete AND calc_kind = 'relax' AND convention = 'dft-hull' "
             "AND model = (SELECT min(name) FROM models) ORDER BY dataset, material_id"),
    ))  # fmt: skip
    try:
        from mliapdb.analysis.model_hull import n_stale
    except ImportError:  # no model hulls in this code
        return out
    out.append(("model_hull.n_stale (fingerprints)", lambda: int(n_stale(con) >= 0)))
    try:
        from mliapdb.analysis.error_rows import n_stale as n_stale_rows
    except ImportError:  # no stored error rows in this code
        return out
    out.append(("error_rows.n_stale (fingerprints)", lambda: int(n_stale_rows(con) >= 0)))
    return out


def alternatives(con: duckdb.DuckDBPyConnection, repeat: int) -> list[Timing]:
    """The same per-DOF statistics by pandas and over a materialised TEMP table."""
    out: list[Timing] = []
    keys = ["model", "settings_hash", "calc_kind", "convention", "dof"]
    view_sql = (
        "SELECT * FROM ehull_error_stats WHERE grouping = 'dof'"
    )
    rows, times = _time(_sql(con, view_sql), repeat)
    out.append(Timing("view: ehull_error_stats, grouping 'dof'", rows, times))

    fetch_sql = (
        "SELECT model, settings_hash, calc_kind, convention, dof, e_above_hull_error "
        "FROM ehull_errors WHERE hull_complete"
    )
    frames: list[Any] = []

    def fetch() -> int:
        frames[:] = [con.execute(fetch_sql).df()]
        return len(frames[0])

    n_fetched, t_fetch = _time(fetch, repeat)
    out.append(Timing("pandas: fetch ehull_errors rows (.df())", n_fetched, t_fetch))

    def groupby() -> int:
        df = frames[0]
        df = df.assign(abs_err=df.e_above_hull_error.abs(),
                       under=(df.e_above_hull_error < 0).astype(float))  # fmt: skip
        g = df.groupby(keys, sort=True)
        res = g.agg(
            n=("e_above_hull_error", "size"), mae=("abs_err", "mean"),
            mean_signed_error=("e_above_hull_error", "mean"),
            median_signed_error=("e_above_hull_error", "median"),
            frac_underpredicted=("under", "mean"),
        )  # fmt: skip
        return len(res)

    n_groups, t_group = _time(groupby, repeat)
    out.append(Timing("pandas: groupby dof (on the fetched frame)", n_groups, t_group))
    total = [a + b for a, b in zip(t_fetch, t_group, strict=True)]
    out.append(Timing("pandas: fetch + groupby dof", n_groups, total))

    def materialise() -> int:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE bench_ehull_errors AS SELECT * FROM ehull_errors"
        )
        return con.execute("SELECT count(*) FROM bench_ehull_errors").fetchone()[0]

    n_mat, t_mat = _time(materialise, 1, warmup=False)
    out.append(Timing("materialise ehull_errors (TEMP table, once)", n_mat, t_mat))
    agg = (
        "SELECT model, settings_hash, calc_kind, convention, dof, count(*), "
        "avg(abs(e_above_hull_error)), avg(e_above_hull_error), median(e_above_hull_error), "
        "avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END) "
        "FROM bench_ehull_errors WHERE hull_complete GROUP BY ALL ORDER BY ALL"
    )
    rows, times = _time(_sql(con, agg), repeat)
    out.append(Timing("materialised table: GROUP BY dof", rows, times))
    live = con.execute("SELECT count(*) FROM duckdb_views() "
                       "WHERE view_name = 'stg_ehull_errors_live'").fetchone()[0]
    if live:  # stored error rows (ehull_errors_all) against computing them live
        for label, source in (("stored rows (ehull_errors_all)", "ehull_errors_all"),
                              ("live view (stg_ehull_errors_live)", "stg_ehull_errors_live")):
            sql = (
                "SELECT model, settings_hash, calc_kind, convention, dof, count(*), "
                "avg(abs(e_above_hull_error)), avg(e_above_hull_error), "
                "median(e_above_hull_error), "
                "avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END) "
                f"FROM {source} WHERE hull_complete AND symprec = 0.1 "
                "GROUP BY ALL ORDER BY ALL"
            )
            rows, times = _time(_sql(con, sql), repeat)
            out.append(Timing(f"{label}: GROUP BY dof", rows, times))
    return out


def rebuild_hull_timings(db: Path) -> list[Timing]:
    """Seconds of :func:`rebuild_model_hulls` on a copy of ``db``: one stale model x kind,
    then every one (all builds dropped). Empty if this code has no model hulls."""
    try:
        from mliapdb.analysis.model_hull import rebuild_model_hulls
    except ImportError:  # TODO: time the model-hull refresh once mliapdb.analysis.model_hull exists
        return []
    out = []
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(db, copy)
        con = connect(copy)
        try:
            key = con.execute(
                "SELECT dataset, model, settings_hash, calc_kind FROM model_hull_builds "
                "WHERE calc_kind = 'relax' ORDER BY model LIMIT 1"
            ).fetchone()
            con.execute(
                "DELETE FROM model_hull_builds WHERE dataset = ? AND model = ? "
                "AND settings_hash = ? AND calc_kind = ?", list(key),
            )  # fmt: skip
            t0 = time.perf_counter()
            built = rebuild_model_hulls(con)
            out.append(Timing(f"rebuild_model_hulls: 1 stale ({key[1]}, relax)", len(built),
                              [time.perf_counter() - t0]))  # fmt: skip
            t0 = time.perf_counter()
            built = rebuild_model_hulls(con)
            out.append(Timing("rebuild_model_hulls: nothing stale", len(built),
                              [time.perf_counter() - t0]))  # fmt: skip
            con.execute("DELETE FROM model_hull_builds")
            t0 = time.perf_counter()
            built = rebuild_model_hulls(con)
            out.append(Timing("rebuild_model_hulls: all stale", len(built),
                              [time.perf_counter() - t0]))  # fmt: skip
            try:
                from mliapdb.analysis.error_rows import rebuild_error_rows
            except ImportError:  # no stored error rows in this code
                return out
            t0 = time.perf_counter()
            stored = rebuild_error_rows(con)  # every build is stale after the hulls
            out.append(Timing("rebuild_error_rows: all stale", len(stored),
                              [time.perf_counter() - t0]))  # fmt: skip
            t0 = time.perf_counter()
            stored = rebuild_error_rows(con)
            out.append(Timing("rebuild_error_rows: nothing stale", len(stored),
                              [time.perf_counter() - t0]))  # fmt: skip
        finally:
            con.close()
    return out


def report_timing(db: Path) -> Timing:
    """Seconds of ``mliapdb report`` (:func:`mliapdb.analysis.report.build_report`), one run."""
    from mliapdb.analysis.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = build_report(db, tmp)
        seconds = time.perf_counter() - t0
    n_fig = len(getattr(result, "figures", []) or [])
    return Timing("report (build_report: tables + figures)", n_fig, [seconds], "figures")


def machine() -> str:
    """One line describing the machine (CPU count, platform, Python, DuckDB)."""
    return (
        f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--materials", type=int, default=150_000, help="if generating")
    parser.add_argument("--models", type=int, default=9, help="if generating")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--target", type=float, default=0.5, help="seconds per query")
    parser.add_argument("--rebuild-hull", action="store_true",
                        help="also time rebuild_model_hulls (on a copy of the database)")
    parser.add_argument("--report", action="store_true", help="also time build_report once")
    parser.add_argument("--only", default=None, help="only queries whose label contains this")
    args = parser.parse_args(argv)

    if not args.db.exists():
        from synthetic_db import generate

        generate(args.db, args.materials, args.models)
    size = args.db.stat().st_size
    con = connect(args.db, read_only=True)
    try:
        n_mat, n_calc, n_models = con.execute(
            "SELECT (SELECT count(*) FROM mp_materials), (SELECT count(*) FROM calculations), "
            "(SELECT count(*) FROM models)"
        ).fetchone()
        conventions = [
            r[0] for r in con.execute(
                "SELECT DISTINCT convention FROM ehull_errors ORDER BY convention"
            ).fetchall()
        ] if hasattr(queries, "CONVENTIONS") else ["dft-hull"]  # fmt: skip
        threshold = queries.stats_settings(con)[0] if hasattr(queries, "stats_settings") else 0.05
        print(
            f"{args.db}: {n_mat} materials, {n_models} models, {n_calc} calculations, "
            f"{size / 2**20:.0f} MiB; conventions: {', '.join(conventions)}",
            flush=True,
        )
        todo = cli_queries(con, conventions, threshold) + view_queries(con)
        if args.only:
            todo = [(label, fn) for label, fn in todo if args.only in label]
        timings = []
        for label, fn in todo:
            rows, times = _time(fn, args.repeat)
            timings.append(Timing(label, rows, times))
            print(f"  {label}: {rows} rows, {', '.join(f'{t:.3f}' for t in times)} s", flush=True)
        alt = [] if args.only else alternatives(con, args.repeat)
    finally:
        con.close()
    extra = rebuild_hull_timings(args.db) if args.rebuild_hull else []
    if args.report:
        extra.append(report_timing(args.db))

    print()
    print(f"| query | rows | median s | < {args.target:g} s |")
    print("|---|---:|---:|:---:|")
    for t in timings:
        print(f"| `{t.name}` | {t.rows} | {t.median:.3f} | {'yes' if t.median < args.target else '**no**'} |")  # noqa: E501
    if alt:
        print()
        print("alternatives (same run):")
        print()
        print("| method | rows | median s |")
        print("|---|---:|---:|")
        for t in alt:
            print(f"| {t.name} | {t.rows} | {t.median:.3f} |")
    if extra:
        print()
        print("| step | built / figures | seconds |")
        print("|---|---:|---:|")
        for t in extra:
            print(f"| {t.name} | {t.rows} | {t.median:.2f} |")
    slow = [t for t in timings if t.median >= args.target]
    print()
    print(f"{len(timings) - len(slow)} of {len(timings)} queries under {args.target:g} s "
          f"(median of {args.repeat} after a warm-up)")  # fmt: skip
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
