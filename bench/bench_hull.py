"""Benchmark :func:`mliapdb.materials.hull.compute_hull` against pymatgen's ``PatchedPhaseDiagram``.

Workload: the 85,014 MP compositions of ``compositions/CritExam__Ef_{train,val,test}.csv``
(formation energy per atom, eV/atom) plus every element at 0 eV/atom, all in one dataset.
Both methods run in the same process on the same entries; the table gives wall-clock seconds
(the median of ``--repeat`` runs for compute_hull, one run for pymatgen: building the patched
diagram + ``get_e_above_hull`` and ``get_form_energy_per_atom`` for every entry) and the
largest absolute differences (eV/atom) from pymatgen. Exits with status 1 if any result differs
by more than 1e-6 eV/atom (or is NaN on one side only).

    python bench/bench_hull.py [--data DIR] [--limit N] [--repeat R]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.phase_diagram import PatchedPhaseDiagram, PDEntry, PhaseDiagram
from pymatgen.core import Composition

from mliapdb.config import shared_data_dir
from mliapdb.materials.hull import compute_hull

TOL = 1e-6
"""eV/atom: largest accepted difference from pymatgen."""

SPLITS = ("train", "val", "test")


def load_compositions(data: Path, limit: int | None) -> tuple[list[str], np.ndarray]:
    """Formulas and MP formation energies (eV/atom) of the CritExam__Ef splits, in order."""
    formulas: list[str] = []
    targets: list[float] = []
    for split in SPLITS:
        with open(data / "compositions" / f"CritExam__Ef_{split}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                formulas.append(row["formula"])
                targets.append(float(row["target"]))
    if limit is not None:
        formulas, targets = formulas[:limit], targets[:limit]
    return formulas, np.asarray(targets)


def run_pymatgen(entries: list[PDEntry]) -> tuple[np.ndarray, np.ndarray, list[int], Any]:
    """Exact pymatgen e_above_hull and e_form (eV/atom) of every entry.

    ``PatchedPhaseDiagram`` builds patches only for chemical systems holding an entry with a
    negative formation energy; for an entry that no patch covers (positive formation energy
    in such a system) it silently falls back to an approximate SLSQP decomposition. Those
    entries get pymatgen's exact ``PhaseDiagram`` over the entries of their own chemical system
    instead (the hull-relevant ones: the patched diagram's ``qhull_entries``, i.e. the
    elemental references and every negative-formation-energy entry, plus the entry itself).

    Returns:
        e_above_hull, e_form, indices of the uncovered entries, the PatchedPhaseDiagram.
    """
    ppd = PatchedPhaseDiagram(entries)
    e_hull = np.full(len(entries), np.nan)
    uncovered: list[int] = []
    for i, entry in enumerate(entries):
        try:
            ppd.get_pd_for_entry(entry)
        except ValueError:
            uncovered.append(i)
            continue
        e_hull[i] = ppd.get_e_above_hull(entry)
    by_space: dict[frozenset, list] = defaultdict(list)
    for entry, space in zip(ppd.qhull_entries, ppd._qhull_spaces, strict=True):
        by_space[space].append(entry)
    for i in uncovered:
        space = sorted(entries[i].elements)
        sub = [
            e
            for size in range(1, len(space) + 1)
            for subset in combinations(space, size)
            for e in by_space.get(frozenset(subset), [])
        ]
        e_hull[i] = PhaseDiagram([*sub, entries[i]]).get_e_above_hull(entries[i])
    e_form = np.array([ppd.get_form_energy_per_atom(entry) for entry in entries])
    return e_hull, e_form, uncovered, ppd


def max_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Largest |a - b| where both are finite, and the number of entries NaN on one side only."""
    both = np.isfinite(a) & np.isfinite(b)
    diff = float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0
    return diff, int((np.isfinite(a) != np.isfinite(b)).sum())


def machine() -> str:
    """One line describing the machine (CPU count, platform, Python, processor)."""
    return (
        f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="first N compositions only")
    parser.add_argument("--repeat", type=int, default=3, help="compute_hull runs (median)")
    parser.add_argument("--show", type=int, default=5, help="list the N largest differences")
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    warnings.filterwarnings("ignore")

    t0 = time.perf_counter()
    formulas, targets = load_compositions(data, args.limit)
    comps = [Composition(f) for f in formulas]
    elements = sorted({el.symbol for c in comps for el in c.elements})
    comps += [Composition(el) for el in elements]
    energies = np.concatenate([targets, np.zeros(len(elements))])  # eV/atom
    amounts = [c.get_el_amt_dict() for c in comps]
    entries = [PDEntry(c, e * c.num_atoms) for c, e in zip(comps, energies, strict=True)]
    n = len(entries)
    print(
        f"{len(formulas)} compositions + {len(elements)} elements = {n} entries "
        f"(loaded in {time.perf_counter() - t0:.1f} s from {data})",
        flush=True,
    )

    times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        result = compute_hull(amounts, energies)
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)
    print(f"compute_hull: {', '.join(f'{t:.2f}' for t in times)} s", flush=True)

    t0 = time.perf_counter()
    ref_hull, ref_form, uncovered, ppd = run_pymatgen(entries)
    t_ref = time.perf_counter() - t0
    print(
        f"PatchedPhaseDiagram: {t_ref:.2f} s ({len(uncovered)} entries covered by no patch: "
        "exact PhaseDiagram of their own chemical system)",
        flush=True,
    )
    # what PatchedPhaseDiagram alone returns for them (SLSQP), for the record (not timed)
    slsqp = np.array([ppd.get_e_above_hull(entries[i]) for i in uncovered])
    d_slsqp = float(np.abs(slsqp - ref_hull[uncovered]).max()) if uncovered else 0.0
    n_slsqp = int((np.abs(slsqp - ref_hull[uncovered]) > TOL).sum()) if uncovered else 0

    d_hull, nan_hull = max_diff(result.e_above_hull, ref_hull)
    d_form, nan_form = max_diff(result.e_form_per_atom, ref_form)
    n_stable = int((result.e_above_hull == 0).sum())
    print()
    print(
        "| method | entries | seconds | speedup | max abs diff e_above_hull | max abs diff e_form |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| pymatgen PatchedPhaseDiagram (*) | {n} | {t_ref:.2f} | 1.0 | reference | reference |")
    print(
        f"| mliapdb.materials.hull.compute_hull | {n} | {t_ours:.2f} | {t_ref / t_ours:.1f} | "
        f"{d_hull:.1e} | {d_form:.1e} |"
    )
    print()
    print(
        f"(*) + exact PhaseDiagram for the {len(uncovered)} entries no patch covers; "
        f"PatchedPhaseDiagram's own SLSQP answer for them is off by up to {d_slsqp:.1e} "
        f"eV/atom ({n_slsqp} entries above {TOL:g})"
    )
    print(f"stable (e_above_hull == 0): {n_stable}; NaN on one side only: {nan_hull + nan_form}")
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    diff = np.abs(np.nan_to_num(result.e_above_hull, nan=np.inf) - np.nan_to_num(ref_hull))
    worst = [i for i in np.argsort(-diff)[: args.show] if diff[i] > 1e-9]
    if worst:
        print("largest e_above_hull differences (eV/atom):")
        for i in worst:
            print(
                f"  {comps[i].reduced_formula}: compute_hull {result.e_above_hull[i]:.9f}, "
                f"pymatgen {ref_hull[i]:.9f} (e_form {result.e_form_per_atom[i]:.6f})"
            )
    ok = d_hull <= TOL and d_form <= TOL and nan_hull == 0 and nan_form == 0
    print("OK" if ok else f"FAIL: results differ from pymatgen by more than {TOL} eV/atom")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
