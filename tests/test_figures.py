"""The report's figures and HTML on the study's real data (the committed predictions of 11
models on every shared MP material, imported into a fresh database): 200 dpi PNG plus SVG, no
text over other text (extents measured on the Agg canvas), shared parity axes with MAE, R2
and n matching a direct computation, explained box-plot markers, a table of contents whose
every link lands; then the HTML looked at in headless Chromium over a real HTTP server on
127.0.0.1 (screenshot not blank, every image loaded, every anchor found)."""

from __future__ import annotations

import http.server
import itertools
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from mliapdb.analysis import figures
from mliapdb.analysis import report as rep
from mliapdb.config import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PREDICTIONS = REPO_ROOT / "docs" / "study" / "predictions.csv.gz"


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, data_dir: Path) -> Path:
    from mliapdb.analysis.study import build_database

    path = tmp_path_factory.mktemp("figures") / "study.duckdb"
    build_database(data_dir, PREDICTIONS, path, lambda _line: None)
    return path


@pytest.fixture(scope="module")
def single_point(study_db: Path, tmp_path_factory) -> rep.ReportResult:
    out = tmp_path_factory.mktemp("sp-report")
    return rep.build_report(study_db, out, kind="single-point", conventions=["dft-hull"])


def _texts(fig) -> list[tuple[str, object]]:
    """(label, window extent) of every text ``fig`` draws, after drawing it: titles, axis
    labels, the tick labels inside the view limits, annotations, the suptitle; each legend
    counts as one box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    texts += list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        texts += list(ax.texts)
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) or 1.0
            for tick in axis.get_major_ticks():
                if lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span:
                    texts += [tick.label1, tick.label2]
    unique = list({id(t): t for t in texts}.values())
    found = [(t.get_text()[:40], t.get_window_extent(renderer)) for t in unique
             if t.get_visible() and t.get_text().strip()]
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    found += [(f"legend {i}", lg.get_window_extent(renderer)) for i, lg in enumerate(legends)]
    return found


def overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of texts (and legends) whose extents overlap by more than a pixel, and texts that
    reach beyond the canvas (paired with "outside")."""
    boxes = _texts(fig)
    edge = fig.bbox
    bad = [(a, "outside") for a, b in boxes
           if b.x0 < edge.x0 - 1 or b.x1 > edge.x1 + 1 or b.y0 < edge.y0 - 1 or b.y1 > edge.y1 + 1]
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        if w > 1 and h > 1:
            bad.append((a, b))
    return bad


def _data(study_db: Path, kind: str = "single_point"):
    from mliapdb.store import database as db

    con = db.connect(study_db, read_only=True)
    try:
        series = rep._select_series(con, kind, None)
        return rep._load_convention(con, kind, "dft-hull", series), series
    finally:
        con.close()


def test_files_are_200_dpi_png_and_svg(single_point: rep.ReportResult) -> None:
    out = single_point.files[0].parent
    assert [f.name for f in single_point.figures] == [
        "parity_dft-hull.png", "ehull_error_vs_dof_dft-hull.png",
        "frac_under_vs_dof_dft-hull.png", "near_hull_hist_dft-hull.png"]
    n_models = 11
    assert [f.n_panels for f in single_point.figures] == [n_models, n_models, 1, 1]
    rows = -(-n_models // figures.MAX_COLS)
    height, width = imread(out / "parity_dft-hull.png").shape[:2]
    assert (height, width) == (round(figures.PANEL_SIZE[1] * rows * figures.DPI),
                               round(figures.PANEL_SIZE[0] * figures.MAX_COLS * figures.DPI))
    for f in single_point.figures:
        root = ET.parse(out / f.svg).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert (out / f.svg) in single_point.files and (out / f.name) in single_point.files


def test_no_text_overlaps_in_any_figure(study_db: Path) -> None:
    data, series = _data(study_db)
    made = {
        "parity": figures.parity_figure(data, series),
        "error vs dof": figures.error_vs_dof_figure(data, series),
        "frac under": figures.frac_under_figure(data, series),
        "near hull": figures.near_hull_hist_figure(data, series, 50.0),
        "parity, 2 models": figures.parity_figure(data, series[:2]),
        "error vs dof, 1 model": figures.error_vs_dof_figure(data, series[:1]),
    }
    assert {name: overlaps(fig) for name, fig in made.items()} == {name: [] for name in made}


def test_the_overlap_check_sees_overlaps(study_db: Path) -> None:
    """The check is not vacuous: a title moved onto the tick labels is caught."""
    data, series = _data(study_db)
    fig = figures.frac_under_figure(data, series[:2])
    ax = fig.axes[0]
    ax.set_xlabel("a long label placed over the ticks")
    ax.xaxis.set_label_coords(0.5, 0.0)
    assert overlaps(fig)


def test_parity_panels_share_axes_and_state_mae_r2_n(study_db: Path) -> None:
    data, series = _data(study_db)
    fig = figures.parity_figure(data, series)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len({ax.get_xlim() for ax in panels}) == len({ax.get_ylim() for ax in panels}) == 1
    for ax, s in zip(panels, series, strict=True):
        x = np.array([1000 * r["dft_e_above_hull"] for r in data.errors[s]])
        y = np.array([1000 * r["model_e_above_hull"] for r in data.errors[s]])
        mae = np.mean(np.abs(y - x))
        r2 = 1 - np.sum((y - x) ** 2) / np.sum((x - x.mean()) ** 2)
        (box,) = [t.get_text() for t in ax.texts if t.get_text().startswith("MAE")]
        assert box == f"MAE {mae:.1f} meV/atom\nR$^2$ {r2:.3f}\nn = {len(x)}"
        assert ax.get_title() == s.label


def test_many_points_become_a_density(study_db: Path, monkeypatch) -> None:
    data, series = _data(study_db)
    monkeypatch.setattr(figures, "DENSITY_ABOVE", 100)
    fig = figures.parity_figure(data, series[:3])
    from matplotlib.collections import PolyCollection

    hexes = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(hexes) == 3
    assert len({id(h.norm) for h in hexes}) == 1  # one colour scale for every panel
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert overlaps(fig) == []


def test_box_markers_are_explained(study_db: Path) -> None:
    data, series = _data(study_db)
    fig = figures.error_vs_dof_figure(data, series[:4])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "box: quartiles (IQR)", "line: median", "triangle: mean", "whiskers: 1.5 IQR",
        "circles: beyond"]
    panels = fig.axes
    assert len({ax.get_ylim() for ax in panels}) == 1


def test_report_has_contents_with_working_anchors(single_point: rep.ReportResult) -> None:
    out = single_point.files[0].parent
    html_text = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    ids = set(re.findall(r'id="([^"]+)"', html_text))
    links = re.findall(r'href="#([^"]+)"', html_text)
    assert len(links) > 10 and set(links) <= ids
    assert md.index("## Contents") < md.index("## Models")
    md_links = re.findall(r"\]\(#([^)]+)\)", md)
    assert md_links == [a for _, _, a in single_point.report.anchors()]
    assert "td,th{white-space:nowrap}" in html_text  # model names never wrap at hyphens


PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const links = [...document.querySelectorAll('a[href^="#"]')];
  const found = links.filter(a => document.getElementById(a.getAttribute("href").slice(1)));
  const p = document.createElement("pre");
  p.id = "probe";
  p.textContent = `images ${ok}/${imgs.length} anchors ${found.length}/${links.length}`;
  document.body.appendChild(p);
});
</script>"""


@pytest.fixture()
def served(single_point: rep.ReportResult, tmp_path: Path):
    """The report folder (plus a copy of report.html with a probe script) on 127.0.0.1."""
    site = tmp_path / "site"
    shutil.copytree(single_point.files[0].parent, site)
    page = (site / "report.html").read_text().replace("</body>", PROBE + "</body>")
    (site / "probe.html").write_text(page)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "Chromium is not installed: 'make install' installs it (Debian chromium)"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chrome-profile'}",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120)


def test_html_report_in_headless_chromium(served: str, single_point: rep.ReportResult,
                                          tmp_path: Path) -> None:
    dom = _chromium(tmp_path, "--dump-dom", f"{served}/probe.html")
    assert dom.returncode == 0, dom.stderr[-2000:]
    (probe,) = re.findall(r'<pre id="probe">([^<]*)</pre>', dom.stdout)
    n_images = len(single_point.figures)
    n_links = len(single_point.report.anchors()) + len(single_point.report.sections)
    assert probe == f"images {n_images}/{n_images} anchors {n_links}/{n_links}"
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600",
                     f"{served}/report.html")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 0.05  # text, tables, not a blank page
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005  # dark pixels: text is drawn
