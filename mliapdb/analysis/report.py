"""The study report: Markdown and HTML tables with PNG figures, computed by SQL over the
statistics views (``ehull_error_stats``, ``near_hull_stats``, ``energy_error_stats``,
``stability_classification``, ``symmetry_changes``, ``ehull_errors``) and ``models`` /
``materials``. Energies are reported in meV/atom; errors are model - DFT.

Figures (:mod:`mliapdb.analysis.figures`: PNG at 200 dpi and SVG), one set per Ehull
convention ``<convention>``:

- ``parity_<convention>``: model vs DFT Ehull (meV/atom), one panel per model on shared axes,
  y = x line, MAE, R2 and n per panel; a hexbin density for large panels.
- ``ehull_error_vs_dof_<convention>``: box plot of the signed Ehull error (meV/atom) per
  DOF bin, one panel per model, shared y, markers explained in a legend.
- ``frac_under_vs_dof_<convention>``: fraction of materials whose Ehull is underpredicted
  per DOF bin, one line per model (one panel).
- ``near_hull_hist_<convention>``: histogram of the signed Ehull error (meV/atom) of the
  near-hull materials, models overlaid (one panel); left out when no material is near the hull.

The HTML and Markdown open with a table of contents linking every section and table.

A "model" is a model x settings hash; its label carries the first 8 characters of the hash
only when one model has results under several settings.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mliapdb.analysis import figures
from mliapdb.analysis.claims import CI_LEVEL, HIGH_DOF
from mliapdb.analysis.claims import frac as _frac
from mliapdb.analysis.claims import mev as _mev
from mliapdb.analysis.fair import compared_on
from mliapdb.analysis.figures import FigureFile
from mliapdb.errors import MliapdbError

CONVENTIONS = ("dft-hull", "model-hull", "model-hull-dft-refs")
KINDS = {"relax": "relax", "relax-fixsym": "relax_fixsym", "single-point": "single_point"}
_KIND_OPTION = {v: k for k, v in KINDS.items()}  # calc_kind -> --kind value

CONVENTION_TEXT = {
    "dft-hull": "Fixed DFT hull (model Ehull = DFT Ehull + model formation-energy error)",
    "model-hull": "Hull rebuilt from the model's own energies, model elemental references",
    "model-hull-dft-refs": "Hull rebuilt from the model's own energies, DFT elemental references",
}


# --- report structure ---------------------------------------------------------------------


@dataclass
class Table:
    """A table of pre-formatted cells; ``numeric`` columns are right-aligned."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    note: str = ""


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs
    items: list[str] = field(default_factory=list)  # bullet list
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)


@dataclass
class Report:
    title: str
    header: list[tuple[str, str]]
    sections: list[Section]

    def anchors(self) -> list[tuple[int, str, str]]:
        """(level, title, anchor) of every section (level 2) and titled table (level 3), in
        order; anchors are unique, lower-case, GitHub style."""
        seen: dict[str, int] = {}
        out = []
        for sec in self.sections:
            out.append((2, sec.title, _anchor(sec.title, seen)))
            out += [(3, t.title, _anchor(t.title, seen)) for t in sec.tables if t.title]
        return out

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        out += [f"- **{k}**: {v}" for k, v in self.header]
        out += ["", "## Contents", ""]
        out += [f"{'  ' * (level - 2)}- [{title}](#{anchor})"
                for level, title, anchor in self.anchors()]
        out.append("")
        for sec in self.sections:
            out += [f"## {sec.title}", ""]
            for par in sec.text:
                out += [par, ""]
            if sec.items:
                out += [f"- {item}" for item in sec.items] + [""]
            for table in sec.tables:
                if table.title:
                    out += [f"### {table.title}", ""]
                if table.note:
                    out += [table.note, ""]
                out += [_markdown_table(table), ""]
            for fig in sec.figures:
                out += [f"![{fig.caption}]({fig.name})", "",
                        f"*{fig.caption}* ([SVG]({fig.svg}))", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        e = html.escape
        anchors = iter(self.anchors())
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(self.title)}</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            "<dl>",
        ]
        out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in self.header]
        out += ["</dl>", '<nav id="contents"><h2>Contents</h2><ul>']
        for level, title, anchor in self.anchors():
            cls = ' class="sub"' if level == 3 else ""
            out.append(f'<li{cls}><a href="#{e(anchor)}">{e(title)}</a></li>')
        out.append("</ul></nav>")
        for sec in self.sections:
            _, _, anchor = next(anchors)
            out.append(f'<h2 id="{e(anchor)}">{e(sec.title)} <a class="top" '
                       'href="#contents">contents</a></h2>')
            out += [f"<p>{e(par)}</p>" for par in sec.text]
            if sec.items:
                out += ["<ul>"] + [f"<li>{e(item)}</li>" for item in sec.items] + ["</ul>"]
            for table in sec.tables:
                if table.title:
                    _, _, anchor = next(anchors)
                    out.append(f'<h3 id="{e(anchor)}">{e(table.title)}</h3>')
                if table.note:
                    out.append(f'<p class="note">{e(table.note)}</p>')
                out.append(_html_table(table))
            for fig in sec.figures:
                out.append(
                    f'<figure><img src="{e(fig.name)}" alt="{e(fig.caption)}">'
                    f'<figcaption>{e(fig.caption)} (<a href="{e(fig.svg)}">SVG</a>)'
                    "</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _anchor(title: str, seen: dict[str, int]) -> str:
    """GitHub's heading anchor of ``title`` (lower case, punctuation dropped, spaces to
    dashes), with ``-1``, ``-2``, ... for repeats."""
    import re

    base = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f2f2f2}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "dt{font-weight:bold;float:left;clear:left;width:11em}dd{margin-left:12em}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic}"
    ".note{color:#555}td,th{white-space:nowrap}nav li.sub{margin-left:1.5em;font-size:90%}"
    "nav ul{list-style:none;padding-left:0;columns:2}a.top{font-size:60%;font-weight:normal}"
    "h2,h3{scroll-margin-top:0.5em}"
)


def _markdown_table(table: Table) -> str:
    from mliapdb.render import markdown_table

    return markdown_table(table.columns, table.rows, table.numeric)


def _html_table(table: Table) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>"]
    for row in table.rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{e(c)}</td>' if num else f"<td>{e(c)}</td>"
            for c, num in zip(row, table.numeric, strict=True)
        ) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# --- formatting -----------------------------------------------------------------------------


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]], note: str = ""):
    return Table(title, [c for c, _ in columns], rows, [n for _, n in columns], note)


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One model x settings hash: what a table row or a figure panel shows."""

    model: str
    settings_hash: str
    label: str


def _fetch(con, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _select_series(con, calc_kind: str, models: Sequence[str] | None) -> list[Series]:
    """The model x settings with usable results of ``calc_kind``; errors name the fix."""
    registered = {r[0] for r in con.execute("SELECT name FROM models").fetchall()}
    for name in models or ():
        if name not in registered:
            known = ", ".join(sorted(registered)) or "none"
            raise MliapdbError(
                f"no model '{name}' in the database (registered: {known}) - run "
                f"'mliapdb ingest relax --model {name}' first"
            )
    kinds = dict(con.execute(
        "SELECT calc_kind, count(*) FROM ehull_errors WHERE convention = 'dft-hull' "
        "GROUP BY calc_kind"
    ).fetchall())
    if not kinds:
        (n_calcs,) = con.execute("SELECT count(*) FROM calculations").fetchone()
        if n_calcs:  # calculations, but no error rows served: say why
            raise MliapdbError("nothing to report: "
                               + _why_no_rows(con, calc_kind, models, any_kind=True))
        raise MliapdbError(
            "no model calculations in DB - run 'mliapdb ingest relax --model MODEL' first"
        )
    option = _KIND_OPTION[calc_kind]
    rows = con.execute(
        "SELECT DISTINCT model, settings_hash FROM ehull_errors "
        "WHERE calc_kind = ? AND convention = 'dft-hull' ORDER BY model, settings_hash",
        [calc_kind],
    ).fetchall()
    if models:
        rows = [r for r in rows if r[0] in models]
    if not rows:
        (n_usable,) = con.execute(
            "SELECT count(*) FROM calculations WHERE status = 'ok' AND calc_kind = ?"
            + (f" AND model IN ({', '.join('?' * len(models))})" if models else ""),
            [calc_kind, *(models or ())]).fetchone()
        if n_usable:  # usable calculations of this kind whose rows are not served: say why
            raise MliapdbError(f"no {option} results to report: "
                               + _why_no_rows(con, calc_kind, models))
        have = ", ".join(sorted(_KIND_OPTION.get(k, k) for k in kinds))
        which = f"model {', '.join(models)}" if models else "any model"
        raise MliapdbError(
            f"no usable {option} calculations of {which} in DB (have: {have}) - run "
            f"'mliapdb ingest relax --kind {option} --model MODEL' first"
        )
    per_model: dict[str, int] = {}
    for model, _ in rows:
        per_model[model] = per_model.get(model, 0) + 1
    return [
        Series(m, h, m if per_model[m] == 1 else f"{m} ({h[:8]})") for m, h in rows
    ]


def _why_no_rows(con, calc_kind: str, models: Sequence[str] | None,
                 convention: str = "dft-hull", series: Sequence[Series] = (),
                 any_kind: bool = False) -> str:
    """Why usable calculations give no (counted) rows of ``convention``, and the fix
    (:func:`mliapdb.analysis.queries.explain_empty` per model or series; stale stored rows of
    ``calc_kind``, or of any kind, first)."""
    from mliapdb.analysis.error_rows import freshness
    from mliapdb.analysis.queries import explain_empty, stale_hint

    fresh = freshness(con)
    kinds = tuple(KINDS.values()) if any_kind else (calc_kind,)
    for model in models or [None]:
        if hint := stale_hint(fresh, kinds, model):
            return hint
    keys = [(s.model, s.settings_hash) for s in series] or [(m, None) for m in models or [None]]
    for model, settings in keys:
        hint = explain_empty(con, calc_kind, convention, model, settings_hash=settings,
                             coverage_option=False, fresh=fresh)
        if hint:
            return hint
    return "no rows in the ehull_errors view - see 'mliapdb query calculations'"


def _series_filter(series: Sequence[Series]) -> tuple[str, list[str]]:
    clause = " OR ".join(["(model = ? AND settings_hash = ?)"] * len(series))
    params = [x for s in series for x in (s.model, s.settings_hash)]
    return f"({clause})", params


def _by_series(rows: list[dict], series: Sequence[Series]) -> dict[Series, list[dict]]:
    index = {(s.model, s.settings_hash): s for s in series}
    out: dict[Series, list[dict]] = {s: [] for s in series}
    for row in rows:
        key = index.get((row["model"], row["settings_hash"]))
        if key is not None:
            out[key].append(row)
    return out


@dataclass
class ConventionData:
    """Everything one convention's section shows, rows from the views (eV/atom)."""

    convention: str
    stats: dict[Series, list[dict]]  # ehull_error_stats
    near: dict[Series, list[dict]]  # near_hull_stats
    energy: dict[Series, list[dict]]  # energy_error_stats
    classification: dict[Series, list[dict]]  # stability_classification
    errors: dict[Series, list[dict]]  # ehull_errors (complete rows)

    def grouped(self, which: str, series: Series, grouping: str) -> list[dict]:
        rows = (self.stats if which == "all" else self.near)[series]
        return sorted(
            (r for r in rows if r["grouping"] == grouping),
            key=lambda r: (r["group_order"], r["group_value"], r["dataset"]),
        )

    @property
    def several_datasets(self) -> bool:
        """True when the rows span more than one dataset: the tables then say which."""
        return len({r["dataset"] for rows in self.errors.values() for r in rows}) > 1

    def who(self, series: Series, row: dict) -> list[str]:
        """The model (and, with several datasets, the dataset) cells of a statistics row."""
        return [series.label, row["dataset"]] if self.several_datasets else [series.label]

    def who_columns(self) -> list[tuple[str, bool]]:
        return [("model", False)] + ([("dataset", False)] if self.several_datasets else [])


def _load_convention(
    con, calc_kind: str, convention: str, series: Sequence[Series]
) -> ConventionData:
    where, params = _series_filter(series)
    params = [calc_kind, convention, *params]
    cond = f"calc_kind = ? AND convention = ? AND {where}"
    from mliapdb.analysis.fair import with_hubbard

    def get(view: str) -> dict[Series, list[dict]]:
        return _by_series(_fetch(con, f"SELECT * FROM {view} WHERE {cond}", params), series)

    errors = _fetch(
        con,
        "SELECT model, settings_hash, dataset, material_id, dof, dof_bin, dof_bin_order, "
        "near_hull, dft_e_above_hull, model_e_above_hull, e_above_hull_error, hubbard "
        f"FROM {with_hubbard('ehull_errors')} "
        f"WHERE hull_counted AND {cond} ORDER BY dataset, material_id",
        params,
    )
    return ConventionData(
        convention=convention,
        stats=get("ehull_error_stats"),
        near=get("near_hull_stats"),
        energy=get("energy_error_stats"),
        classification=get("stability_classification"),
        errors=_by_series(errors, series),
    )


# --- claims ---------------------------------------------------------------------------------


def _pooled_mae(rows: list[dict]) -> tuple[float | None, int]:
    """Count-weighted MAE (eV/atom) of per-DOF groups: exact, since MAE is a mean."""
    n = sum(r["n"] for r in rows)
    if not n:
        return None, 0
    return sum(r["n"] * r["mae"] for r in rows) / n, n


def claims(data: ConventionData, series: Series, n_min: int | None = None) -> list[str]:
    """The study's four claims (:mod:`mliapdb.analysis.claims`) for one model and convention, as
    computed statements with their numbers (meV/atom) and 95 % bootstrap intervals: yes or
    no only where the interval excludes the other side and n >= ``n_min`` (default
    :data:`mliapdb.analysis.fair.N_MIN`), else inconclusive."""
    from mliapdb.analysis.claims import evaluate

    rows = data.errors[series]
    if not rows:
        return [f"{series.label}, {data.convention}: no complete results"]
    found = evaluate([r["e_above_hull_error"] for r in rows], [r["dof"] for r in rows],
                     [bool(r["near_hull"]) for r in rows], n_min)
    return [f"{series.label}, {data.convention}: ({c.key}) {c.title}: {c.statement}"
            for c in found]


def _common_tables(data: ConventionData, series: Sequence[Series]) -> list[Table]:
    """Ehull error by model (and by model and GGA / GGA+U) over the materials every shown
    model counts, with 95 % bootstrap intervals and coverage (common / any)."""
    import numpy as np

    from mliapdb.analysis.fair import DEFAULT_SEED, aggregate

    if len(series) < 2:
        return []
    index = {s: i for i, s in enumerate(series)}
    specs = [(lambda v: np.abs(v[0]), 1000.0), (lambda v: v[0], 1000.0),
             (lambda v: v[0] < 0, 1.0)]

    def cells(v):
        e = v[0]
        return [len(e), float(np.mean(np.abs(e))), float(np.mean(e)), float(np.mean(e < 0))]

    tables = []
    for title, group in (("Ehull error by model, common materials", lambda r: ()),
                         ("Ehull error by model and GGA / GGA+U, common materials",
                          lambda r: (r["hubbard"], r["hubbard"]))):
        rows = [(index[s], r["dataset"], r["material_id"], *group(r), r["e_above_hull_error"])
                for s in series for r in data.errors[s]]
        out, n_common, n_any = aggregate(rows, 1, len(group({"hubbard": ""})), cells, specs,
                                         CI_LEVEL, DEFAULT_SEED, True)
        body = []
        for (i,), g, c in sorted(out, key=lambda t: (t[1], t[0])):
            n, mae, mse, fu, mae_lo, mae_hi, mse_lo, mse_hi, fu_lo, fu_hi, coverage = c
            body.append([*([g[1]] if g else []), series[i].label, str(n), coverage,
                         _mev(mae), f"[{mae_lo:.1f}, {mae_hi:.1f}]", _mev(mse),
                         f"[{mse_lo:.1f}, {mse_hi:.1f}]", _frac(fu),
                         f"[{fu_lo:.3f}, {fu_hi:.3f}]"])
        head = [("GGA / GGA+U", False)] if title.endswith("GGA+U, common materials") else []
        tables.append(_table(
            title, [*head, ("model", False), ("n", True), ("common / any", False),
                    ("MAE (meV/atom)", True), ("95 % CI", False),
                    ("mean signed error (meV/atom)", True), ("95 % CI", False),
                    ("frac underpredicted", True), ("95 % CI", False)],
            body,
            f"Only the {n_common} of {n_any} materials that every model shown counts; "
            "intervals: percentile bootstrap over materials (1000 resamples, seed "
            f"{DEFAULT_SEED}).",
        ))
    return tables


# --- tables ---------------------------------------------------------------------------------

_STAT_COLUMNS = [
    ("n", True), ("MAE (meV/atom)", True), ("RMSE (meV/atom)", True),
    ("mean signed error (meV/atom)", True), ("median signed error (meV/atom)", True),
    ("frac underpredicted", True), ("Ehull scale", True),
]


def _stat_cells(r: dict) -> list[str]:
    return [
        str(r["n"]), _mev(r["mae"]), _mev(r["rmse"]), _mev(r["mean_signed_error"]),
        _mev(r["median_signed_error"]), _frac(r["frac_underpredicted"]),
        _num(r["ehull_scale"], 3),
    ]


def _grouped_table(
    data: ConventionData, series: Sequence[Series], which: str, grouping: str, title: str,
    group_name: str, note: str = "",
) -> Table:
    rows = [
        (r["group_order"], r["group_value"], i, r["dataset"],
         [r["group_value"], *data.who(s, r), *_stat_cells(r)])
        for i, s in enumerate(series)
        for r in data.grouped(which, s, grouping)
    ]
    rows.sort(key=lambda t: t[:4])
    return _table(
        title, [(group_name, False), *data.who_columns(), *_STAT_COLUMNS], [r[4] for r in rows],
        note,
    )


def _convention_tables(
    data: ConventionData, series: Sequence[Series], near_hull_mev: float
) -> list[Table]:
    overall = _table(
        "Ehull error by model", [*data.who_columns(), *_STAT_COLUMNS],
        [[*data.who(s, r), *_stat_cells(r)] for s in series
         for r in data.grouped("all", s, "all")],
        "Signed error = model - DFT Ehull; frac underpredicted = share with model Ehull < DFT.",
    )
    near_note = f"Materials with DFT Ehull < {near_hull_mev:g} meV/atom."
    near = _table(
        "Near-hull materials: Ehull error by model", [*data.who_columns(), *_STAT_COLUMNS],
        [[*data.who(s, r), *_stat_cells(r)] for s in series
         for r in data.grouped("near", s, "all")],
        near_note,
    )
    energy = _table(
        "Energy errors", [
            *data.who_columns(), ("n", True), ("E MAE (meV/atom)", True),
            ("E mean signed error (meV/atom)", True), ("E frac underpredicted", True),
            ("Ef MAE (meV/atom)", True), ("Ef mean signed error (meV/atom)", True),
            ("Ef frac underpredicted", True),
        ],
        [
            [*data.who(s, r), str(r["n"]), _mev(r["e_mae"]), _mev(r["e_mean_signed_error"]),
             _frac(r["e_frac_underpredicted"]), _mev(r["e_form_mae"]),
             _mev(r["e_form_mean_signed_error"]), _frac(r["e_form_frac_underpredicted"])]
            for s in series for r in sorted(data.energy[s], key=lambda r: r["dataset"])
        ],
        "E: total energy per atom; Ef: formation energy per atom (model - DFT).",
    )
    classification = _table(
        "Stability classification", [
            *data.who_columns(), ("n", True), ("TP", True), ("FP", True), ("TN", True),
            ("FN", True), ("precision", True), ("recall", True), ("F1", True),
            ("accuracy", True), ("prevalence", True), ("DAF", True),
        ],
        [
            [*data.who(s, r), str(r["n"]), str(r["tp"]), str(r["fp"]), str(r["tn"]),
             str(r["fn"]),
             _frac(r["precision"]), _frac(r["recall"]), _frac(r["f1"]), _frac(r["accuracy"]),
             _frac(r["prevalence"]), _num(r["daf"])]
            for s in series for r in sorted(data.classification[s], key=lambda r: r["dataset"])
        ],
        "Positive = stable (Ehull <= 0 eV/atom); DAF = precision / prevalence.",
    )
    return [
        overall,
        *_common_tables(data, series),
        _grouped_table(data, series, "all", "dof_bin", "Ehull error by DOF bin", "DOF bin"),
        _grouped_table(
            data, series, "all", "crystal_system", "Ehull error by crystal system",
            "crystal system",
        ),
        near,
        _grouped_table(
            data, series, "near", "dof_bin", "Near-hull materials: Ehull error by DOF bin",
            "DOF bin", near_note,
        ),
        energy,
        classification,
    ]


def _symmetry_table(con, calc_kind: str, series: Sequence[Series]) -> Table:
    where, params = _series_filter(series)
    rows = _by_series(
        _fetch(con, f"SELECT * FROM symmetry_changes WHERE calc_kind = ? AND {where}",
               [calc_kind, *params]),
        series,
    )
    return _table(
        "Symmetry after relaxation", [
            ("model", False), ("n", True), ("kept", True), ("lowered", True), ("raised", True),
            ("changed", True), ("frac kept", True), ("mean RMSD (A)", True),
        ],
        [
            [s.label, str(r["n"]), str(r["kept"]), str(r["lowered"]), str(r["raised"]),
             str(r["changed"]), _frac(r["frac_kept"]), _num(r["mean_rmsd"], 3)]
            for s in series for r in rows[s]
        ],
        "Space group of the relaxed vs the input (DFT) structure (point-group order); RMSD "
        "of the relaxation in Angstrom.",
    )


def _relaxation_effect_section(
    con, calc_kind: str, series: Sequence[Series], conventions: Sequence[str]
) -> Section | None:
    """Single point vs relaxation of the same materials (relaxation_effect_stats): per model
    and convention, then per DOF bin; None without single points of these models."""
    rows = _fetch(
        con,
        "SELECT * FROM relaxation_effect_stats WHERE calc_kind = ? "
        "AND list_contains(?, convention) ORDER BY model, convention, group_order",
        [calc_kind, list(conventions)],
    )
    shown = {(s.model, s.settings_hash): s.label for s in series}
    rows = [r for r in rows if (r["model"], r["relax_settings_hash"]) in shown]
    if not rows:
        return None
    columns = [
        ("n", True), ("MAE sp", True), ("MAE relaxed", True), ("mean signed sp", True),
        ("mean signed relaxed", True), ("frac under sp", True), ("frac under relaxed", True),
        ("relaxation energy mean", True), ("median", True), ("frac symmetry kept", True),
    ]

    def cells(r: dict) -> list[str]:
        return [
            str(r["n"]), _mev(r["single_point_mae"]), _mev(r["relaxed_mae"]),
            _mev(r["single_point_mean_signed_error"]), _mev(r["relaxed_mean_signed_error"]),
            _frac(r["single_point_frac_underpredicted"]), _frac(r["relaxed_frac_underpredicted"]),
            _mev(r["mean_relaxation_energy"]), _mev(r["median_relaxation_energy"]),
            _frac(r["frac_symmetry_kept"]),
        ]

    def label(r: dict) -> str:
        return shown[r["model"], r["relax_settings_hash"]]

    overall = _table(
        "Per model and convention",
        [("model", False), ("convention", False), *columns],
        [[label(r), r["convention"], *cells(r)] for r in rows if r["grouping"] == "all"],
    )
    by_dof = _table(
        "Per DOF bin (dft-hull)",
        [("model", False), ("DOF bin", False), *columns],
        [[label(r), r["group_value"], *cells(r)] for r in rows
         if r["grouping"] == "dof_bin" and r["convention"] == "dft-hull"],
    )
    return Section(
        "Relaxation effect",
        text=["The same materials after a single point on the DFT structure (sp) and after "
              "the relaxation: Ehull errors model - DFT and relaxation energy (relaxed - "
              "single-point model energy), meV/atom. The difference separates an error of the "
              "energy surface from an effect of relaxing."],
        tables=[overall] + ([by_dof] if by_dof.rows else []),
    )


# --- figures --------------------------------------------------------------------------------


def _coverage_table(
    con, calc_kind: str, series: Sequence[Series], conventions: Sequence[str]
) -> Section:
    """Materials per model and convention: with a result, in complete chemical systems, and
    complete once fill-ins count; which of them the statistics count."""
    where, params = _series_filter(series)
    rows = _fetch(
        con,
        "SELECT model, settings_hash, convention, count(*) AS n, "
        "count(*) FILTER (WHERE hull_complete) AS complete, "
        "count(*) FILTER (WHERE hull_complete_filled) AS filled, "
        "count(*) FILTER (WHERE hull_counted) AS counted, "
        "count(*) FILTER (WHERE hull_counted AND suspicious) AS suspicious "
        f"FROM ehull_errors WHERE calc_kind = ? AND {where} AND list_contains(?, convention) "
        "GROUP BY ALL ORDER BY model, settings_hash, convention",
        [calc_kind, *params, list(conventions)],
    )
    (setting,) = con.execute("SELECT model_hull_coverage FROM stg_stats_settings").fetchone()
    by = {(r["model"], r["settings_hash"]): [] for r in rows}
    for r in rows:
        by[r["model"], r["settings_hash"]].append(r)
    table = _table(
        "", [("model", False), ("convention", False), ("with a result", True),
             ("complete systems", True), ("complete with fill-ins", True), ("counted", True),
             ("of them suspicious", True)],
        [[s.label, r["convention"], str(r["n"]), str(r["complete"]), str(r["filled"]),
          str(r["counted"]), str(r["suspicious"])]
         for s in series for r in by.get((s.model, s.settings_hash), [])],
    )
    from mliapdb.analysis.queries import suspicious_settings

    volume, rmsd, drop = suspicious_settings(con)
    n_suspicious = sum(r["suspicious"] for r in rows if r["convention"] == "dft-hull")
    suspicious = [] if calc_kind == "single_point" else [
        f"{n_suspicious} counted relaxation(s) (dft-hull) are flagged suspicious: |volume "
        f"ratio - 1| > {volume:g}, RMSD > {rmsd:g} A or relaxed - single-point energy < "
        f"-{drop:g} eV/atom (db_settings suspicious_*; the stg_suspicious view). The report "
        "counts them; the statistics queries leave them out with --exclude-suspicious."]
    return Section("Coverage", text=[
        "Materials with a result per model and convention. A result on a model's own hull "
        "is complete "
        "when every entry of every subsystem of its chemical system has a usable model "
        "energy; with fill-ins, failed or unconverged relaxations enter the hull with their "
        "lowest energy (an upper bound, biased towards underprediction). This database "
        f"counts {'complete systems only' if setting == 'complete' else 'fill-ins too'} "
        "(db_settings.model_hull_coverage).", *suspicious], tables=[table])


def _convention_section(
    data: ConventionData, series: Sequence[Series], out: Path, near_hull_mev: float
) -> Section:
    """Tables and figures (written to ``out``) of one convention, over the models with
    complete results in it."""
    c = data.convention
    shown = [s for s in series if data.errors[s]]
    sec = Section(f"Convention {c}", text=[
        CONVENTION_TEXT.get(c, c) + ".",
        "Ehull scale: least-squares slope of the model's Ehull on DFT's through the origin "
        "(below 1: the model compresses the energies above the hull)."])
    missing = [s.label for s in series if s not in shown]
    if missing:
        sec.text.append(f"No complete {c} results for: {', '.join(missing)}.")
    if not shown:
        return sec
    sec.tables = _convention_tables(data, shown, near_hull_mev)
    made = [
        (figures.parity_figure(data, shown), f"parity_{c}",
         f"Model vs DFT Ehull ({c}), one panel per model"),
        (figures.error_vs_dof_figure(data, shown), f"ehull_error_vs_dof_{c}",
         f"Signed Ehull error per DOF bin ({c}), one panel per model"),
        (figures.frac_under_figure(data, shown), f"frac_under_vs_dof_{c}",
         f"Fraction of materials with underpredicted Ehull per DOF bin ({c})"),
        (figures.near_hull_hist_figure(data, shown, near_hull_mev), f"near_hull_hist_{c}",
         f"Signed Ehull error of near-hull materials ({c})"),
    ]
    sec.figures = [figures.save(fig, out, stem, cap) for fig, stem, cap in made
                   if fig is not None]
    return sec


# --- building -------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What :func:`build_report` wrote (paths) and the report it rendered."""

    files: list[Path]
    report: Report
    figures: list[FigureFile]


def build_report(
    db_path: str | Path,
    out_dir: str | Path,
    conventions: Sequence[str] | None = None,
    kind: str = "relax",
    models: Sequence[str] | None = None,
    log=None,
) -> ReportResult:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir`` from the
    database at ``db_path`` (opened read-only). ``kind``: relax | relax-fixsym | single-point;
    ``conventions``: default every one with results; ``log``: a callable for status lines."""
    from mliapdb.analysis.fair import N_MIN
    from mliapdb.compute.relaxation import calc_kind as stored_kind
    from mliapdb.store import database as db

    calc_kind = stored_kind(kind)  # single-point and single_point alike
    kind = _KIND_OPTION[calc_kind]
    for c in conventions or ():
        if c not in CONVENTIONS:
            raise MliapdbError(f"unknown convention {c!r} - use one of {', '.join(CONVENTIONS)}")
    log = log or (lambda _msg: None)
    con = db.connect(db_path, read_only=True)
    try:
        series = _select_series(con, calc_kind, models)
        where, params = _series_filter(series)
        present = {
            r[0] for r in con.execute(
                f"SELECT DISTINCT convention FROM ehull_errors WHERE hull_counted AND "
                f"calc_kind = ? AND {where}", [calc_kind, *params],
            ).fetchall()
        }
        if conventions:
            missing = [c for c in conventions if c not in present]
            if missing:
                raise MliapdbError(
                    f"no complete {', '.join(missing)} results for {kind} calculations of "
                    f"{', '.join(s.label for s in series)}: "
                    + _why_no_rows(con, calc_kind, models, missing[0], series)
                )
            chosen = list(dict.fromkeys(conventions))
        else:
            chosen = [c for c in CONVENTIONS if c in present]
        (near_hull,) = con.execute(
            "SELECT coalesce(near_hull_threshold, 0.05) FROM stg_stats_settings"
        ).fetchone()
        near_hull_mev = 1000 * near_hull
        model_rows = _fetch(
            con,
            "SELECT name, family, version, training_set, functional, energy_convention, "
            "trained_with_u FROM models ORDER BY name",
        )
        n_materials, datasets = con.execute(
            "SELECT count(*), string_agg(DISTINCT dataset, ', ' ORDER BY dataset) FROM materials"
        ).fetchone()
        (n_with,) = con.execute(
            f"SELECT count(DISTINCT (dataset, material_id)) FROM ehull_errors WHERE "
            f"calc_kind = ? AND convention = 'dft-hull' AND {where}", [calc_kind, *params],
        ).fetchone()
        from mliapdb.analysis.error_rows import freshness
        from mliapdb.analysis.queries import stale_hint

        if left_out := stale_hint(freshness(con), (calc_kind,)):
            log(f"report: {left_out}")
        log(
            f"report: {len(series)} model(s), {kind} calculations, {n_with} of {n_materials} "
            f"materials, conventions {', '.join(chosen)}"
        )
        per_convention = [_load_convention(con, calc_kind, c, series) for c in chosen]
        coverage = _coverage_table(con, calc_kind, series, chosen)
        symmetry = _symmetry_table(con, calc_kind, series) if calc_kind != "single_point" else None
        effect = (_relaxation_effect_section(con, calc_kind, series, chosen)
                  if calc_kind != "single_point" else None)
    finally:
        con.close()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used = {s.model for s in series}
    header = [
        ("database", str(Path(db_path).resolve())),
        ("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("calculation kind", kind),
        ("conventions", ", ".join(chosen)),
        ("materials", f"{n_materials} in the database (datasets: {datasets}); {n_with} with "
                      f"{kind} results of the models below"),
        ("near hull", f"DFT Ehull < {near_hull_mev:g} meV/atom"),
        ("units", "energies in meV/atom; errors are model - DFT"),
    ]
    model_table = _table(
        "", [("model", False), ("family", False), ("version", False),
                   ("training set", False), ("functional", False),
                   ("energy convention", False), ("compared on", False), ("settings", False)],
        [
            [m["name"], m["family"], m["version"], m["training_set"] or "",
             m["functional"] or "", m["energy_convention"],
             compared_on(m["trained_with_u"]),
             ", ".join(s.settings_hash for s in series if s.model == m["name"])]
            for m in model_rows if m["name"] in used
        ],
        note="A model trained without +U is compared only on the entries MP computed without "
             "U: its GGA+U rows would measure the missing U, not the model."
        if any(m["trained_with_u"] is False for m in model_rows if m["name"] in used) else "",
    )
    sections = [Section("Models", tables=[model_table]), coverage]
    summary = Section(
        "Study claims",
        text=[
            "Computed from the statistics views, per model and convention. Underpredicted "
            "means mean signed Ehull error (model - DFT) < 0 and fraction of materials with "
            "model Ehull < DFT Ehull > 0.5; (d) applies it to the near-hull materials "
            f"(DFT Ehull < {near_hull_mev:g} meV/atom). The MAE at DOF > {HIGH_DOF} and "
            f"DOF <= {HIGH_DOF} pools the per-DOF rows of ehull_error_stats. Intervals: "
            "95 % percentile bootstrap over materials (docs/conventions.md); a claim reads "
            "yes or no only when the interval lies on one side (for (c): both bounds, and "
            "the high-DOF interval above or below the low-DOF one) and at least "
            f"{N_MIN} materials count, else inconclusive."
        ],
    )
    for data in per_convention:
        for s in series:
            summary.items += claims(data, s)
    sections.append(summary)

    written: list[FigureFile] = []
    for data in per_convention:
        sec = _convention_section(data, series, out, near_hull_mev)
        written += sec.figures
        sections.append(sec)
    if effect is not None:
        sections.append(effect)
    if symmetry is not None:
        sections.append(Section("Symmetry changes", tables=[symmetry]))

    report = Report(f"mliapdb report: {kind}", header, sections)
    (out / "report.md").write_text(report.to_markdown())
    (out / "report.html").write_text(report.to_html())
    files = [out / "report.md", out / "report.html"] + [
        out / name for f in written for name in (f.name, f.svg)]
    log(f"wrote {len(files)} files to {out}")
    return ReportResult(files, report, written)
