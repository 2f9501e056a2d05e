"""Benchmark what the pipeline costs on top of the model: ``mliapdb ingest relax``'s
:func:`~mliapdb.compute.run.run_calculations` (DuckDB reads and one committed row per
material, structure JSON, single point, divergence guards, space group before and after,
RMSD, provenance) against the bare model calls on the same structures: an ASE calculator and
FIRE on a FrechetCellFilter, nothing else. Same model, settings, process and torch threads.

Workload: the N smallest compounds of ``mp/Mn_O_Y_entries.json.gz`` (as ``bench_relax``).
Each variant runs ``--repeat`` times alternately (fresh database each time); the table shows
the fastest run of each and the overhead of the pipeline in percent (aim: under 5 %).

    python bench/bench_overhead.py [--data DIR] [--n 24] [--model chgnet-0.3.0] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from mliapdb.config import shared_data_dir


def bare(structures, spec, settings) -> tuple[float, int]:
    """Load the calculator and relax every structure with plain ASE (seconds, steps)."""
    import ase.filters
    import ase.optimize
    from pymatgen.io.ase import AseAtomsAdaptor

    from mliapdb.compute.models import make_calculator

    start = time.perf_counter()
    calc = make_calculator(spec)
    steps = 0
    for structure in structures:
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = calc
        opt = ase.optimize.FIRE(ase.filters.FrechetCellFilter(atoms), logfile=None)
        # a model error (e.g. CHGNet refusing isolated atoms): the pipeline stores a row
        with contextlib.suppress(Exception):
            opt.run(fmax=settings.fmax, steps=settings.max_steps)
        steps += opt.nsteps
    return time.perf_counter() - start, steps


def pipeline(db_file: Path, entries: Path, ids: list[str], model: str) -> tuple[float, int]:
    """``ingest entries`` (not timed), then ``run_calculations`` over ``ids`` (timed)."""
    from mliapdb.compute.calculations import RunOptions, select_targets
    from mliapdb.compute.run import run_calculations
    from mliapdb.materials.ingest import ingest_entry_files
    from mliapdb.store import database as db

    con = db.connect(db_file, create=True)
    try:
        ingest_entry_files(con, [entries])
        targets = select_targets(con, material_ids=ids)
        start = time.perf_counter()
        run_calculations(con, model, targets, RunOptions(threads=None))
        seconds = time.perf_counter() - start
        (steps,) = con.execute("SELECT sum(n_steps) FROM calculations").fetchone()
    finally:
        con.close()
    return seconds, int(steps or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from pymatgen.core import Structure

    from mliapdb.compute.models import get_model_spec
    from mliapdb.materials.entries import material_id_of

    torch.set_num_threads(1)
    entries = args.data / "mp" / "Mn_O_Y_entries.json.gz"
    with gzip.open(entries) as fh:
        raw = [d for d in json.load(fh) if len(d["composition"]) >= 2]
    raw.sort(key=lambda d: (len(d["structure"]["sites"]), material_id_of(d)))
    ids = [material_id_of(d) for d in raw[: args.n]]
    structures = [Structure.from_dict(d["structure"]) for d in raw[: args.n]]
    spec = get_model_spec(args.model)
    settings = spec.relax_settings()
    bare(structures[:1], spec, settings)  # warm-up: imports, model file in the page cache
    times: dict[str, list[float]] = {"bare model calls": [], "mliapdb pipeline": []}
    steps: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            seconds, steps["bare model calls"] = bare(structures, spec, settings)
            times["bare model calls"].append(seconds)
            seconds, steps["mliapdb pipeline"] = pipeline(
                Path(tmp) / f"run{i}.duckdb", entries, ids, args.model)
            times["mliapdb pipeline"].append(seconds)
    base = min(times["bare model calls"])
    print(f"model {args.model}, {len(structures)} Mn-O-Y compounds "
          f"({min(map(len, structures))}-{max(map(len, structures))} sites), 1 torch thread, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, best of {args.repeat}")
    print(f"{'variant':<18} {'steps':>6} {'seconds':>8} {'runs':>20} {'overhead':>8}")
    for name, values in times.items():
        best = min(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<18} {steps[name]:>6} {best:>8.2f} {runs:>20} "
              f"{(best - base) / base:>+8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
