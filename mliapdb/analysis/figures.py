"""The report's figures: matplotlib on an Agg canvas (no display), one small shared style, every
figure written as a 200 dpi PNG and an SVG. Energies in meV/atom; errors are model - DFT.

- parity: model vs DFT Ehull, one panel per model on shared axes, the y = x line, and MAE, R2
  and n in each panel; a hexbin density (log colour scale, one colour bar for all panels)
  above :data:`DENSITY_ABOVE` points in a panel, points below.
- error vs DOF: box plots of the signed Ehull error per DOF bin, one panel per model, shared y;
  a legend says what box, line, triangle, whiskers and circles are.
- fraction underpredicted per DOF bin, one line per model; near-hull error histograms, models
  overlaid. Legends sit below the axes, never over a title or the data.

``data`` is a :class:`mliapdb.analysis.report.ConventionData` and ``series`` its models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mliapdb.analysis.report import ConventionData, Series

DPI = 200
"""Resolution of the PNGs (the SVGs are vector)."""

PANEL_SIZE = (4.0, 3.6)
"""Inches per panel of a multi-panel figure."""

SINGLE_SIZE = (6.0, 4.2)
"""Inches of a one-panel figure."""

MAX_COLS = 3
"""Panels per row."""

DENSITY_ABOVE = 2000
"""Points in a parity panel above which it shows a hexbin density instead of points."""

STYLE = {
    "font.size": 9.0,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "figure.titlesize": 11.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "svg.fonttype": "none",
    "svg.hashsalt": "mliapdb",
}
"""The shared style (matplotlib rc parameters, applied per figure)."""

_MEV = 1000.0


@dataclass
class FigureFile:
    """A figure written next to the report: ``name`` (the PNG) and ``svg``."""

    name: str
    caption: str
    n_panels: int
    svg: str = ""


def _style():
    import matplotlib as mpl

    return mpl.rc_context(STYLE)


def panels(n: int, share: bool = False) -> tuple[Figure, list]:
    """A Figure (Agg canvas, constrained layout) with ``n`` axes on a grid of at most
    :data:`MAX_COLS` columns, unused cells removed; ``share``: common x and y limits (label
    the outer panels with :func:`outer_labels`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(n, MAX_COLS)
    nrows = math.ceil(n / ncols)
    size = SINGLE_SIZE if n == 1 else (PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=share,
                        sharey=share).ravel().tolist()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def outer_labels(axes: list, xlabel: str, ylabel: str, ticks: bool = True) -> None:
    """Axis labels (and, with ``ticks``, tick labels) only on the outer panels of a grid: y on
    the first column, x on the lowest panel of each column (a column whose last row is empty
    gets them one row up)."""
    ncols = min(len(axes), MAX_COLS)
    for i, ax in enumerate(axes):
        bottom = i + ncols >= len(axes)
        left = i % ncols == 0
        ax.set_xlabel(xlabel if bottom else "")
        ax.set_ylabel(ylabel if left else "")
        if ticks:
            ax.xaxis.set_tick_params(labelbottom=bottom)
            ax.yaxis.set_tick_params(labelleft=left)


def parity_stats(x: Sequence[float], y: Sequence[float]) -> tuple[float, float | None, int]:
    """(MAE, R2, n) of predictions ``y`` against truth ``x``: MAE = mean |y - x|; R2 = 1 -
    sum (y - x)^2 / sum (x - mean x)^2 (None when x does not vary)."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if not n:
        return math.nan, None, 0
    ss_tot = float(np.sum((x - x.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - x) ** 2)) / ss_tot if ss_tot > 0 else None
    return float(np.mean(np.abs(y - x))), r2, n


def parity_figure(data: ConventionData, series: Sequence[Series]) -> Figure:
    """Model vs DFT Ehull (meV/atom), one panel per model on shared axes."""
    from matplotlib.colors import LogNorm

    with _style():
        fig, axes = panels(len(series), share=True)
        points = {s: ([_MEV * r["dft_e_above_hull"] for r in data.errors[s]],
                      [_MEV * r["model_e_above_hull"] for r in data.errors[s]]) for s in series}
        every = [v for x, y in points.values() for v in x + y]
        lo, hi = min(every + [0.0]), max(every + [1.0])
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        dense = []
        for ax, s in zip(axes, series, strict=True):
            x, y = points[s]
            ax.plot([lo, hi], [lo, hi], color="0.45", lw=0.8, zorder=1)
            if len(x) > DENSITY_ABOVE:
                dense.append(ax.hexbin(x, y, gridsize=45, extent=(lo, hi, lo, hi), mincnt=1,
                                       cmap="viridis", linewidths=0, zorder=2))
            else:
                size = 10 if len(x) <= 300 else 4
                ax.scatter(x, y, s=size, alpha=0.7, lw=0, color="C0", zorder=2)
            mae, r2, n = parity_stats(x, y)
            ax.text(0.04, 0.96, f"MAE {mae:.1f} meV/atom\n"
                    + (f"R$^2$ {r2:.3f}" if r2 is not None else "R$^2$ n/a") + f"\nn = {n}",
                    transform=ax.transAxes, va="top", ha="left", fontsize=7.5,
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8", "alpha": 0.9})
            ax.set_title(s.label)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal", adjustable="box")
        outer_labels(axes, "DFT Ehull (meV/atom)", "model Ehull (meV/atom)")
        if dense:
            top = max(float(h.get_array().max()) for h in dense)
            norm = LogNorm(vmin=1, vmax=max(top, 2.0))
            for h in dense:
                h.set_norm(norm)
            fig.colorbar(dense[0], ax=axes, shrink=0.5, aspect=30,
                         label="materials per hexagon")
        fig.suptitle(f"Ehull parity, {data.convention}")
    return fig


def _dof_bins(data: ConventionData, series: Sequence[Series]) -> list[tuple[int, str]]:
    return sorted({(r["dof_bin_order"], r["dof_bin"]) for s in series for r in data.errors[s]})


def error_vs_dof_figure(data: ConventionData, series: Sequence[Series]) -> Figure:
    """Box plots of the signed Ehull error (meV/atom) per DOF bin, one panel per model,
    shared y, with a legend of the markers."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bins = _dof_bins(data, series)
    with _style():
        fig, axes = panels(len(series))
        shared = axes[0] if axes else None
        for ax in axes[1:]:
            ax.sharey(shared)
        for ax, s in zip(axes, series, strict=True):
            groups: dict[tuple[int, str], list[float]] = {b: [] for b in bins}
            for r in data.errors[s]:
                groups[(r["dof_bin_order"], r["dof_bin"])].append(_MEV * r["e_above_hull_error"])
            keep = [b for b in bins if groups[b]]
            ax.axhline(0, color="0.45", lw=0.8)
            ax.boxplot([groups[b] for b in keep], tick_labels=[b[1] for b in keep],
                       showmeans=True, widths=0.6,
                       meanprops={"marker": "^", "markerfacecolor": "C2",
                                  "markeredgecolor": "C2", "markersize": 5},
                       medianprops={"color": "C1", "lw": 1.5},
                       flierprops={"marker": "o", "markersize": 3, "markerfacecolor": "none",
                                   "markeredgecolor": "0.4"})
            counts = ", ".join(str(len(groups[b])) for b in keep)
            ax.set_title(f"{s.label}\nmaterials per bin: {counts}", fontsize=8.5)
        outer_labels(axes, "DOF bin", "Ehull error, model - DFT (meV/atom)", ticks=False)
        for i, ax in enumerate(axes):
            ax.yaxis.set_tick_params(labelleft=i % min(len(axes), MAX_COLS) == 0)
        fig.legend(handles=[
            Patch(facecolor="none", edgecolor="black", label="box: quartiles (IQR)"),
            Line2D([], [], color="C1", lw=1.5, label="line: median"),
            Line2D([], [], color="C2", marker="^", ls="none", label="triangle: mean"),
            Line2D([], [], color="black", lw=0.8, label="whiskers: 1.5 IQR"),
            Line2D([], [], color="0.4", marker="o", markerfacecolor="none", ls="none",
                   label="circles: beyond"),
        ], loc="outside lower center", ncols=5 if len(axes) > 1 else 3, frameon=False)
        fig.suptitle(f"Signed Ehull error by DOF, {data.convention}")
    return fig


def frac_under_figure(data: ConventionData, series: Sequence[Series]) -> Figure:
    """Fraction of materials with underpredicted Ehull per DOF bin, one line per model."""
    with _style():
        fig, (ax,) = panels(1)
        bins = _dof_bins(data, series)
        position = {label: i for i, (_, label) in enumerate(bins)}
        for s, color in zip(series, colors(len(series)), strict=True):
            pooled = _pooled_fraction(data.grouped("all", s, "dof_bin"))
            ax.plot([position[g] for g in pooled], list(pooled.values()), marker="o", ms=4,
                    label=s.label, color=color)
        ax.axhline(0.5, color="0.45", lw=0.8, ls="--")
        ax.set_xticks(range(len(bins)), [label for _, label in bins])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("DOF bin")
        ax.set_ylabel("fraction underpredicted")
        ax.set_title(f"Ehull underpredicted, {data.convention} (dashed: half)")
        _legend_below(fig, len(series))
    return fig


def _pooled_fraction(rows: list[dict]) -> dict[str, float]:
    """Fraction underpredicted per group, pooled over the rows of each group (one per
    dataset): sum(n * fraction) / sum(n), in the rows' order."""
    n: dict[str, int] = {}
    under: dict[str, float] = {}
    for r in rows:
        g = r["group_value"]
        n[g] = n.get(g, 0) + r["n"]
        under[g] = under.get(g, 0.0) + r["n"] * r["frac_underpredicted"]
    return {g: under[g] / n[g] for g in n if n[g]}


def near_hull_hist_figure(data: ConventionData, series: Sequence[Series],
                          near_hull_mev: float) -> Figure | None:
    """Histogram of the signed Ehull error (meV/atom) of near-hull materials, models
    overlaid; None when no material is near the hull."""
    values = {s: [_MEV * r["e_above_hull_error"] for r in data.errors[s] if r["near_hull"]]
              for s in series}
    if not any(values.values()):
        return None
    everything = [v for vs in values.values() for v in vs]
    lo, hi = min(everything), max(everything)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    edges = [lo + (hi - lo) * i / 20 for i in range(21)]
    with _style():
        fig, (ax,) = panels(1)
        for (s, vs), color in zip(values.items(), colors(len(values)), strict=True):
            if vs:
                ax.hist(vs, bins=edges, histtype="step", lw=1.3, color=color,
                        label=f"{s.label} (n = {len(vs)})")
        ax.axvline(0, color="0.45", lw=0.8)
        ax.set_xlabel("Ehull error, model - DFT (meV/atom)")
        ax.set_ylabel("materials")
        ax.set_title(f"Near hull (DFT Ehull < {near_hull_mev:g} meV/atom), {data.convention}")
        _legend_below(fig, len(series))
    return fig


def _legend_below(fig: Figure, n: int) -> None:
    """One legend under the axes, in as many columns (at most 3) as fit the figure's width."""
    fig.canvas.draw()
    for ncols in range(min(n, 3), 0, -1):
        legend = fig.legend(loc="outside lower center", ncols=ncols, frameon=False)
        fig.canvas.draw()
        box = legend.get_window_extent(fig.canvas.get_renderer())
        if box.x0 >= fig.bbox.x0 and box.x1 <= fig.bbox.x1 or ncols == 1:
            return
        legend.remove()


def colors(n: int) -> list:
    """``n`` distinct colours, one per model, the same in every figure: matplotlib's tab10 up
    to 10 models, tab20 beyond (20 at most, then they repeat)."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def save(fig: Figure, out: Path, stem: str, caption: str) -> FigureFile:
    """Write ``stem.png`` (:data:`DPI`) and ``stem.svg`` into ``out``."""
    fig.savefig(out / f"{stem}.png", dpi=DPI)
    fig.savefig(out / f"{stem}.svg")
    n_panels = sum(1 for ax in fig.axes if ax.get_label() != "<colorbar>")
    return FigureFile(f"{stem}.png", caption, n_panels, f"{stem}.svg")
