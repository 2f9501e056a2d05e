"""Benchmark serial CHGNet relaxations on CPU: torch with 1 thread (mliapdb's default for
``ingest relax``) against torch's own default (one thread per core), same structures, same
process, same settings (FIRE + FrechetCellFilter, fmax 0.05 eV/A, 500 steps).

Workload: the N smallest compounds (>= 2 elements) of ``mp/Mn_O_Y_entries.json.gz``, DFT
structures as they are. Prints a table (threads, structures, steps, seconds, structures/s,
speedup) and the largest difference in relaxed energy between the two runs (eV/atom).

    python bench/bench_relax.py [--data DIR] [--n N] [--model chgnet-0.3.0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time

from mliapdb.config import shared_data_dir


def load_structures(data, n: int):
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(data / "mp" / "Mn_O_Y_entries.json.gz") as fh:
        entries = [ComputedStructureEntry.from_dict(d) for d in json.load(fh)]
    compounds = [e for e in entries if len(e.composition.elements) >= 2]
    compounds.sort(key=lambda e: (len(e.structure), e.entry_id))
    return [(e.entry_id, e.structure) for e in compounds[:n]]


def run(structures, calculator, settings, threads: int):
    import torch

    from mliapdb.compute.relaxation import relax_structure

    torch.set_num_threads(threads)
    start = time.perf_counter()
    results = [relax_structure(s, calculator, settings) for _, s in structures]
    return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=lambda p: __import__("pathlib").Path(p),
                        default=shared_data_dir())
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--model", default="chgnet-0.3.0")
    args = parser.parse_args(argv)

    import torch

    from mliapdb.compute.models import get_model_spec, make_calculator

    structures = load_structures(args.data, args.n)
    spec = get_model_spec(args.model)
    calculator = make_calculator(spec, device="cpu")
    settings = spec.relax_settings()
    default_threads = torch.get_num_threads()
    run(structures[:2], calculator, settings, 1)  # warm-up
    rows, energies = [], {}
    for threads in (default_threads, 1):
        seconds, results = run(structures, calculator, settings, threads)
        steps = sum(r.n_steps or 0 for r in results)
        energies[threads] = [
            (r.energy_relaxed / r.n_atoms) if r.energy_relaxed is not None else None
            for r in results
        ]
        rows.append((threads, len(results), steps, seconds))
    base = rows[0][3]
    print(f"model {args.model}, {len(structures)} Mn-O-Y compounds "
          f"({min(len(s) for _, s in structures)}-{max(len(s) for _, s in structures)} sites), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'torch threads':>13} {'structures':>10} {'steps':>6} {'seconds':>8} "
          f"{'struct/s':>8} {'speedup':>7}")
    for threads, n, steps, seconds in rows:
        print(f"{threads:>13} {n:>10} {steps:>6} {seconds:>8.1f} {n / seconds:>8.2f} "
              f"{base / seconds:>7.2f}")
    diffs = [abs(a - b) for a, b in zip(energies[default_threads], energies[1], strict=True)
             if a is not None and b is not None]
    print(f"max |relaxed energy difference| between runs: {max(diffs):.2e} eV/atom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
