"""Which energies does a model predict: MP2020-corrected or raw VASP GGA/GGA+U?

Single points of the model on the DFT structures of small real MP entries (<= 10 atoms by
default) from ``mp/*.json.gz``; the MP2020 correction of each entry is re-applied from its raw
energy with ``MaterialsProject2020Compatibility(check_potcar=False)`` as ``mliapdb ingest
entries`` does. Prints, in eV/atom, model - corrected and model - raw (mean and median) on the
entries with a non-zero correction (oxides, +U) and on the others. The smaller difference on
the corrected entries tells the convention (``energy_convention`` in the model's toml).

    python bench/energy_convention.py MODEL [--checkpoint PATH] [--data DIR] [--max-sites 10]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import warnings
from pathlib import Path

from mliapdb.config import shared_data_dir

FILES = (
    "Mn_O_Y_entries.json.gz",
    "Fe_Li_O_P_entries.json.gz",
    "Mn_O_entries.json.gz",
    "Cl_Mn_Na_O_Y_entries.json.gz",
)


def load_entries(mp_dir, max_sites: int) -> list[tuple[str, object, float, float]]:
    """(material id, structure, raw energy, MP2020-corrected energy) in eV per cell."""
    from pymatgen.entries.compatibility import (
        CompatibilityError,
        MaterialsProject2020Compatibility,
    )
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    compat = MaterialsProject2020Compatibility(check_potcar=False)
    rows, seen = [], set()
    for name in FILES:
        with gzip.open(mp_dir / name) as fh:
            data = json.load(fh)
        for raw in data:
            if raw["entry_id"] in seen:
                continue
            entry = ComputedStructureEntry.from_dict(raw)
            if len(entry.structure) > max_sites:
                continue
            seen.add(raw["entry_id"])
            energy_raw = entry.uncorrected_energy
            entry.energy_adjustments = []
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    correction = sum(adj.value for adj in compat.get_adjustments(entry))
            except CompatibilityError:
                continue
            rows.append((raw["entry_id"], entry.structure, energy_raw, energy_raw + correction))
    return rows


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.mean(values):+.3f} mean ({statistics.median(values):+.3f} median)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--max-sites", type=int, default=10)
    args = parser.parse_args()

    import torch

    from mliapdb.compute.models import get_model_spec, make_calculator

    torch.set_num_threads(1)
    entries = load_entries((args.data or shared_data_dir()) / "mp", args.max_sites)
    calc = make_calculator(get_model_spec(args.model), checkpoint=args.checkpoint)
    start = time.perf_counter()
    rows, failed = [], 0
    for _mid, structure, energy_raw, energy_corrected in entries:
        n = len(structure)
        atoms = structure.to_ase_atoms()
        atoms.calc = calc
        try:
            per_atom = atoms.get_potential_energy() / n
        except Exception:  # e.g. CHGNet refuses isolated atoms
            failed += 1
            continue
        rows.append((per_atom, energy_raw / n, energy_corrected / n))
    corrected = [r for r in rows if abs(r[2] - r[1]) > 1e-6]
    plain = [r for r in rows if abs(r[2] - r[1]) <= 1e-6]
    print(f"{args.model}: {len(rows)} entries ({failed} refused by the model), "
          f"{time.perf_counter() - start:.0f} s")
    print(f"  model - corrected, {len(corrected)} corrected entries: "
          f"{_stats([r[0] - r[2] for r in corrected])}")
    print(f"  model - corrected, {len(plain)} uncorrected entries: "
          f"{_stats([r[0] - r[2] for r in plain])}")
    print(f"  model - raw, corrected entries: {_stats([r[0] - r[1] for r in corrected])}")
    print(f"  MP2020 correction, corrected entries: {_stats([r[2] - r[1] for r in corrected])}")


if __name__ == "__main__":
    main()
