"""The study's four claims, evaluated on Ehull error rows with bootstrap intervals.

The claims (of the withdrawn 2025 study) for one model, convention and set of materials:

- (a) Ehull is systematically underpredicted: mean signed error (model - DFT) < 0 and the
  fraction of materials with model Ehull < DFT Ehull > 0.5.
- (b) the MAE exceeds :data:`MAE_CLAIM_MEV` meV/atom.
- (c) the MAE at DOF > :data:`HIGH_DOF` exceeds :data:`HIGH_DOF_MAE_CLAIM_MEV` meV/atom and
  the MAE at DOF <= :data:`HIGH_DOF`.
- (d) near-hull materials (DFT Ehull below the near-hull threshold) are underpredicted, as
  in (a).

Each verdict reads ``yes`` or ``no`` only where the 95 % percentile-bootstrap interval
(:func:`mliapdb.analysis.fair.bootstrap_means`, default seed) lies on one side and at least
``n_min`` materials count (:data:`mliapdb.analysis.fair.N_MIN`), else ``inconclusive``; ``not
determined`` where a claim has no materials at all. Errors are in eV/atom; statements
print meV/atom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HIGH_DOF = 40
"""Claim (c): DOF > HIGH_DOF is "high DOF"."""
MAE_CLAIM_MEV = 30.0
"""Claim (b), meV/atom."""
HIGH_DOF_MAE_CLAIM_MEV = 40.0
"""Claim (c), meV/atom."""
CI_LEVEL = 0.95
"""Confidence level of the claims' intervals."""
KEYS = ("a", "b", "c", "d")
TITLES = {
    "a": "Ehull systematically underpredicted",
    "b": f"MAE > {MAE_CLAIM_MEV:g} meV/atom",
    "c": f"MAE at DOF > {HIGH_DOF} above {HIGH_DOF_MAE_CLAIM_MEV:g} meV/atom and above the "
         f"MAE at DOF <= {HIGH_DOF}",
    "d": "near-hull materials underpredicted",
}


@dataclass(frozen=True)
class Claim:
    """One claim's verdict: ``key`` (a-d), ``verdict`` (yes / no / inconclusive / not
    determined), ``n`` materials it rests on, the headline ``value`` (meV/atom: mean
    signed error for a and d, MAE for b and c) with its interval ``lo``..``hi``, and the
    ``statement`` with every number."""

    key: str
    verdict: str
    n: int
    value: float | None
    lo: float | None
    hi: float | None
    statement: str

    @property
    def title(self) -> str:
        return TITLES[self.key]


def mev(x: float | None) -> str:
    """eV/atom -> meV/atom, one decimal."""
    if x is None or math.isnan(x):
        return ""
    text = f"{1000 * x:.1f}"
    return "0.0" if text == "-0.0" else text


def frac(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.3f}"


def interval(values: Sequence[float] | np.ndarray, columns) -> list[tuple[float, float]]:
    """95 % percentile-bootstrap intervals (default seed) of the means of ``columns``
    (functions of the values array)."""
    from mliapdb.analysis.fair import DEFAULT_SEED, bootstrap_means

    e = np.asarray(values, dtype=float)
    bounds = bootstrap_means(np.column_stack([f(e) for f in columns]), CI_LEVEL, DEFAULT_SEED)
    return [(float(lo), float(hi)) for lo, hi in bounds]


def _ci(lo: float, hi: float, as_mev: bool = True) -> str:
    f = mev if as_mev else frac
    return f"[{f(lo)}, {f(hi)}]"


def verdict(n: int, yes: bool, no: bool, n_min: int) -> str:
    """yes / no from an interval that excludes the other side, else inconclusive; fewer than
    ``n_min`` materials: inconclusive."""
    if n < n_min:
        return f"inconclusive (n = {n} < {n_min})"
    return "yes" if yes else "no" if no else "inconclusive"


def _under(key: str, errors: np.ndarray, n_min: int) -> Claim:
    if not len(errors):
        return Claim(key, "not determined", 0, None, None, None, "not determined (none)")
    (m_lo, m_hi), (f_lo, f_hi) = interval(errors, [lambda x: x, lambda x: x < 0])
    v = verdict(len(errors), m_hi < 0 and f_lo > 0.5, m_lo >= 0 or f_hi <= 0.5, n_min)
    mean = float(errors.mean())
    text = (f"{v} (mean signed error {mev(mean)} meV/atom {_ci(m_lo, m_hi)}, fraction "
            f"underpredicted {frac(float(np.mean(errors < 0)))} {_ci(f_lo, f_hi, False)}, "
            f"n = {len(errors)})")
    return Claim(key, v.split(" (")[0], len(errors), 1000 * mean, 1000 * m_lo, 1000 * m_hi,
                 text)


def evaluate(errors: Sequence[float], dof: Sequence[int], near_hull: Sequence[bool],
             n_min: int | None = None) -> list[Claim]:
    """Claims (a)-(d) of the materials given by their Ehull errors (eV/atom), DOF and
    near-hull flags (one entry per material)."""
    from mliapdb.analysis.fair import N_MIN

    n_min = N_MIN if n_min is None else n_min
    e = np.asarray(errors, dtype=float)
    d = np.asarray(dof, dtype=float)
    near = np.asarray(near_hull, dtype=bool)
    if not len(e):
        return [Claim(k, "not determined", 0, None, None, None, "not determined (none)")
                for k in KEYS]
    out = [_under("a", e, n_min)]
    ((lo, hi),) = interval(e, [np.abs])
    mae = float(np.abs(e).mean())
    v = verdict(len(e), 1000 * lo > MAE_CLAIM_MEV, 1000 * hi < MAE_CLAIM_MEV, n_min)
    out.append(Claim("b", v.split(" (")[0], len(e), 1000 * mae, 1000 * lo, 1000 * hi,
                     f"{v} (MAE {mev(mae)} meV/atom {_ci(lo, hi)}, n = {len(e)})"))
    high, low = e[d > HIGH_DOF], e[d <= HIGH_DOF]
    if not len(high) or not len(low):
        missing = f"DOF > {HIGH_DOF}" if not len(high) else f"DOF <= {HIGH_DOF}"
        out.append(Claim("c", "not determined", min(len(high), len(low)), None, None, None,
                         f"not determined (no materials with {missing})"))
    else:
        ((h_lo, h_hi),) = interval(high, [np.abs])
        ((l_lo, l_hi),) = interval(low, [np.abs])
        limit = HIGH_DOF_MAE_CLAIM_MEV / 1000
        v = verdict(min(len(high), len(low)), h_lo > limit and h_lo > l_hi,
                    h_hi < limit or h_hi < l_lo, n_min)
        h_mae, l_mae = float(np.abs(high).mean()), float(np.abs(low).mean())
        out.append(Claim(
            "c", v.split(" (")[0], min(len(high), len(low)), 1000 * h_mae, 1000 * h_lo,
            1000 * h_hi,
            f"{v} (MAE {mev(h_mae)} meV/atom at DOF > {HIGH_DOF}, n = {len(high)}; "
            f"{mev(l_mae)} meV/atom at DOF <= {HIGH_DOF}, n = {len(low)}; intervals "
            f"{_ci(h_lo, h_hi)} and {_ci(l_lo, l_hi)})"))
    out.append(_under("d", e[near], n_min))
    return out
