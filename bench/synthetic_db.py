"""A synthetic mliapdb database with the Materials Project's shape, for benchmarks of the views.

:func:`generate` writes a real mliapdb DuckDB file (created by
``mliapdb.store.database.connect``, so the migrations and views are those of this code)
holding, in dataset ``mp``:

- ``mp_materials`` / ``dft_entries``: ``n_materials`` entries. Number of elements about 1 %
  unary, 20 % binary, 45 % ternary, 27 % quaternary, 7 % five or more; chemical systems drawn
  from an element pool weighted like MP (O in about 40 % of the materials, then Li, Mn, Fe...),
  several materials per system (polymorphs, other stoichiometries), and every element of every
  system has at least one pure-element entry (complete systems). ``nsites`` is lognormal
  (1-200, median about 20). DFT energies (MP2020-corrected, eV/atom) are elemental chemical
  potentials (-1.5 to -9 eV/atom) plus a formation energy (mostly negative, deeper for
  electronegativity differences) chosen so that about ``on_hull_fraction`` of the entries lie
  on the DFT hull and the rest have a lognormal Ehull (median 40 meV/atom). Raw energies get
  MP2020-like anion and +U corrections (``correction_mp2020``, eV per cell).
- ``symmetry_analyses`` at the default tolerance (0.1 A, moyopy): space groups weighted like
  MP (P2_1/c, P-1, Fm-3m, Pnma, C2/m, P1, R-3m, ...; high symmetry for small cells), crystal
  system, symbol and point group from ``space_groups``, ``lattice_dof`` from the crystal
  family, a heavy-tailed ``wyckoff_dof`` (more free coordinates for big, low-symmetry cells).
- ``dft_hull``: computed by :func:`mliapdb.materials.dft_hull.rebuild_dft_hull`
  (``mliapdb.materials.hull``).
- ``models``: ``n_models`` rows, energy conventions alternating ``raw`` / ``mp2020_corrected``.
- ``calculations``: one ``relax`` row per material and model (status ``ok`` about 97 %,
  ``not_converged`` 2 %, ``failed`` 1 %, failures likelier for many degrees of freedom) and,
  for the first ``n_single_point_models`` models, one ``single_point`` row per material. Model
  energies (eV/atom, in the model's own convention) = DFT + model bias + per-element bias +
  Student-t noise whose scale grows with the DOF; relaxed energies lie below the single point
  by a relaxation gain. Space group after relaxation: kept, lowered, raised or changed.

Structures are small placeholder JSON objects (the views never read them), and the
``wyckoff_orbits`` table stays empty. Everything is drawn with numpy and inserted through Arrow
tables: 150,000 materials x 9 models take a few minutes on 2 cores.

    python bench/synthetic_db.py --out PATH [--materials 150000] [--models 9] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

DATASET = "mp"
SYMPREC = 0.1
"""Angstrom: the database default tolerance (db_settings ``default_symprec``)."""
METHOD = "moyopy"

NELEMENTS_SHARE: dict[int, float] = {
    1: 0.01, 2: 0.20, 3: 0.45, 4: 0.27, 5: 0.055, 6: 0.012, 7: 0.003,
}  # fmt: skip
"""Share of the materials with k elements (MP: ~1 % unary, 20 % binary, 45 % ternary, ...)."""

MATERIALS_PER_SYSTEM: dict[int, float] = {2: 9.0, 3: 3.5, 4: 1.7, 5: 1.3, 6: 1.1, 7: 1.0}
"""Mean number of materials per chemical system with k elements (before dropping empty ones)."""

ELEMENT_WEIGHTS: dict[str, float] = {
    "O": 40, "Li": 17, "F": 9, "Mn": 11, "Fe": 10, "Co": 9, "Ni": 9, "Na": 8, "Mg": 8, "P": 8,
    "S": 8, "H": 8, "Si": 6, "V": 7, "Cu": 7, "N": 7, "Cr": 6, "Ti": 6, "C": 6, "K": 6,
    "Zn": 5, "Al": 5, "Ca": 5, "Ba": 5, "Sr": 5, "B": 5, "Cl": 5, "Se": 4, "Sb": 4, "Sn": 4,
    "Ge": 4, "Mo": 4, "Te": 3, "Ga": 3, "In": 3, "Bi": 3, "As": 3, "W": 3, "Nb": 3, "Zr": 3,
    "Y": 3, "La": 3, "Rb": 3, "Cs": 3, "Ag": 3, "Pb": 2, "Ta": 2, "Hf": 2, "Sc": 2, "Ce": 2,
    "Pr": 2, "Nd": 2, "Sm": 2, "Eu": 2, "Gd": 2, "Tb": 2, "Dy": 2, "Ho": 2, "Er": 2, "Tm": 2,
    "Yb": 2, "Lu": 2, "Au": 2, "Pt": 2, "Pd": 2, "Rh": 2, "Ru": 2, "Ir": 2, "Hg": 2, "Cd": 2,
    "Tl": 2, "Br": 2, "I": 2, "U": 2, "Be": 1, "Os": 1, "Re": 1, "Th": 1, "Np": 0.7,
    "Pu": 0.7, "Tc": 0.5, "Ac": 0.3, "Pa": 0.3, "Xe": 0.2, "Kr": 0.1, "Ar": 0.1, "Ne": 0.05,
    "He": 0.05,
}  # fmt: skip
"""Relative frequency of each element in MP materials (O in ~40 %, Li ~17 %, ...)."""

ANION_CORRECTION: dict[str, float] = {
    "O": -0.687, "S": -0.503, "F": -0.462, "Cl": -0.614, "N": -0.361, "H": -0.179,
    "Se": -0.472, "Te": -0.422, "Br": -0.534, "I": -0.379,
}  # fmt: skip
"""eV per anion atom: MP2020-like anion corrections, applied in compounds only."""

U_CORRECTION: dict[str, float] = {
    "Co": -1.638, "Cr": -1.999, "Fe": -2.256, "Mn": -1.668, "Mo": -3.202, "Ni": -2.541,
    "V": -1.7, "W": -4.66,
}  # fmt: skip
"""eV per metal atom: MP2020-like +U corrections, applied in oxides and fluorides."""

SPACEGROUP_WEIGHTS: dict[int, float] = {
    14: 12.0, 2: 10.5, 225: 9.0, 62: 8.5, 12: 8.0, 1: 7.0, 166: 6.5, 194: 5.5, 15: 5.0,
    221: 4.5, 139: 4.5, 63: 4.0, 123: 3.5, 8: 3.0, 11: 3.0, 164: 2.8, 191: 2.5, 216: 2.5,
    227: 2.3, 4: 2.0, 9: 1.8, 65: 1.8, 71: 1.6, 38: 1.5, 187: 1.4, 6: 1.3, 5: 1.3, 160: 1.3,
    148: 1.2, 186: 1.2, 141: 1.1, 129: 1.0, 140: 1.0, 136: 0.9, 229: 0.9, 59: 0.9, 61: 0.8,
    33: 0.8, 19: 0.7, 13: 0.7, 10: 0.6, 7: 0.6, 167: 0.6, 189: 0.5, 176: 0.5, 74: 0.5,
    36: 0.5, 31: 0.5, 99: 0.4, 115: 0.4, 119: 0.4, 146: 0.4, 147: 0.4, 122: 0.3, 155: 0.3,
    156: 0.3, 162: 0.3, 173: 0.3, 193: 0.3, 215: 0.3, 163: 0.2, 165: 0.2, 182: 0.2, 185: 0.2,
    198: 0.2, 204: 0.2, 205: 0.2, 206: 0.2, 217: 0.2, 223: 0.2, 230: 0.1, 224: 0.1,
}  # fmt: skip
"""Relative frequency of the common space groups in MP (thousands of materials, roughly);
every other group gets ``SPACEGROUP_BASELINE``."""

SPACEGROUP_BASELINE = 0.03

PLACEHOLDER_STRUCTURE = json.dumps(
    {"@module": "pymatgen.core.structure", "@class": "Structure", "synthetic": True}
)
"""Stored instead of a real structure (keeps the file small; no view reads structures)."""


@dataclass(frozen=True)
class ModelSpec:
    """A synthetic MLIAP: its energy convention and error model (eV/atom)."""

    name: str
    family: str
    energy_convention: str  # "raw" | "mp2020_corrected"
    bias: float  # eV/atom, constant offset of every energy
    element_bias_scale: float  # eV/atom, std of the per-element offsets (x-weighted)
    noise: float  # eV/atom, scale of the Student-t noise at DOF 0 (grows with the DOF)
    symmetry_change_rate: float  # share of relaxations whose space group changes


FAMILIES = ("chgnet", "sevennet", "mace", "mattersim", "orb", "eqv2", "grace", "hienet", "nequip")


def model_specs(n_models: int, rng: np.random.Generator) -> list[ModelSpec]:
    """``n_models`` synthetic models: conventions alternate raw / mp2020_corrected; biases,
    per-element bias scales and noise levels spread from good to poor models."""
    specs = []
    for i in range(n_models):
        family = FAMILIES[i % len(FAMILIES)]
        specs.append(
            ModelSpec(
                name=f"synth-{family}" + (f"-{i // len(FAMILIES)}" if i >= len(FAMILIES) else ""),
                family=family,
                energy_convention="raw" if i % 2 == 0 else "mp2020_corrected",
                bias=float(rng.uniform(-0.04, 0.02)),
                element_bias_scale=float(rng.uniform(0.005, 0.03)),
                noise=float(rng.uniform(0.012, 0.05)),
                symmetry_change_rate=float(rng.uniform(0.05, 0.25)),
            )
        )
    return specs


# --- materials -------------------------------------------------------------------------------


@dataclass
class Materials:
    """The drawn materials (arrays of length n; ``amounts`` is (n, n_elements), per cell)."""

    elements: list[str]  # element symbols, column order of ``amounts``
    amounts: np.ndarray  # (n, n_el) int: atoms of each element in the cell
    nelements: np.ndarray  # (n,)
    nsites: np.ndarray  # (n,)


def _weighted_sample_sets(
    weights: np.ndarray, k: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` weighted samples of ``k`` distinct indices (Gumbel top-k), each row sorted."""
    keys = np.log(weights)[None, :] + rng.gumbel(size=(n, len(weights)))
    return np.sort(np.argpartition(-keys, k - 1, axis=1)[:, :k], axis=1)


def draw_materials(n: int, rng: np.random.Generator) -> Materials:
    """Compositions of ``n`` materials: chemical systems, stoichiometries, cell sizes.

    Every element that occurs gets at least one pure-element material (complete systems).
    """
    elements = list(ELEMENT_WEIGHTS)
    weights = np.array([ELEMENT_WEIGHTS[e] for e in elements], dtype=float)
    n_el = len(elements)
    ks = np.array(sorted(NELEMENTS_SHARE))
    share = np.array([NELEMENTS_SHARE[k] for k in ks])
    counts = rng.multinomial(n, share / share.sum())
    n_unary = int(counts[0])

    systems_of: list[np.ndarray] = []  # per material: element indices
    for k, n_k in zip(ks[1:], counts[1:], strict=True):
        if n_k == 0:
            continue
        n_sys = max(1, int(round(n_k / MATERIALS_PER_SYSTEM[int(k)])))
        cand = _weighted_sample_sets(weights, int(k), 3 * n_sys, rng)
        cand = np.unique(cand, axis=0)
        cand = cand[rng.permutation(len(cand))[:n_sys]]
        # popular systems hold many materials (Li-Mn-O...): lognormal weights x element weights
        sys_w = np.exp(rng.normal(0.0, 1.0, len(cand))) * np.prod(weights[cand], axis=1) ** 0.3
        assign = rng.choice(len(cand), size=int(n_k), p=sys_w / sys_w.sum())
        systems_of.extend(cand[assign])

    used = np.unique(np.concatenate(systems_of)) if systems_of else np.arange(0)
    # unaries: one per used element, the rest spread by element weight (polymorphs)
    if len(used) > n_unary:
        n_unary = len(used)
    extra = rng.multinomial(n_unary - len(used), weights[used] / weights[used].sum())
    unary_el = np.repeat(used, 1 + extra)
    n_total = len(unary_el) + len(systems_of)

    amounts = np.zeros((n_total, n_el), dtype=np.int64)
    nelements = np.empty(n_total, dtype=np.int64)
    nsites = np.empty(n_total, dtype=np.int64)
    # unary cells: 1-32 atoms, median ~4
    u = len(unary_el)
    u_sites = np.clip(np.round(np.exp(rng.normal(np.log(4), 0.9, u))), 1, 64).astype(np.int64)
    amounts[np.arange(u), unary_el] = u_sites
    nelements[:u] = 1
    nsites[:u] = u_sites

    # compounds: reduced stoichiometry (1-8 per element, anions larger), then formula units
    # so that nsites follows a lognormal with median ~20 (capped at 200)
    anion = np.array([e in ANION_CORRECTION for e in elements])
    for row, system in enumerate(systems_of, start=u):
        k = len(system)
        stoich = 1 + rng.geometric(0.55, k) - 1
        stoich = np.where(anion[system], stoich + rng.integers(0, 4, k), stoich)
        stoich = np.minimum(stoich, 12)
        g = np.gcd.reduce(stoich)
        stoich //= g
        per_fu = int(stoich.sum())
        target = float(np.exp(rng.normal(np.log(20), 0.8)))
        z = max(1, int(round(target / per_fu)))
        while z > 1 and z * per_fu > 200:
            z -= 1
        amounts[row, system] = stoich * z
        nelements[row] = k
        nsites[row] = z * per_fu
    perm = rng.permutation(n_total)
    return Materials(elements, amounts[perm], nelements[perm], nsites[perm])


def _electronegativities(elements: list[str]) -> np.ndarray:
    import warnings

    from pymatgen.core import Element

    out = []
    for e in elements:
        with warnings.catch_warnings():  # noble gases have no Pauling electronegativity
            warnings.simplefilter("ignore")
            x = Element(e).X
        out.append(x if np.isfinite(x) else 1.5)
    return np.array(out)


def _composition_dicts(mat: Materials) -> list[dict[str, float]]:
    rows, cols = np.nonzero(mat.amounts)
    vals = mat.amounts[rows, cols].astype(float).tolist()
    starts = np.searchsorted(rows, np.arange(len(mat.nsites) + 1)).tolist()
    names = [mat.elements[c] for c in cols.tolist()]
    return [
        dict(zip(names[starts[i] : starts[i + 1]], vals[starts[i] : starts[i + 1]], strict=True))
        for i in range(len(mat.nsites))
    ]


def _ehull_targets(n: int, rng: np.random.Generator) -> np.ndarray:
    """eV/atom: lognormal energies above the hull, median 40 meV/atom, at most 3 eV/atom."""
    return np.minimum(np.exp(rng.normal(np.log(0.04), 1.1, n)), 3.0)


def draw_dft_energies(
    mat: Materials,
    comps: list[dict[str, float]],
    rng: np.random.Generator,
    on_hull_fraction: float = 0.30,
    log=None,
) -> np.ndarray:
    """MP2020-corrected DFT energies (eV/atom) with about ``on_hull_fraction`` of the entries
    on the hull and a lognormal Ehull (median 40 meV/atom) for the others.

    A first draw (elemental potentials + formation energies deepening with the
    electronegativity spread) fixes the hull; entries above it are then moved to exactly
    ``hull + target`` (which leaves the hull unchanged), and entries are added to or removed
    from the hull until the on-hull share is reached.
    """
    from mliapdb.materials.hull import compute_hull

    log = log or (lambda *_: None)
    n = len(mat.nsites)
    x = mat.amounts / mat.nsites[:, None]
    mu = rng.uniform(-8.0, -1.5, len(mat.elements))
    chi = _electronegativities(mat.elements)
    present = mat.amounts > 0
    chi_max = np.where(present, chi[None, :], -np.inf).max(axis=1)
    chi_min = np.where(present, chi[None, :], np.inf).min(axis=1)
    spread = np.where(mat.nelements > 1, chi_max - chi_min, 0.0)
    k = mat.nelements
    shape = np.where(k > 1, (1 - (x**2).sum(axis=1)) * k / np.maximum(k - 1, 1), 0.0)
    depth = -(0.15 + 0.8 * spread) * np.exp(rng.normal(0, 0.3, n))
    e_form = depth * shape + rng.normal(0, 0.12, n) * (k > 1)
    unary = k == 1
    e_form[unary] = _ehull_targets(int(unary.sum()), rng) * (rng.random(int(unary.sum())) < 0.8)
    e = x @ mu + e_form

    protected = np.zeros(n, dtype=bool)  # elemental references (lowest unary per element)
    el_of_unary = np.where(unary, present.argmax(axis=1), -1)
    for j in np.unique(el_of_unary[unary]):
        idx = np.flatnonzero(el_of_unary == j)
        protected[idx[np.argmin(e[idx])]] = True

    for _ in range(8):
        h = compute_hull(comps, e).e_above_hull
        on = h == 0
        frac = on.mean()
        log(f"  on the DFT hull: {frac:.1%}")
        if abs(frac - on_hull_fraction) < 0.01:
            break
        if frac > on_hull_fraction:  # lift some vertices above the hull without them
            cand = np.flatnonzero(on & ~protected)
            m = min(len(cand), int((frac - on_hull_fraction) * n * 2.0))
            pick = rng.choice(cand, m, replace=False)
            lifted = e.copy()
            lifted[pick] += 50.0  # far above any hull: no vertex
            h_wo = compute_hull(comps, lifted).e_above_hull
            e[pick] = lifted[pick] - h_wo[pick] + _ehull_targets(m, rng)
        else:  # put some entries above the hull exactly onto it
            cand = np.flatnonzero(~on)
            m = min(len(cand), int((on_hull_fraction - frac) * n))
            pick = rng.choice(cand, m, replace=False)
            e[pick] -= h[pick]
    h = compute_hull(comps, e).e_above_hull
    above = h > 0
    e[above] += _ehull_targets(int(above.sum()), rng) - h[above]
    return e


def mp2020_corrections(mat: Materials) -> np.ndarray:
    """MP2020-like correction (eV per cell, <= 0): anion corrections for compounds, +U
    corrections for the listed metals in oxides and fluorides."""
    idx = {e: j for j, e in enumerate(mat.elements)}
    corr = np.zeros(len(mat.nsites))
    compound = mat.nelements > 1
    for el, c in ANION_CORRECTION.items():
        corr += np.where(compound, mat.amounts[:, idx[el]] * c, 0.0)
    ox_fl = (mat.amounts[:, idx["O"]] > 0) | (mat.amounts[:, idx["F"]] > 0)
    for el, c in U_CORRECTION.items():
        corr += np.where(compound & ox_fl, mat.amounts[:, idx[el]] * c, 0.0)
    return corr


# --- symmetry --------------------------------------------------------------------------------


def draw_symmetry(
    nsites: np.ndarray, nelements: np.ndarray, pg_order: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Space group numbers (1-230) and Wyckoff DOF of each material.

    Space groups follow ``SPACEGROUP_WEIGHTS``, tilted towards high symmetry for small cells
    (unaries and few-site cells are mostly cubic/hexagonal) and low symmetry for big ones. The
    Wyckoff DOF is Poisson with mean ~ 1.3 nsites / point-group order (x lognormal noise),
    clipped to 3 nsites.
    """
    base = np.full(230, SPACEGROUP_BASELINE)
    for num, w in SPACEGROUP_WEIGHTS.items():
        base[num - 1] = w
    order = pg_order.astype(float)  # (230,)
    sg = np.empty(len(nsites), dtype=np.int64)
    for size in np.unique(nsites):
        for unary in (True, False):
            idx = np.flatnonzero((nsites == size) & ((nelements == 1) == unary))
            if not len(idx):
                continue
            w = base * np.exp(-size * order / 48.0 / 40.0)
            if unary:  # elements: cubic, hexagonal, rhombohedral close packings mostly
                w = w * (order >= 12) + 1e-12
            sg[idx] = 1 + rng.choice(230, len(idx), p=w / w.sum())
    mean = 1.3 * nsites / order[sg - 1] * np.exp(rng.normal(0, 0.6, len(nsites)))
    wdof = np.minimum(rng.poisson(mean), 3 * nsites)
    return sg, wdof


# --- writing ---------------------------------------------------------------------------------


def _insert(con, table: str, data: dict[str, object]) -> int:
    """Insert the columns of ``data`` (name -> array or list) into ``table`` through Arrow."""
    tbl = pa.table(data)
    con.register("_synthetic_rows", tbl)
    try:
        cols = ", ".join(tbl.column_names)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _synthetic_rows")
    finally:
        con.unregister("_synthetic_rows")
    return tbl.num_rows


def _formula(counts: dict[str, float], chi: dict[str, float]) -> str:
    """Formula string with elements by electronegativity (amounts as integers, 1 omitted)."""
    parts = []
    for el in sorted(counts, key=lambda e: (chi[e], e)):
        a = int(counts[el])
        parts.append(el if a == 1 else f"{el}{a}")
    return "".join(parts)


def _build_model_hulls(con) -> int | None:
    """Build every stale model hull, then the stored error rows; None if this code has no
    model hulls."""
    try:
        from mliapdb.analysis.model_hull import rebuild_model_hulls
    except ImportError:
        return None
    try:  # the rows above were written through Arrow: give them generation markers
        from mliapdb.store.generations import bump_all
    except ImportError:
        pass
    else:
        con.execute("BEGIN")
        bump_all(con)
        con.execute("COMMIT")
    n = len(rebuild_model_hulls(con))
    try:
        from mliapdb.analysis.error_rows import rebuild_error_rows
    except ImportError:
        return n
    rebuild_error_rows(con)
    return n


@dataclass(frozen=True)
class GenerateReport:
    """What :func:`generate` wrote, and how long it took (seconds)."""

    path: Path
    n_materials: int
    n_models: int
    n_calculations: int
    seconds: float
    size_bytes: int
    on_hull_fraction: float
    median_ehull_above: float  # eV/atom, among the entries above the hull


def generate(
    path: str | Path,
    n_materials: int = 150_000,
    n_models: int = 9,
    seed: int = 0,
    n_single_point_models: int = 3,
    on_hull_fraction: float = 0.30,
    overwrite: bool = False,
    build_model_hulls: bool = True,
    log=print,
) -> GenerateReport:
    """Write a synthetic mliapdb database at ``path`` (see the module docstring).

    Args:
        path: DuckDB file to create; it must not exist unless ``overwrite``.
        n_materials: approximate number of materials (exact unless more unaries are needed
            to give every element of every chemical system its reference).
        n_models: models, each with one relaxation per material.
        seed: numpy seed: the same arguments give the same database (timestamps aside).
        n_single_point_models: the first models also get one single point per material.
        on_hull_fraction: share of the DFT entries on the DFT hull.
        overwrite: replace an existing file.
        build_model_hulls: build every model hull (``mliapdb.analysis.model_hull``), so that the
            model-hull conventions have rows.
        log: called with progress lines (``None`` for silence).
    """
    from mliapdb.compute.relaxation import RelaxSettings
    from mliapdb.materials.dft_hull import rebuild_dft_hull
    from mliapdb.store.database import connect, now, transaction

    log = log or (lambda *_: None)
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True / --overwrite)")
        path.unlink()
        Path(str(path) + ".wal").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)

    mat = draw_materials(n_materials, rng)
    n = len(mat.nsites)
    comps = _composition_dicts(mat)
    e_corr = draw_dft_energies(mat, comps, rng, on_hull_fraction, log)  # eV/atom
    corr = mp2020_corrections(mat)  # eV/cell
    energy_corrected = e_corr * mat.nsites
    energy_raw = energy_corrected - corr
    log(f"drew {n} materials and DFT energies ({time.perf_counter() - t_start:.1f} s)")

    ids = np.sort(rng.choice(np.arange(1, 3_000_001), n, replace=False))
    material_id = [f"mp-{i}" for i in ids.tolist()]
    chi_arr = _electronegativities(mat.elements)
    chi = dict(zip(mat.elements, chi_arr.tolist(), strict=True))
    formula_full = [_formula(c, chi) for c in comps]
    # reduced formula: divide by the gcd of the amounts
    g = np.gcd.reduce(mat.amounts, axis=1)
    formula = [
        _formula({el: a / gi for el, a in c.items()}, chi)
        for c, gi in zip(comps, g.tolist(), strict=True)
    ]
    chemsys = ["-".join(sorted(c)) for c in comps]
    composition = [json.dumps(c, sort_keys=True) for c in comps]
    fingerprint = [
        hashlib.sha256(f"{mid}:{er!r}".encode()).hexdigest()
        for mid, er in zip(material_id, energy_raw.tolist(), strict=True)
    ]

    con = connect(path, create=True)
    try:
        sg_table = con.execute(
            "SELECT number, symbol, point_group_order, crystal_system FROM space_groups "
            "ORDER BY number"
        ).fetchall()
        sg_symbol = np.array([r[1] for r in sg_table], dtype=object)
        pg_order = np.array([r[2] for r in sg_table])
        sg_system = np.array([r[3] for r in sg_table], dtype=object)
        sg, wdof = draw_symmetry(mat.nsites, mat.nelements, pg_order, rng)
        from mliapdb.materials.symmetry import lattice_dof_for

        lat = {s: lattice_dof_for(s) for s in set(sg_system.tolist())}
        crystal_system = sg_system[sg - 1]
        lattice_dof = np.array([lat[s] for s in crystal_system.tolist()])
        family = {"triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t",
                  "trigonal": "h", "hexagonal": "h", "cubic": "c"}  # fmt: skip
        mult = {"P": 1, "C": 2, "A": 2, "B": 2, "I": 2, "F": 4, "R": 3}
        symbols = sg_symbol[sg - 1].tolist()
        pearson = [
            f"{family[cs]}{'C' if s[0] in 'AB' else s[0]}{ns * mult[s[0]]}"
            for cs, s, ns in zip(crystal_system.tolist(), symbols, mat.nsites.tolist(), strict=True)
        ]
        proto = [
            f"{f}_{p}_{num}_synthetic"
            for f, p, num in zip(formula, pearson, sg.tolist(), strict=True)
        ]
        stamp = now()
        with transaction(con):
            _insert(con, "source_files", {
                "sha256": [hashlib.sha256(f"synthetic-{seed}".encode()).hexdigest()],
                "path": [f"synthetic(seed={seed}, materials={n_materials})"],
                "dataset": [DATASET], "n_entries": pa.array([n], pa.int32()),
                "ingested_at": [stamp],
            })  # fmt: skip
            _insert(con, "mp_materials", {
                "dataset": [DATASET] * n, "material_id": material_id, "formula": formula,
                "formula_full": formula_full, "chemsys": chemsys,
                "nelements": mat.nelements, "nsites": mat.nsites, "composition": composition,
                "structure": [PLACEHOLDER_STRUCTURE] * n, "fingerprint": fingerprint,
            })  # fmt: skip
            has_u = np.zeros(n, dtype=bool)
            idx = {e: j for j, e in enumerate(mat.elements)}
            ox_fl = (mat.amounts[:, idx["O"]] > 0) | (mat.amounts[:, idx["F"]] > 0)
            for el in U_CORRECTION:
                has_u |= (mat.amounts[:, idx[el]] > 0) & ox_fl & (mat.nelements > 1)
            sha = hashlib.sha256(f"synthetic-{seed}".encode()).hexdigest()
            _insert(con, "dft_entries", {
                "dataset": [DATASET] * n, "material_id": material_id,
                "entry_id": [f"{m}-GGA" for m in material_id],
                "task_id": [f"mp-{i + 3_000_000}" for i in ids.tolist()],
                "n_atoms": mat.nsites, "energy_raw": energy_raw, "correction_mp2020": corr,
                "energy_corrected": energy_corrected, "correction_in_source": corr,
                "compat_status": ["ok"] * n,
                "run_type": np.where(has_u, "GGA+U", "GGA").tolist(),
                "is_hubbard": has_u, "source_file": ["synthetic"] * n,
                "source_sha256": [sha] * n,
            })  # fmt: skip
            _insert(con, "symmetry_analyses", {
                "dataset": [DATASET] * n, "material_id": material_id,
                "symprec": np.full(n, SYMPREC), "method": [METHOD] * n,
                "library_version": ["synthetic"] * n, "spacegroup_number": sg,
                "spacegroup_symbol": symbols, "crystal_system": crystal_system.tolist(),
                "pearson_symbol": pearson, "protostructure_label": proto,
                "lattice_dof": lattice_dof, "wyckoff_dof": wdof, "dof": lattice_dof + wdof,
            })  # fmt: skip
            t0 = time.perf_counter()
            rebuild_dft_hull(con, DATASET)
            t1 = time.perf_counter()
            log(f"materials, entries, symmetry and DFT hull written "
                f"(hull {t1 - t0:.1f} s; {t1 - t_start:.1f} s)")  # fmt: skip

        specs = model_specs(n_models, rng)
        with transaction(con):
            _insert(con, "models", {
                "name": [s.name for s in specs], "family": [s.family for s in specs],
                "version": ["synthetic"] * len(specs),
                "checkpoint": [f"synthetic://{s.name}" for s in specs],
                "training_set": ["MPtrj"] * len(specs), "functional": ["PBE"] * len(specs),
                "energy_convention": [s.energy_convention for s in specs],
                "registered_at": [stamp] * len(specs),
            })  # fmt: skip

        dof = lattice_dof + wdof
        x = mat.amounts / mat.nsites[:, None]
        e_raw_pa = energy_raw / mat.nsites
        n_calc = 0
        relax = RelaxSettings()
        single = RelaxSettings.for_kind("single_point")
        by_order: dict[int, np.ndarray] = {}
        for o in np.unique(pg_order).tolist():
            by_order[o] = np.flatnonzero(pg_order == o) + 1
        orders = np.array(sorted(by_order))
        for m_i, spec in enumerate(specs):
            t0 = time.perf_counter()
            base = e_raw_pa if spec.energy_convention == "raw" else e_corr
            el_bias = rng.normal(0, spec.element_bias_scale, len(mat.elements))
            scale = spec.noise * np.sqrt(1 + dof / 10.0)
            e_relaxed = base + spec.bias + x @ el_bias + scale * rng.standard_t(4, n) / np.sqrt(2)
            gain = rng.exponential(0.01 * (1 + dof / 20.0))
            e_sp = e_relaxed + gain
            # status: failures likelier with many degrees of freedom
            p_fail = 0.008 * (1 + dof / 40.0)
            p_nc = 0.016 * (1 + dof / 30.0)
            u = rng.random(n)
            status = np.where(
                u < p_fail, "failed", np.where(u < p_fail + p_nc, "not_converged", "ok")
            )
            ok = status == "ok"
            nc = status == "not_converged"
            failed = status == "failed"
            n_steps = np.where(
                nc, relax.max_steps,
                np.minimum(np.round(np.exp(rng.normal(np.log(40), 0.8, n)) * (1 + dof / 50)),
                           relax.max_steps - 1),
            ).astype(np.int64)  # fmt: skip
            n_steps = np.where(failed, rng.integers(0, 50, n), n_steps)
            max_force = np.where(
                ok, rng.uniform(0.005, relax.fmax, n), rng.uniform(relax.fmax, 2.0, n)
            )
            # symmetry after relaxation
            change = rng.random(n) < spec.symmetry_change_rate * (1 + dof / 60.0) / 1.2
            kind = rng.choice(3, n, p=[0.6, 0.25, 0.15])  # lowered, raised, changed
            cur_order = pg_order[sg - 1]
            sg_after = sg.copy()
            for o_i, o in enumerate(orders.tolist()):
                for kd, sel_orders in ((0, orders[:o_i]), (1, orders[o_i + 1 :]), (2, [o])):
                    idx_c = np.flatnonzero(change & (kind == kd) & (cur_order == o))
                    if not len(idx_c) or not len(sel_orders):
                        continue
                    pool = np.concatenate([by_order[int(t)] for t in sel_orders])
                    sg_after[idx_c] = rng.choice(pool, len(idx_c))
            rmsd = np.exp(rng.normal(np.log(0.02), 1.0, n)) * np.where(sg_after != sg, 4.0, 1.0)
            usable = ok | nc
            engine = "torch-sim" if m_i % 3 == 2 else "ase"
            settings_json = json.dumps(relax.to_dict(), sort_keys=True)
            with transaction(con):
                n_calc += _insert(con, "calculations", {
                    "dataset": [DATASET] * n, "material_id": material_id,
                    "model": [spec.name] * n, "settings_hash": [relax.settings_hash()] * n,
                    "settings": [settings_json] * n, "status": status.tolist(),
                    "error": pa.array(
                        np.where(failed, "relaxation failed: synthetic divergence", None).tolist(),
                        pa.string()),
                    "n_atoms": mat.nsites,
                    "energy_single_point": pa.array(e_sp * mat.nsites, mask=failed),
                    "energy_relaxed": pa.array(e_relaxed * mat.nsites, mask=~usable),
                    "n_steps": n_steps, "converged": ok,
                    "max_force": pa.array(max_force, mask=failed),
                    "relaxed_structure": pa.array(
                        np.where(usable, PLACEHOLDER_STRUCTURE, None).tolist(), pa.string()),
                    "spacegroup_after": pa.array(sg_after, mask=~usable),
                    "wall_time_s": 0.004 * mat.nsites * (n_steps + 1) ** 0.9,
                    "device": ["cpu" if engine == "ase" else "cuda"] * n,
                    "created_at": [stamp] * n, "calc_kind": ["relax"] * n,
                    "engine": [engine] * n, "spacegroup_before": sg,
                    "rmsd": pa.array(rmsd, mask=~usable),
                    "volume_ratio": pa.array(
                        1 + rng.normal(spec.bias * 0.5, 0.02, n), mask=~usable),
                })  # fmt: skip
                if m_i < n_single_point_models:
                    sp_fail = rng.random(n) < 0.002
                    sp_force = np.exp(rng.normal(np.log(0.1), 1.0, n))
                    n_calc += _insert(con, "calculations", {
                        "dataset": [DATASET] * n, "material_id": material_id,
                        "model": [spec.name] * n,
                        "settings_hash": [single.settings_hash()] * n,
                        "settings": [json.dumps(single.to_dict(), sort_keys=True)] * n,
                        "status": np.where(sp_fail, "failed", "ok").tolist(),
                        "error": pa.array(
                            np.where(sp_fail, "single point failed: synthetic", None).tolist(),
                            pa.string()),
                        "n_atoms": mat.nsites,
                        "energy_single_point": pa.array(e_sp * mat.nsites, mask=sp_fail),
                        "n_steps": np.zeros(n, dtype=np.int64),
                        "converged": ~sp_fail & (sp_force <= single.fmax),
                        "max_force": pa.array(sp_force, mask=sp_fail),
                        "wall_time_s": 0.004 * mat.nsites,
                        "device": ["cpu"] * n, "created_at": [stamp] * n,
                        "calc_kind": ["single_point"] * n, "engine": ["ase"] * n,
                        "spacegroup_before": sg,
                    })  # fmt: skip
            log(f"model {spec.name} ({spec.energy_convention}): calculations written "
                f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        if build_model_hulls:
            t0 = time.perf_counter()
            n_built = _build_model_hulls(con)
            if n_built is not None:
                log(f"{n_built} model hulls built ({time.perf_counter() - t0:.1f} s)")
        con.execute("CHECKPOINT")
        hull = con.execute(
            "SELECT avg(CASE WHEN e_above_hull = 0 THEN 1.0 ELSE 0.0 END), "
            "median(e_above_hull) FILTER (WHERE e_above_hull > 0) FROM dft_hull"
        ).fetchone()
    finally:
        con.close()
    seconds = time.perf_counter() - t_start
    report = GenerateReport(
        path=path, n_materials=n, n_models=len(specs), n_calculations=n_calc, seconds=seconds,
        size_bytes=path.stat().st_size, on_hull_fraction=float(hull[0]),
        median_ehull_above=float(hull[1]),
    )  # fmt: skip
    log(
        f"wrote {path}: {n} materials, {len(specs)} models, {n_calc} calculations, "
        f"{report.size_bytes / 2**20:.0f} MiB in {seconds:.1f} s; on the DFT hull "
        f"{report.on_hull_fraction:.1%}, median Ehull above it "
        f"{report.median_ehull_above * 1000:.0f} meV/atom"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="DuckDB file to write")
    parser.add_argument("--materials", type=int, default=150_000)
    parser.add_argument("--models", type=int, default=9)
    parser.add_argument("--single-point-models", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument(
        "--no-model-hulls", action="store_true", help="leave the model hulls unbuilt"
    )
    args = parser.parse_args(argv)
    generate(
        args.out, args.materials, args.models, args.seed, args.single_point_models,
        overwrite=args.overwrite, build_model_hulls=not args.no_model_hulls,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
