"""Synthetic MP-shaped entry files for ingest benchmarks, built from the shared real entries.

Each *replica* of the 1,489 distinct shared MP materials (complete chemical systems: Mn-O,
Mn-O-Y, Na-Mn-O-Y, Cl-Na-Mn-O-Y, Li-Fe-O, Li-Fe-P-O, Na-Fe-P-O) substitutes elements by
chemically similar ones, one injective map per replica and element group (3d metals
V/Cr/Mn/Fe/Co/Ni, alkali metals Li/Na/K/Rb, Y/Sc/La/Lu, P/As/Sb, Cl/Br/I; O stays): a
replica of a complete system is a complete system (the elements' own entries are substituted
too), with the real structures (lattice scaled by 1 +- 2 %, as a substitution would), the real
site counts (median 20, up to 200) and the real relative energies (+- 10 meV/atom), so hulls
keep their shape. GGA+U entries get MP's U value of their new metal (MP2020 then accepts
them as on MP); the file's own corrections are dropped (mliapdb re-applies MP2020).
Replica 0 is the real data with new material ids.

The file has the layout of Matbench Discovery's MP dump
(``2023-02-07-mp-computed-structure-entries.json.gz``): a pandas DataFrame JSON (orient
``columns``) with ``material_id`` and ``entry`` columns, gzip, written as a stream::

    python bench/synthetic_entries.py --out bench/.synthetic/mp-150k.json.gz --n 150000

Derived from Materials Project data (CC BY 4.0): credit the Materials Project.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

GROUPS = (
    ("V", "Cr", "Mn", "Fe", "Co", "Ni"),
    ("Li", "Na", "K", "Rb"),
    ("Y", "Sc", "La", "Lu"),
    ("P", "As", "Sb"),
    ("Cl", "Br", "I"),
)
"""Elements a replica may exchange with one another (one group at a time)."""

MP_U = {"V": 3.25, "Cr": 3.7, "Mn": 3.9, "Fe": 5.3, "Co": 3.32, "Ni": 6.2}
"""MP's U values (eV) for oxides and fluorides (MaterialsProject2020Compatibility)."""


def real_entries(data_dir: Path) -> list[dict]:
    """The distinct shared MP entries (first occurrence of each material id), in a fixed
    order."""
    seen: dict[str, dict] = {}
    for path in sorted((data_dir / "mp").glob("*_entries*.json.gz")):
        if "elemental" in path.name:
            continue
        with gzip.open(path) as fh:
            for raw in json.loads(fh.read()):
                mid = (raw.get("data") or {}).get("material_id") or raw["entry_id"]
                seen.setdefault(mid.split("-GGA")[0], raw)
    return [seen[k] for k in sorted(seen)]


def _substitution(rng: np.random.Generator, replica: int) -> dict[str, str]:
    if replica == 0:
        return {}
    mapping = {}
    for group in GROUPS:
        mapping.update(zip(group, rng.permutation(group).tolist(), strict=True))
    return mapping


def _entry(raw: dict, mid: str, sub: dict[str, str], scale: float, shift: float) -> dict:
    e = copy.deepcopy(raw)
    n = len(e["structure"]["sites"])
    for site in e["structure"]["sites"]:
        for sp in site["species"]:
            sp["element"] = sub.get(sp["element"], sp["element"])
        site["label"] = "".join(sub.get(s, s) for s in [site.get("label", "")])
        site["xyz"] = [x * scale for x in site["xyz"]]
    lattice = e["structure"]["lattice"]
    e["structure"]["lattice"] = {"matrix": [[x * scale for x in row] for row in lattice["matrix"]],
                                 "pbc": lattice.get("pbc", [True, True, True])}
    comp: dict[str, float] = {}
    for el, amt in e["composition"].items():
        comp[sub.get(el, el)] = comp.get(sub.get(el, el), 0) + amt
    e["composition"] = comp
    e["energy"] = raw["energy"] + shift * n
    e["correction"] = 0.0
    e["energy_adjustments"] = []
    params = e["parameters"]
    hubbards = params.get("hubbards") or {}
    params["hubbards"] = {sub.get(el, el): (MP_U.get(sub.get(el, el), u) if u else u)
                          for el, u in hubbards.items()}
    suffix = raw["entry_id"].split(raw["entry_id"].split("-GGA")[0])[-1]
    e["entry_id"] = f"{mid}{suffix}"
    e["data"] = {**(e.get("data") or {}), "material_id": mid}
    for key in ("e_above_hull", "is_stable", "e_form_per_atom"):
        e.pop(key, None)
    return e


def synthetic_entries(reals: list[dict], n: int, seed: int = 0) -> Iterator[tuple[str, dict]]:
    """``n`` (material id, entry dict) of replicas of ``reals`` (see the module doc)."""
    rng = np.random.default_rng(seed)
    k = 0
    replica = 0
    while k < n:
        sub = _substitution(rng, replica)
        scale = 1.0 + rng.uniform(-0.02, 0.02) if replica else 1.0
        for raw in reals:
            if k == n:
                return
            mid = f"mp-{10_000_000 + k}"
            shift = rng.uniform(-0.01, 0.01) if replica else 0.0
            yield mid, _entry(raw, mid, sub, scale, shift)
            k += 1
        replica += 1


def write_mp_dump(path: Path, entries: Iterator[tuple[str, dict]]) -> int:
    """Write ``entries`` as Matbench Discovery's MP dump layout (columns orient, gzip level 1;
    the ``entry`` column first, as pandas writes that frame); returns the rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    ids: list[str] = []
    with gzip.open(tmp, "wt", compresslevel=1) as fh:
        fh.write('{"entry":{')
        for i, (mid, entry) in enumerate(entries):
            fh.write(("," if i else "") + json.dumps(str(i)) + ":" + json.dumps(entry))
            ids.append(mid)
        fh.write('},"material_id":')
        fh.write(json.dumps({str(i): mid for i, mid in enumerate(ids)}))
        fh.write("}")
    tmp.replace(path)
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[1] / ".." / "shared"
                    / "data")
    args = ap.parse_args(argv)
    n = write_mp_dump(args.out, synthetic_entries(real_entries(args.data), args.n, args.seed))
    print(f"{args.out}: {n} entries, {args.out.stat().st_size / 1e6:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
