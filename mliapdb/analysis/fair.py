"""Fair comparisons and uncertainty for the statistics queries (``--common``, ``--ci``,
``--seed``, repeatable ``--by`` with ``hubbard``): the per-row values are fetched from the
views and aggregated here with numpy (see docs/conventions.md, "Comparisons, intervals and
strata").

- ``--common``: only materials (dataset, material id) that every compared series (model x
  settings [x kind]) in the result counts; each row then states ``coverage`` = materials in
  the common set / materials any compared series counts (in that row's group).
- ``--ci LEVEL``: percentile bootstrap over materials within each output row (group): each
  row's values, ordered by (dataset, material id), are resampled with replacement
  :data:`N_BOOT` times with ``numpy.random.default_rng(seed)`` (a fresh generator per row, so
  a row's interval does not depend on the other rows, and rows of the same common materials
  are resampled in pairs), ``rng.integers(0, n, size=(N_BOOT, n))``; the interval is
  ``numpy.percentile`` (linear) at (1 - LEVEL) / 2 and (1 + LEVEL) / 2 of the resampled
  means.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

N_BOOT = 1000
"""Bootstrap resamples per row."""
DEFAULT_SEED = 20260101
"""Default bootstrap seed (``--seed``)."""
N_MIN = 30
"""Fewest materials for a claim to read yes or no (the report's claims)."""
_CHUNK_ELEMENTS = 4_000_000  # resample indices drawn per chunk (memory bound)

HUBBARD_SQL = ("CASE WHEN coalesce(dh.is_hubbard, dh.run_type = 'GGA+U') THEN 'GGA+U' "
               "ELSE 'GGA' END")
"""GGA vs GGA+U of a material's DFT entry (``dft_entries.is_hubbard``; ``run_type`` where
it is missing)."""


def with_hubbard(source: str) -> str:
    """``source`` (a relation with dataset, material_id) plus a ``hubbard`` column."""
    return (f"(SELECT r.*, {HUBBARD_SQL} AS hubbard FROM {source} AS r LEFT JOIN dft_entries "
            "AS dh ON dh.dataset = r.dataset AND dh.material_id = r.material_id)")


def check_level(level: float | None) -> None:
    from mliapdb.errors import MliapdbError

    if level is not None and not (0 < level < 1):
        raise MliapdbError(f"bad --ci {level:g} - give a confidence level between 0 and 1, "
                           "e.g. 0.95")


def bootstrap_means(values: np.ndarray, level: float, seed: int,
                    n_boot: int = N_BOOT) -> np.ndarray:
    """Percentile-bootstrap interval of the mean of each column of ``values`` (n x k):
    array k x 2 (lo, hi). See the module docstring for the exact method."""
    return bootstrap_many([values], level, seed, n_boot)[0]


def bootstrap_many(matrices: Sequence[np.ndarray], level: float, seed: int,
                   n_boot: int = N_BOOT) -> list[np.ndarray]:
    """:func:`bootstrap_means` of each matrix (n_i x k_i). Matrices of one length share the
    resample indices (each row's generator is seeded alike, so they would draw the same
    ones): per chunk of resamples, the indices become a counts matrix (``np.bincount``) and
    the resampled means one matrix product per matrix, which at 150k materials x 9 models
    under ``--common`` costs about one model's resampling."""
    mats = [np.asarray(m, dtype=float).reshape(len(m), -1) for m in matrices]
    out: list = [None] * len(mats)
    by_n: dict[int, list[int]] = {}
    for i, m in enumerate(mats):
        by_n.setdefault(m.shape[0], []).append(i)

    def one_length(n: int, which: list[int]) -> None:
        if n == 0:
            for i in which:
                out[i] = np.full((mats[i].shape[1], 2), np.nan)
            return
        rng = np.random.default_rng(seed)
        means = {i: np.empty((n_boot, mats[i].shape[1])) for i in which}
        columns = {i: np.ascontiguousarray(mats[i].T) for i in which}
        by_counts = sum(mats[i].shape[1] for i in which) > 4  # else gathering is cheaper
        chunk = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            idx = rng.integers(0, n, size=(m, n))
            if by_counts:
                idx += (np.arange(m) * n)[:, None]
                counts = np.bincount(idx.ravel(), minlength=m * n).reshape(m, n)
                counts = counts.astype(float)
                for i in which:
                    means[i][start:start + m] = counts @ mats[i] / n
            else:
                for i in which:
                    for j, col in enumerate(columns[i]):
                        means[i][start:start + m, j] = col[idx].mean(axis=1)
        for i in which:
            out[i] = np.percentile(means[i], [q, 100 - q], axis=0).T

    q = 100 * (1 - level) / 2
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(by_n), os.cpu_count() or 1) or 1) as pool:
        list(pool.map(lambda item: one_length(*item), by_n.items()))
    return out


def common_keys(series_of_row: Sequence, material_of_row: Sequence) -> set:
    """Materials every series (distinct values of ``series_of_row``) has a row of."""
    by: dict = {}
    for s, m in zip(series_of_row, material_of_row, strict=True):
        by.setdefault(s, set()).add(m)
    sets = list(by.values())
    return set.intersection(*sets) if sets else set()


def aggregate(
    rows: list[tuple], n_series: int, n_groups: int, stat_cells, ci_specs=(),
    level: float | None = None, seed: int = DEFAULT_SEED, common: bool = False,
    row_key=None,
) -> tuple[list[tuple], int, int]:
    """Group ``rows`` = (*series key [n_series], dataset, material_id, *group keys
    [n_groups], *values) by series and group and compute, per group, ``stat_cells(values)``
    (values: list of columns, numpy arrays) followed, with ``level``, by the lo/hi of each
    ``ci_specs`` entry ``(function(values) -> per-row array, scale)`` (bootstrap of
    its mean), and with ``common`` by the coverage "k/N". Returns (output rows sorted by
    ``row_key`` or by series and group, materials in common, materials in any series)."""
    keys_all = [(r[:n_series], (r[n_series], r[n_series + 1])) for r in rows]
    n_any = len({m for _, m in keys_all})
    n_common = n_any
    group_any: dict = {}
    if common:
        shared = common_keys([s for s, _ in keys_all], [m for _, m in keys_all])
        n_common = len(shared)
        for r in rows:
            g = r[n_series + 2:n_series + 2 + n_groups]
            group_any.setdefault(g, set()).add((r[n_series], r[n_series + 1]))
        rows = [r for r, (_, m) in zip(rows, keys_all, strict=True) if m in shared]
    groups: dict = {}
    for r in rows:
        s, g = r[:n_series], r[n_series + 2:n_series + 2 + n_groups]
        groups.setdefault((s, g), []).append(r)
    out, per_rows = [], []
    for (s, g), members in groups.items():
        members.sort(key=lambda r: (r[n_series], r[n_series + 1]))
        cols = list(zip(*[r[n_series + 2 + n_groups:] for r in members], strict=True))
        values = [np.array(c, dtype=object if c and isinstance(c[0], str) else float)
                  for c in cols]
        cells = list(stat_cells(values))
        if level is not None and ci_specs:
            per_rows.append(np.column_stack([np.asarray(f(values), dtype=float)
                                             for f, _ in ci_specs]))
        out.append((s, g, cells, len({(r[n_series], r[n_series + 1]) for r in members})))
    bounds = (bootstrap_many(per_rows, level, seed) if per_rows
              else [None] * len(out))
    done = []
    for (s, g, cells, in_group), b in zip(out, bounds, strict=True):
        if b is not None:
            for (_, scale), (lo, hi) in zip(ci_specs, b, strict=True):
                cells += [float(lo) * scale, float(hi) * scale]
        if common:
            cells.append(f"{in_group}/{len(group_any.get(g, ()))}")
        done.append((s, g, cells))
    out = done
    out.sort(key=row_key or (lambda t: (t[0], t[1])))
    return out, n_common, n_any


def mean_or_none(x: np.ndarray, scale: float = 1.0) -> float | None:
    """``scale`` times the mean of ``x`` (None when empty), at full precision."""
    return float(np.mean(x)) * scale if len(x) else None


def aggregate_coded(
    s_code: np.ndarray, m_code: np.ndarray, g_code: np.ndarray, values: list[np.ndarray],
    stat_cells, ci_specs=(), level: float | None = None, seed: int = DEFAULT_SEED,
    common: bool = False,
) -> tuple[list[tuple[int, int, int, list]], int, int]:
    """:func:`aggregate` over integer codes (series, material, group; rows sorted by series,
    group, material, one row per series and material): returns ([(series code, group code,
    first row index, cells)], materials in common, materials in any series)."""
    s_code, m_code, g_code = (np.asarray(a, dtype=np.int64) for a in (s_code, m_code, g_code))
    n_mat = int(m_code.max()) + 1 if len(m_code) else 0
    n_any = len(np.unique(m_code))
    n_common = n_any
    group_any = None
    keep = np.ones(len(m_code), dtype=bool)
    if common and len(m_code):
        n_series = len(np.unique(s_code))
        pairs = np.unique(s_code * n_mat + m_code)
        per_material = np.bincount(pairs % n_mat, minlength=n_mat)
        shared = per_material == n_series
        n_common = int(shared.sum())
        g_pairs = np.unique(g_code * n_mat + m_code)
        group_any = np.bincount(g_pairs // n_mat)
        keep = shared[m_code]
    idx = np.flatnonzero(keep)
    s_k, g_k = s_code[idx], g_code[idx]
    if len(idx):
        starts = np.flatnonzero(np.r_[True, (s_k[1:] != s_k[:-1]) | (g_k[1:] != g_k[:-1])])
        ends = np.r_[starts[1:], len(idx)]
    else:
        starts = ends = np.array([], dtype=np.int64)
    out, per_rows = [], []
    for a, b in zip(starts, ends, strict=True):
        rows = idx[a:b]
        v = [col[rows] for col in values]
        cells = list(stat_cells(v))
        if level is not None and ci_specs:
            per_rows.append(np.column_stack([np.asarray(f(v), dtype=float)
                                             for f, _ in ci_specs]))
        out.append((int(s_k[a]), int(g_k[a]), int(rows[0]), cells, b - a))
    bounds = bootstrap_many(per_rows, level, seed) if per_rows else [None] * len(out)
    done = []
    for (s, g, first, cells, in_group), bound in zip(out, bounds, strict=True):
        if bound is not None:
            for (_, scale), (lo, hi) in zip(ci_specs, bound, strict=True):
                cells += [float(lo) * scale, float(hi) * scale]
        if common:
            cells.append(f"{in_group}/{int(group_any[g])}")
        done.append((s, g, first, cells))
    return done, n_common, n_any


def compared_on(trained_with_u: bool | None) -> str:
    """The entries a model is compared on, by ``models.trained_with_u`` (False: trained
    without +U, so only entries MP computed without U)."""
    return ("GGA entries only (trained without +U)" if trained_with_u is False
            else "GGA and GGA+U entries")
