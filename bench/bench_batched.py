"""Benchmark the batched torch-sim relaxation against serial ASE for the same model and the
same MP structures, with the model's bare batched-forward throughput as the ceiling.

Workload: the first N distinct materials of the shared MP entry files (every entry list in
``mp/``, deduplicated by material id, sorted by id number: a mix of cell sizes), DFT structures as
they are; the protocol of ``mliapdb ingest relax`` (FIRE + FrechetCellFilter, fmax 0.05 eV/A,
500 steps). Rows:

* ``ase serial``: :func:`mliapdb.compute.relaxation.relax_structure`, one structure at a time;
* ``torch-sim batched``: :func:`mliapdb.compute.batched.relax_batched`, in-flight batching of
  at most ``--max-atoms`` atoms;
* ``ceiling``: batched single points (energy + forces + stress) per second over the same
  structures, in batches of ``--max-atoms``, divided by the mean number of FIRE steps + 1
  (the model evaluations a relaxation needs): what a relaxation engine with no overhead but
  the model would reach.

Also prints how the batched energies compare with the ASE ones (meV/atom). ``--ase-n N``
times ASE on the first N structures only (serial ASE is slow on a CPU) and scales.

    python bench/bench_batched.py [--data DIR] [--n N] [--model sevennet-0] [--device cuda]
        [--max-atoms 12000] [--ase-n N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from mliapdb.config import shared_data_dir


def load_structures(data: Path, n: int):
    from pymatgen.core import Structure

    from mliapdb.errors import MliapdbError
    from mliapdb.materials.entries import material_id_of, read_entry_file

    seen: dict[str, dict] = {}
    for path in sorted((data / "mp").glob("*.json.gz")):
        try:
            _, entries = read_entry_file(path)
        except MliapdbError:  # not an entry list (e.g. the elemental-reference dict)
            continue
        for raw in entries:
            seen.setdefault(material_id_of(raw) or raw["entry_id"], raw)
    ids = sorted(seen, key=lambda m: (int(m.split("-")[1]) if m.split("-")[-1].isdigit()
                                      else 0, m))
    return [(mid, Structure.from_dict(seen[mid]["structure"])) for mid in ids[:n]]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--n", type=int, default=60, help="structures (default 60)")
    parser.add_argument("--ase-n", type=int, default=None,
                        help="time serial ASE on the first N only (default: all)")
    parser.add_argument("--model", default="sevennet-0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-atoms", type=int, default=None,
                        help="atoms per batch (default: mliapdb's for the device)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch
    from torch_sim.state import initialize_state

    from mliapdb.compute.batched import default_max_atoms, relax_batched
    from mliapdb.compute.models import get_model_spec, make_calculator
    from mliapdb.compute.models.batched_factories import make_batched_model
    from mliapdb.compute.relaxation import RelaxSettings, relax_structure

    torch.set_num_threads(args.threads)
    structures = load_structures(args.data, args.n)
    spec = get_model_spec(args.model)
    settings = RelaxSettings.for_kind("relax", spec.relax)
    model = make_batched_model(spec, device=args.device)
    args.max_atoms = args.max_atoms or default_max_atoms(args.device)
    calc = make_calculator(spec, device=args.device)
    only = [s for _, s in structures]
    n_sites = [len(s) for s in only]

    # warm-up (kernels, allocator)
    list(relax_batched(only[:4], model, RelaxSettings(max_steps=3), args.max_atoms))
    relax_structure(only[0], calc, RelaxSettings(max_steps=3))

    sync(args.device)
    start = time.perf_counter()
    batched = dict(relax_batched(only, model, settings, args.max_atoms))
    sync(args.device)
    t_batched = time.perf_counter() - start

    ase_n = min(args.ase_n or len(only), len(only))
    start = time.perf_counter()
    ase = [relax_structure(s, calc, settings) for s in only[:ase_n]]
    sync(args.device)
    t_ase_part = time.perf_counter() - start
    t_ase = t_ase_part * len(only) / ase_n

    # ceiling: batched single points over the same structures
    groups, group, atoms = [], [], 0
    for s in only:
        if group and atoms + len(s) > args.max_atoms:
            groups.append(group)
            group, atoms = [], 0
        group.append(s)
        atoms += len(s)
    groups.append(group)
    states = [initialize_state(g, model.device, model.dtype) for g in groups]
    model(states[0])
    sync(args.device)
    start = time.perf_counter()
    for state in states:
        model(state)
    sync(args.device)
    t_sp = time.perf_counter() - start
    steps = [batched[i].n_steps or 0 for i in range(len(only))]
    mean_steps = statistics.mean(steps)
    sp_rate = len(only) / t_sp
    ceiling = sp_rate / (mean_steps + 1)

    diffs = [abs(a.energy_relaxed - batched[i].energy_relaxed) / len(only[i]) * 1000
             for i, a in enumerate(ase)
             if a.energy_relaxed is not None and batched[i].energy_relaxed is not None]
    same_status = sum(a.status == batched[i].status for i, a in enumerate(ase))
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{args.threads} torch thread(s), load {os.getloadavg()[0]:.2f}")
    print(f"model {args.model}, {len(only)} MP structures ({min(n_sites)}-{max(n_sites)} "
          f"sites, mean {statistics.mean(n_sites):.1f}), mean FIRE steps {mean_steps:.1f}, "
          f"device {args.device} ({device}), max atoms per batch {args.max_atoms}")
    print(f"{'method':<20} {'structures':>10} {'seconds':>9} {'struct/s':>9} {'vs serial':>9} "
          f"{'of ceiling':>10}")
    rows = [
        (f"ase serial{'*' if ase_n < len(only) else ''}", len(only), t_ase),
        ("torch-sim batched", len(only), t_batched),
        ("ceiling", len(only), len(only) / ceiling),
    ]
    for name, n, seconds in rows:
        rate = n / seconds
        print(f"{name:<20} {n:>10} {seconds:>9.1f} {rate:>9.3f} {t_ase / seconds:>8.1f}x "
              f"{rate / ceiling:>9.0%}")
    if ase_n < len(only):
        print(f"* serial ASE timed on the first {ase_n} structures ({t_ase_part:.1f} s), "
              "scaled to all")
    print(f"batched single points: {sp_rate:.2f} structures/s ({t_sp:.2f} s)")
    if diffs:
        diffs.sort()
        print(f"relaxed energy |batched - ase| over {len(diffs)} structures: median "
              f"{statistics.median(diffs):.4f}, max {diffs[-1]:.3f} meV/atom; "
              f"{sum(d < 1 for d in diffs)}/{len(diffs)} within 1 meV/atom; same status "
              f"{same_status}/{len(ase)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
