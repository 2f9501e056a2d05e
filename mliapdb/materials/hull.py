"""Exact convex hulls per chemical system: formation energy and energy above hull.

:func:`compute_hull` reproduces pymatgen's ``PhaseDiagram`` (``get_form_energy_per_atom`` and
``get_e_above_hull``) for every entry of a dataset in one call, two orders of magnitude faster
than ``PatchedPhaseDiagram`` on MP-scale data (see ``docs/benchmarks.md``).

Method. Energies are shifted to formation energies (elements at 0) and entries are grouped by
chemical system; systems are solved from the smallest to the largest. The hull of a system
``S`` restricted to a face (a subsystem ``T``) is the hull of ``T``, so the only points of the
subsystems that can matter for ``S`` are the vertices already found on the hull of their own
system. The hull energy of an entry of ``S`` is then the linear program

    h(x) = min sum_j w_j e_j   over w >= 0 with sum_j w_j x_j = x

over those vertices plus the entries of ``S`` with a negative formation energy (``x_j`` atomic
fractions, ``e_j`` formation energies, eV/atom). The pure elements are a feasible starting basis,
so a dense primal simplex (Dantzig's rule, Bland's rule if it stalls) runs vectorised over
thousands of such small LPs at once; each optimum is certified by its dual (all reduced costs
>= -1e-11, so ``h`` is exact to 1e-11 eV/atom). Systems with many entries and at most five
elements use one scipy qhull lower hull instead (the hull energy is the maximum over the lower
facets' planes). Anything not certified falls back to qhull, then to HiGHS.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from scipy.spatial import ConvexHull, QhullError

__all__ = ["HullResult", "compute_hull"]

ON_HULL_TOL = 1e-9
"""eV/atom: |e_above_hull| up to this is reported as exactly 0 (floating-point noise)."""

_LOWER_NORMAL_TOL = 1e-9
"""Energy component below which a unit facet normal counts as pointing down (lower facet)."""

_ENTER_TOL = 1e-11
"""eV/atom: a column enters the simplex basis only if its reduced cost is below -_ENTER_TOL,
which bounds how far a certified optimum can be from the true hull energy."""

_PIVOT_TOL = 1e-9
"""Smallest pivot element accepted in the simplex ratio test."""

_MAX_ITER = 500
"""Simplex iterations before giving up on a problem (it then falls back to qhull/HiGHS)."""

_BLAND_AFTER = 100
"""Iteration after which the simplex uses Bland's rule (no cycling on degenerate problems)."""

_CHUNK_FLOATS = 300_000
"""Size (float64 values) of the padded candidate array of one vectorised simplex batch."""

_QHULL_MIN_QUERIES = 64
"""Systems with at least this many entries (and few elements) use one qhull hull instead."""

_QHULL_MAX_ELEMENTS = 5
"""qhull is used only up to this many elements (its cost explodes with the dimension)."""

_LP_GAP_TOL = 1e-9
"""eV/atom: largest accepted gap between a HiGHS primal value and its dual lower bound."""


@dataclass(frozen=True)
class HullResult:
    """Per-entry hull quantities (same order as the input) and the elemental references.

    Attributes:
        e_form_per_atom: eV/atom, energy per atom minus ``e_ref_per_atom``.
        e_above_hull: eV/atom, >= 0; 0 for entries on the hull (|noise| <= 1e-9 is set to 0).
        e_ref_per_atom: eV/atom, ``sum_i x_i * mu_i`` over the entry's atomic fractions ``x_i``.
        elemental_refs: element -> lowest energy per atom (eV/atom) among the pure-element
            entries of that element (entries with a non-finite energy are ignored).

    An entry containing an element without any pure-element entry has NaN in all three arrays;
    an entry with a non-finite energy has NaN ``e_form_per_atom`` and ``e_above_hull``. Such
    entries take no part in any hull.
    """

    e_form_per_atom: np.ndarray
    e_above_hull: np.ndarray
    e_ref_per_atom: np.ndarray
    elemental_refs: dict[str, float]


# a hull problem: (element columns of the system, candidate entries, queried entries)
_Problem = tuple[np.ndarray, np.ndarray, np.ndarray]


def compute_hull(
    compositions: Sequence[Mapping[str, float]],
    energies_per_atom: Sequence[float] | np.ndarray,
) -> HullResult:
    """Formation energy and energy above hull (eV/atom) of every entry.

    Args:
        compositions: ``compositions[i]`` maps element symbol -> amount (any normalisation,
            e.g. ``Composition.get_el_amt_dict()``); amounts must be >= 0, zeros are ignored.
        energies_per_atom: total energy per atom of each entry, eV/atom.

    Returns:
        :class:`HullResult`. The hull of entry ``i`` is built from all entries whose elements are
        a subset of the elements of entry ``i`` (what ``PhaseDiagram`` over those entries
        gives); elemental references are the lowest-energy pure-element entries. Entries with an
        element lacking a pure-element entry, or with a non-finite energy, get NaN.

    Raises:
        ValueError: lengths differ, or a composition is empty or has a negative/non-finite
            amount.
    """
    energies = np.asarray(energies_per_atom, dtype=float).reshape(-1)
    n = len(compositions)
    if energies.shape[0] != n:
        raise ValueError(f"{n} compositions but {energies.shape[0]} energies")
    fracs, symbols = _atomic_fractions(compositions)  # (n + 1, n_el): last row is padding
    present = fracs[:n] > 0
    n_el = present.sum(axis=1)

    # --- elemental references: lowest finite energy among the pure-element entries ----------
    finite = np.isfinite(energies)
    mu = np.full(len(symbols), np.nan)
    ref_entry = np.full(len(symbols), -1)
    pure = np.flatnonzero((n_el == 1) & finite)
    if len(pure):
        el = present[pure].argmax(axis=1)
        order = np.lexsort((energies[pure], el))  # by element, then energy (stable)
        first = order[np.unique(el[order], return_index=True)[1]]
        mu[el[first]] = energies[pure[first]]
        ref_entry[el[first]] = pure[first]
    has_ref = np.isfinite(mu)
    referenced = ~present[:, ~has_ref].any(axis=1)
    valid = finite & referenced

    e_ref = np.full(n, np.nan)
    e_ref[referenced] = _row_sums(fracs[:n] * np.where(has_ref, mu, 0.0))[referenced]
    e_form = np.where(valid, energies - e_ref, np.nan)
    e_hull = np.full(n, np.nan)

    # --- group valid entries by chemical system --------------------------------------------
    valid_idx = np.flatnonzero(valid)
    keys = np.packbits(present[valid_idx], axis=1)
    keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, group = np.unique(keys, return_inverse=True)
    group = group.ravel()
    order = np.lexsort((group, n_el[valid_idx]))  # by size, then system
    sorted_idx, sorted_group = valid_idx[order], group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])[: len(order)]
    owns = np.split(sorted_idx, starts[1:]) if len(order) else []
    _, el_cols = np.nonzero(present[sorted_idx[starts]])
    el_cols_list = el_cols.tolist()
    el_bounds = np.r_[0, np.cumsum(n_el[sorted_idx[starts]])].tolist()
    levels: dict[int, list[tuple[tuple[int, ...], np.ndarray]]] = defaultdict(list)
    for g, own in enumerate(owns):
        system = tuple(el_cols_list[el_bounds[g] : el_bounds[g + 1]])
        levels[len(system)].append((system, own))

    # --- solve the systems from small to large ----------------------------------------------
    e_pad = np.append(e_form, np.inf)  # the padding row of fracs never enters a basis
    # hull vertices (entry indices) found in each system, used by all its supersets
    vertices: dict[tuple[int, ...], np.ndarray] = {
        (j,): ref_entry[j : j + 1] for j in np.flatnonzero(has_ref).tolist()
    }
    for k in sorted(levels):
        problems: list[_Problem] = []
        systems: list[tuple[int, ...]] = []
        for system, own in levels[k]:
            if k == 1:
                e_hull[own] = e_form[own]  # >= 0 by construction of the reference
                continue
            # the elements come first (subsets of size 1, in system order): a feasible basis
            sub = [
                vertices[t]
                for size in range(1, k)
                for t in combinations(system, size)
                if t in vertices
            ]
            cand = np.concatenate([*sub, own[e_form[own] < 0]])
            if len(cand) == k:  # only the elements: the hull is the plane Ef = 0
                e_hull[own] = e_form[own]
            else:
                problems.append((np.asarray(system), cand, own))
                systems.append(system)
        use_qhull = [
            k <= _QHULL_MAX_ELEMENTS and len(own) >= _QHULL_MIN_QUERIES for _, _, own in problems
        ]
        hulls = _hull_energy_simplex(
            fracs, e_pad, [prob for prob, q in zip(problems, use_qhull, strict=True) if not q]
        )[::-1]
        for system, (cols, cand, own), q in zip(systems, problems, use_qhull, strict=True):
            h = None if q else hulls.pop()
            if h is None or np.isnan(h).any():
                h = _hull_energy(fracs[cand][:, cols], e_form[cand], fracs[own][:, cols])
            ehull_own = e_form[own] - h
            e_hull[own] = ehull_own
            on_hull = own[(e_form[own] < 0) & (ehull_own <= ON_HULL_TOL)]
            if len(on_hull):
                vertices[system] = on_hull

    e_hull[np.abs(e_hull) <= ON_HULL_TOL] = 0.0
    return HullResult(
        e_form_per_atom=e_form,
        e_above_hull=e_hull,
        e_ref_per_atom=e_ref,
        elemental_refs={symbols[j]: float(mu[j]) for j in np.flatnonzero(has_ref).tolist()},
    )


def _atomic_fractions(compositions: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, list[str]]:
    """Atomic fractions (n + 1, n_elements) over the alphabetically sorted element symbols.

    The extra last row is all zeros (padding for the vectorised simplex).
    """
    amounts = [[(str(el), float(a)) for el, a in comp.items() if a != 0] for comp in compositions]
    symbols = sorted({el for items in amounts for el, _ in items})
    index = {el: j for j, el in enumerate(symbols)}
    fracs = np.zeros((len(amounts) + 1, len(symbols)))
    for i, items in enumerate(amounts):
        if not items:
            raise ValueError(f"composition {i} is empty: {dict(compositions[i])!r}")
        for el, a in items:
            if not (a > 0 and math.isfinite(a)):
                raise ValueError(f"composition {i} has an invalid amount {a!r} for {el}")
            fracs[i, index[el]] += a
    fracs[:-1] /= _row_sums(fracs[:-1])[:, None]
    return fracs, symbols


def _row_sums(values: np.ndarray) -> np.ndarray:
    """Sums of each row's non-zero values, added in column order one after the other: the
    same floating-point result whatever other columns (elements) the array has, so that the
    hull of a subset of the entries closed under subsystems equals, bit for bit, what the
    whole set gives for them (incremental rebuilds, :mod:`mliapdb.materials.chemsys`)."""
    rows, cols = np.nonzero(values)
    return np.bincount(rows, weights=values[rows, cols], minlength=values.shape[0])


def _hull_energy(cand_x: np.ndarray, cand_e: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Lower convex hull energy (eV/atom) of the candidates at the query compositions by qhull
    (HiGHS if qhull fails, is not self-consistent or the system has too many elements).

    Args:
        cand_x: (m, k) atomic fractions of the candidate points over the k elements of the
            system; the first k candidates are the pure elements in system order.
        cand_e: (m,) formation energies of the candidates, eV/atom.
        query_x: (q, k) atomic fractions of the compositions where the hull is evaluated.
    """
    h = None
    if cand_x.shape[1] <= _QHULL_MAX_ELEMENTS:
        try:
            h = _hull_energy_qhull(cand_x, cand_e, query_x)
        except QhullError:
            h = None
    if h is None:
        h = _hull_energy_lp(cand_x, cand_e, query_x)
    return h


def _hull_energy_qhull(
    cand_x: np.ndarray, cand_e: np.ndarray, query_x: np.ndarray
) -> np.ndarray | None:
    """Hull energy from the lower facets of a qhull convex hull; None if not self-consistent."""
    k = cand_x.shape[1]
    pts = np.empty((len(cand_e) + 1, k))
    pts[:-1, :-1] = cand_x[:, 1:]
    pts[:-1, -1] = cand_e
    # a point high above the centre makes the set full-dimensional (as in pymatgen)
    pts[-1, :-1] = 1.0 / k
    pts[-1, -1] = max(float(cand_e.max()), 0.0) + 1.0
    eq = ConvexHull(pts).equations  # unit normal (k) + offset: n.p + off <= 0 inside
    eq = eq[eq[:, k - 1] < -_LOWER_NORMAL_TOL]
    if len(eq) == 0:
        return None
    # plane of a lower facet: e = slopes . x + offset; the lower hull is their maximum
    slopes = -eq[:, : k - 1] / eq[:, k - 1 : k]
    offsets = -eq[:, k] / eq[:, k - 1]
    # self-check: no candidate may lie below the hull
    if (cand_e - (pts[:-1, :-1] @ slopes.T + offsets).max(axis=1)).min() < -ON_HULL_TOL:
        return None
    return (query_x[:, 1:] @ slopes.T + offsets).max(axis=1)


def _hull_energy_simplex(
    fracs: np.ndarray, e_pad: np.ndarray, problems: Sequence[_Problem]
) -> list[np.ndarray]:
    """Hull energies (eV/atom) of many problems, all with the same number of elements, by a
    vectorised simplex; NaN where no certified optimum was found.

    Args:
        fracs: (n + 1, n_elements) atomic fractions of all entries; the last row is zeros.
        e_pad: (n + 1,) formation energies (eV/atom) of all entries; the last one is +inf.
        problems: ``(cols, cand, own)``: element columns of the system, candidate entries (the
            pure elements first, in ``cols`` order) and the entries where the hull is wanted.
    """
    out = [np.full(len(own), np.nan) for _, _, own in problems]
    if not problems:
        return out
    k, pad = len(problems[0][0]), len(e_pad) - 1
    # pieces (problem, first query, end query), packed by candidate count into padded chunks
    pieces: list[tuple[int, int, int]] = []
    for p in sorted(range(len(problems)), key=lambda p: len(problems[p][1])):
        m, q = len(problems[p][1]), len(problems[p][2])
        step = max(1, _CHUNK_FLOATS // (m * k))
        pieces.extend((p, a, min(a + step, q)) for a in range(0, q, step))
    start = 0
    while start < len(pieces):
        stop, count = start, 0
        while stop < len(pieces):
            p, a, b = pieces[stop]
            if count and (count + b - a) * len(problems[p][1]) * k > _CHUNK_FLOATS:
                break
            count += b - a
            stop += 1
        m = len(problems[pieces[stop - 1][0]][1])
        cand = np.full((count, m), pad)
        cols = np.empty((count, k), dtype=np.intp)
        query = np.empty(count, dtype=np.intp)
        row = 0
        for p, a, b in pieces[start:stop]:
            p_cols, p_cand, p_own = problems[p]
            cand[row : row + b - a, : len(p_cand)] = p_cand
            cols[row : row + b - a] = p_cols
            query[row : row + b - a] = p_own[a:b]
            row += b - a
        h = _simplex(
            fracs[cand[:, :, None], cols[:, None, :]], e_pad[cand], fracs[query[:, None], cols]
        )
        row = 0
        for p, a, b in pieces[start:stop]:
            out[p][a:b] = h[row : row + b - a]
            row += b - a
        start = stop
    return out


def _simplex(cand_x: np.ndarray, cand_e: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Vectorised primal simplex for ``min e.w, w >= 0, sum_j w_j x_j = x`` (one LP per row).

    Args:
        cand_x: (P, m, k) candidate fractions; candidate i < k is the pure element i.
        cand_e: (P, m) candidate energies (eV/atom; +inf for padding).
        query_x: (P, k) compositions.

    Returns:
        (P,) optimal values, NaN where the optimum could not be certified.
    """
    n_prob, m, k = cand_x.shape
    out = np.full(n_prob, np.nan)
    basis = np.tile(np.arange(k), (n_prob, 1))  # the pure elements: w = x is feasible
    idx = np.arange(n_prob)
    x, e, c = query_x, cand_e, cand_x
    for it in range(_MAX_ITER + 1):
        rows = np.arange(len(idx))
        bmat = c[rows[:, None], basis]  # (p, k, k): row i = fractions of basic candidate i
        e_b = e[rows[:, None], basis]
        try:
            inv = np.linalg.inv(bmat)
        except np.linalg.LinAlgError:
            return out
        inv_t = np.swapaxes(inv, 1, 2)
        w = (inv_t @ x[..., None])[..., 0]  # weights of the basic candidates
        mu = (inv @ e_b[..., None])[..., 0]  # chemical potentials
        reduced = e - (c @ mu[..., None])[..., 0]
        bland = it >= _BLAND_AFTER
        enter = (reduced < -_ENTER_TOL).argmax(axis=1) if bland else reduced.argmin(axis=1)
        done = reduced[rows, enter] >= -_ENTER_TOL  # dual feasible: optimal
        ok = done & (w >= -1e-12).all(axis=1)
        out[idx[ok]] = (e_b[ok] * w[ok]).sum(axis=1)
        if it == _MAX_ITER or done.all():
            break
        d = (inv_t @ c[rows, enter][..., None])[..., 0]
        w = np.maximum(w, 0.0)
        pivot = d > _PIVOT_TOL
        ratio = np.where(pivot, w / np.where(pivot, d, 1.0), np.inf)
        if bland:  # smallest candidate index among the tied leaving variables
            leave = np.where(ratio <= ratio.min(axis=1, keepdims=True), basis, m).argmin(axis=1)
        else:
            leave = ratio.argmin(axis=1)
        keep = ~done & np.isfinite(ratio[rows, leave])
        basis[rows[keep], leave[keep]] = enter[keep]
        if not keep.all():
            idx, x, e, c, basis = idx[keep], x[keep], e[keep], c[keep], basis[keep]
    return out


def _hull_energy_lp(cand_x: np.ndarray, cand_e: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """Hull energies by HiGHS (slow path), one block-diagonal LP for all queries.

    The dual values (chemical potentials) bound each optimum from below; a gap above
    ``_LP_GAP_TOL`` between primal and dual is reported as a RuntimeError.
    """
    (m, k), q = cand_x.shape, len(query_x)
    j, el = np.nonzero(cand_x)
    blocks = np.arange(q)[:, None]
    a_eq = coo_matrix(
        (np.tile(cand_x[j, el], q), ((blocks * k + el).ravel(), (blocks * m + j).ravel())),
        shape=(q * k, q * m),
    ).tocsc()
    res = linprog(
        np.tile(cand_e, q),
        A_eq=a_eq,
        b_eq=query_x.ravel(),
        bounds=(0, None),
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.status != 0:
        raise RuntimeError(f"hull linear program failed: {res.message}")
    w = res.x.reshape(q, m)
    mu = res.eqlin.marginals.reshape(q, k)
    primal = w @ cand_e
    reduced = cand_e[None, :] - mu @ cand_x.T  # >= 0 for dual-feasible potentials
    dual = (mu * query_x).sum(axis=1) + np.minimum(reduced.min(axis=1), 0.0)
    if (np.abs(primal - dual) > _LP_GAP_TOL).any():
        raise RuntimeError("hull linear program: primal and dual values disagree")
    return primal
