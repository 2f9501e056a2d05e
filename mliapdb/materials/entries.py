"""Read pymatgen ``ComputedStructureEntry`` JSON files (plain or gzip) into validated entries
with MP2020 corrections re-applied to the raw DFT energies.

Input checks (docs/conventions.md, "Input checks"): raw and MP2020-corrected energies within
:data:`ENERGY_PER_ATOM_RANGE`, finite coordinates, a lattice of positive volume, ordered
sites, lattice vectors up to :data:`MAX_CELL_LENGTH`, no two atoms (or an atom and its periodic
image) closer than :data:`MIN_DISTANCE`, and no objects of modules other than pymatgen's (monty
would import them)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mliapdb.errors import MliapdbError
from mliapdb.materials.entry_stream import material_id_of
from mliapdb.progress import Progress, no_progress

ENERGY_PER_ATOM_RANGE = (-20.0, 5.0)
"""Accepted raw and MP2020-corrected DFT energies, eV/atom. MP's GGA/GGA+U total energies lie
between -14.3 (Pu, the lowest elemental reference) and about 0 eV/atom (noble gases); MP2020
corrections shift compounds by at most a few eV/atom."""

MIN_DISTANCE = 0.5
"""Closest accepted distance (Angstrom) between two atoms, or an atom and its periodic image
(the shortest bond in MP, H2, is 0.75 A)."""

MAX_CELL_LENGTH = 1000.0
"""Longest accepted lattice vector (Angstrom) as given in the file (the shared MP cells: up to
40 A); longer ones are no bulk DFT cells, and a far from reduced basis overflows moyopy."""

MAX_FRACTIONAL = 1000.0
"""Largest accepted fractional coordinate (absolute value): an atom so many cells away is a
corrupted structure (MP's lie within [0, 1))."""

MAX_NESTING = 32
"""Deepest accepted nesting of JSON objects and lists in one entry (MP entries: 7)."""

_MODULES = ("pymatgen", "datetime", "numpy")
"""Top-level packages whose serialised objects (``@module``) an entry may carry."""


@dataclass
class ParsedEntry:
    """One DFT entry of a file, validated; energies in eV per cell."""

    material_id: str
    entry_id: str | None
    task_id: str | None
    entry: Any  # ComputedStructureEntry with its energy adjustments stripped
    energy_raw: float
    correction_mp2020: float | None  # None when MP2020 compatibility rejects the entry
    compat_message: str | None
    correction_in_source: float | None
    mp_last_updated: str | None
    fingerprint: str
    source_file: str
    source_sha256: str
    index: int = -1  # position in its source

    @property
    def label(self) -> str:
        """``FILE: entry INDEX (MATERIAL_ID)``, the prefix of messages about this entry."""
        return f"{self.source_file}: entry {self.index} ({self.material_id})"

    @property
    def compat_status(self) -> str:
        return "ok" if self.correction_mp2020 is not None else "rejected"


def read_entry_file(path: Path) -> tuple[str, list[dict]]:
    """The file's sha256 and all its raw entry dicts (layouts: :mod:`entry_stream`; gzip
    detected by content). For small files: ``ingest entries`` streams them instead
    (:mod:`mliapdb.materials.streaming`)."""
    from mliapdb.materials.entry_stream import file_sha256, iter_entry_dicts

    sha = file_sha256(path)
    return sha, list(iter_entry_dicts(path, display_path(path)))


def _label(raw: Any, index: int) -> str:
    mid = material_id_of(raw) if isinstance(raw, dict) else None
    return f"entry {index} ({mid})" if mid else f"entry {index}"


def _last_updated(data: dict) -> str | None:
    value = data.get("last_updated")
    if isinstance(value, dict):
        value = value.get("string")
    return str(value) if value is not None else None


def fingerprint(energy_raw: float, structure: Any) -> str:
    """sha256 of the raw energy and the structure (rounded), to recognise the same DFT data.

    Coordinates are rounded as numpy rounds (the fractional coordinates are numpy floats),
    the lattice as Python does; ``tests/test_streaming_ingest.py`` checks this equals the
    site-by-site form on every shared entry."""
    import numpy as np

    if structure.is_ordered:
        sites = [[str(sp), xyz] for sp, xyz in
                 zip(structure.species, np.round(structure.frac_coords, 6).tolist(), strict=True)]
    else:
        sites = [[site.species_string, [round(x, 6) for x in site.frac_coords]]
                 for site in structure]
    payload = [
        round(energy_raw, 8),
        [[round(x, 6) for x in row] for row in structure.lattice.matrix.tolist()],
        sites,
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _nesting_problem(raw: Any) -> str | None:
    """Why ``raw`` cannot be read safely: nested deeper than :data:`MAX_NESTING`, or carrying
    a serialised object (``@module``) outside :data:`_MODULES`; None when it can. Walks the
    objects and lists level by level (scalars are not visited)."""
    level = [raw] if type(raw) in (dict, list) else []
    depth = 1
    while level:
        if depth == MAX_NESTING and any(level):
            return (f"nested more than {MAX_NESTING} levels deep - not a ComputedStructureEntry "
                    "dict")
        below: list = []
        for obj in level:
            if type(obj) is dict:
                module = obj.get("@module")
                if module is not None and (
                    not isinstance(module, str) or module.split(".")[0] not in _MODULES
                ):
                    return (f"carries an object of module {str(module)[:80]!r} - only "
                            "pymatgen objects are read from entry files")
                below.extend(v for v in obj.values() if type(v) is dict or type(v) is list)
            else:
                below.extend(v for v in obj if type(v) is dict or type(v) is list)
        level = below
        depth += 1
    return None


def _reduced_basis(m: Any) -> Any:
    """Rows of ``m`` (a lattice basis) pairwise size-reduced (Gauss/Lagrange steps until no
    vector gets shorter): the same lattice, nearly orthogonal vectors."""
    import numpy as np

    def dot(u: list[float], v: list[float]) -> float:
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    b = [[float(x) for x in v] for v in m]  # 3-vectors: plain floats beat numpy here
    for _ in range(200):
        b.sort(key=lambda v: dot(v, v))
        changed = False
        for j in (1, 2):
            for i in range(j):
                q = round(dot(b[j], b[i]) / dot(b[i], b[i]))
                if q:
                    b[j] = [x - q * y for x, y in zip(b[j], b[i], strict=True)]
                    changed = True
        if not changed:
            break
    return np.array(b)


_COMBOS = tuple((i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                if i or j or k)


def _closest_pair(structure: Any) -> tuple[float, int, int]:
    """The shortest distance (Angstrom) between two atoms of a periodic ``structure`` and
    their site indices; a lattice vector shorter than :data:`MIN_DISTANCE` (every atom
    overlaps its own image) is reported first, as ``(length, 0, 0)``.

    Works on a size-reduced basis (:func:`_reduced_basis`), with as many periodic images as
    :data:`MIN_DISTANCE` needs (a k-d tree; no N x N matrix, no cell grid that a huge cell
    could blow up, no LAPACK call that prints on stdout for odd matrices). Distances of
    :data:`MIN_DISTANCE` and more are reported as ``inf``."""
    import numpy as np

    m = _reduced_basis(np.asarray(structure.lattice.matrix, dtype=float))
    shortest = float(np.sqrt(((np.array(_COMBOS) @ m) ** 2).sum(axis=1).min()))
    if shortest < MIN_DISTANCE:
        return shortest, 0, 0
    # Distance between lattice planes along each axis, hence the images each axis needs.
    cross = np.cross(m[[1, 2, 0]], m[[2, 0, 1]])
    det = float(m[0] @ cross[0])
    volume = abs(det)
    heights = (volume / np.sqrt((cross ** 2).sum(axis=1))).tolist()
    n = [int(math.ceil(MIN_DISTANCE / h)) for h in heights]
    if max(n) > 8:  # planes < 0.06 A apart with no short vector: not a crystal lattice
        return min(heights), 0, 0
    frac = np.mod(np.asarray(structure.cart_coords) @ (cross.T / det), 1.0)
    offsets = np.array(
        sorted(
            ((i, j, k) for i in range(-n[0], n[0] + 1) for j in range(-n[1], n[1] + 1)
             for k in range(-n[2], n[2] + 1)),
            key=lambda o: o != (0, 0, 0),  # the cell itself first: point p < N is site p
        )
    )
    home = frac @ m
    images = ((frac[None, :, :] + offsets[:, None, :]).reshape(-1, 3)) @ m
    n_sites = len(structure)
    from scipy.spatial import cKDTree

    # the two nearest points of each atom within MIN_DISTANCE: itself, and its closest other
    d, idx = cKDTree(images).query(home, k=2, distance_upper_bound=MIN_DISTANCE)
    d[idx == np.arange(n_sites)[:, None]] = np.inf
    i, k = np.unravel_index(int(d.argmin()), d.shape)
    if not d[i, k] < MIN_DISTANCE:
        return math.inf, 0, 0
    return float(d[i, k]), int(i), int(idx[i, k]) % n_sites


def _structure_problem(structure: Any) -> str | None:
    """What makes ``structure`` no DFT crystal structure (docs/conventions.md, Input checks),
    or None."""
    import numpy as np

    see = "(docs/conventions.md, Input checks)"
    lattice = structure.lattice
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not (np.isfinite(lattice.matrix).all() and np.isfinite(frac).all()):
        return "structure has NaN or infinite coordinates"
    if not structure.volume > 0 or not math.isfinite(structure.volume):
        return f"structure has a degenerate lattice (volume {structure.volume} A^3)"
    longest = max(lattice.abc)
    if not longest <= MAX_CELL_LENGTH:
        return (f"lattice vector of {longest:.4g} A, longer than {MAX_CELL_LENGTH:g} A - not a "
                f"bulk DFT cell {see}")
    if structure.volume < 1e-6 * math.prod(lattice.abc):  # vectors (nearly) in one plane
        return f"structure has a degenerate lattice (volume {structure.volume:.3g} A^3)"
    far = float(np.abs(frac).max())
    if far > MAX_FRACTIONAL:
        site = int(np.abs(frac).max(axis=1).argmax())
        return (f"atom {site} lies {far:.3g} cells away from the cell (fractional coordinates "
                f"beyond +-{MAX_FRACTIONAL:g}) - check the structure {see}")
    if not structure.is_ordered:
        return "structure is disordered (partial occupancies) - mliapdb ingests ordered DFT " \
               "structures only"
    try:
        with np.errstate(all="ignore"):
            distance, i, j = _closest_pair(structure)
    except Exception as exc:  # numpy/scipy on an absurd lattice
        return f"structure has a degenerate lattice ({str(exc)[:100]})"
    if distance < MIN_DISTANCE:
        what = (f"atoms {i} and {j} are {distance:.3g} A apart" if i != j else
                f"atoms overlap their periodic images (lattice spacing {distance:.3g} A)")
        return (f"{what}, closer than {MIN_DISTANCE} A - overlapping atoms: check the "
                f"structure {see}")
    return None


def parse_entry(raw: Any, index: int, path: Path | str, sha: str) -> ParsedEntry:
    """Validate one raw entry dict; raise a one-line MliapdbError naming file and entry."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    where = f"{path}: {_label(raw, index)}"
    if not isinstance(raw, dict):
        raise MliapdbError(f"{where}: not a JSON object - expected a ComputedStructureEntry dict")
    mid = material_id_of(raw)
    if mid is None:
        raise MliapdbError(f"{where}: no material id (data.material_id or entry_id) - add one")
    energy = raw.get("energy")
    if energy is None:
        raise MliapdbError(f"{where}: no energy - every entry needs its raw DFT energy (eV)")
    try:
        finite = (
            not isinstance(energy, bool) and isinstance(energy, int | float)
            and math.isfinite(float(energy))
        )
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise MliapdbError(f"{where}: energy is {energy!r:.40}, not a finite number (eV)")
    if not isinstance(raw.get("structure"), dict):
        raise MliapdbError(
            f"{where}: no structure - ingest needs ComputedStructureEntry dicts with structures"
        )
    problem = _nesting_problem(raw)
    if problem:
        raise MliapdbError(f"{where}: {problem}")
    if raw["structure"].get("sites") == []:
        raise MliapdbError(f"{where}: structure has no sites - an entry needs at least one atom")
    for key in ("data", "parameters"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise MliapdbError(
                f"{where}: '{key}' is a JSON {type(raw[key]).__name__}, not an object - fix or "
                "drop it"
            )
    data = raw.get("data") or {}
    params = raw.get("parameters") or {}
    for key, value, kind in (
        ("entry_id", raw.get("entry_id"), str), ("data.task_id", data.get("task_id"), str),
        ("data.oxide_type", data.get("oxide_type"), str),
        ("parameters.run_type", params.get("run_type"), str),
        ("parameters.is_hubbard", params.get("is_hubbard"), bool),
    ):
        if value is not None and not isinstance(value, kind):
            raise MliapdbError(
                f"{where}: {key} is {str(value)[:40]!r}, not a JSON "
                f"{'string' if kind is str else 'true/false'} - fix or drop it"
            )
    source = {**raw, "correction": raw.get("correction") or 0.0}
    try:
        with warnings.catch_warnings():  # e.g. "Structure has no sites": refused below
            warnings.simplefilter("ignore")
            entry = ComputedStructureEntry.from_dict(source)
        structure = entry.structure
        n_sites = len(structure)
        correction_in_source = float(entry.correction) if entry.energy_adjustments else None
    except Exception as exc:  # pymatgen raises ValueError, KeyError, TypeError ...
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if "valid Element" in message or "not a valid" in message:
            message = f"unknown element ({message})"
        raise MliapdbError(f"{where}: cannot read the entry: {message}") from exc
    if n_sites == 0:
        raise MliapdbError(f"{where}: structure has no sites - an entry needs at least one atom")
    lo, hi = ENERGY_PER_ATOM_RANGE
    per_atom = float(energy) / n_sites
    if not lo <= per_atom <= hi:
        raise MliapdbError(
            f"{where}: raw energy {per_atom:.6g} eV/atom is outside the accepted range "
            f"[{lo:g}, {hi:+g}] eV/atom - 'energy' must be the cell's total DFT energy in eV "
            "(docs/conventions.md, Input checks)"
        )
    with warnings.catch_warnings():  # numpy's overflow warnings on absurd numbers
        warnings.simplefilter("ignore")
        problem = _structure_problem(structure)
    if problem:
        raise MliapdbError(f"{where}: {problem}")
    # Keep what the file said for comparison, then strip it: MP2020 is re-applied from raw.
    entry.energy_adjustments = []
    return ParsedEntry(
        material_id=mid,
        entry_id=raw.get("entry_id"),
        task_id=data.get("task_id"),
        entry=entry,
        energy_raw=float(energy),
        correction_mp2020=None,
        compat_message=None,
        correction_in_source=correction_in_source,
        mp_last_updated=_last_updated(data),
        fingerprint=fingerprint(float(energy), structure),
        source_file=str(path),
        source_sha256=sha,
        index=index,
    )


def apply_mp2020(entries: list[ParsedEntry]) -> None:
    """Set ``correction_mp2020`` (eV per cell) of each entry from a fresh
    ``MaterialsProject2020Compatibility(check_potcar=False)``; rejected entries keep ``None``
    and get the reason in ``compat_message``."""
    from pymatgen.entries.compatibility import (
        CompatibilityError,
        MaterialsProject2020Compatibility,
    )

    compat = MaterialsProject2020Compatibility(check_potcar=False)
    for parsed in entries:
        try:
            with warnings.catch_warnings():
                # "Failed to guess oxidation states ...": MP's own fallback, as on MP.
                warnings.simplefilter("ignore", UserWarning)
                adjustments = compat.get_adjustments(parsed.entry)
            correction = float(sum(adj.value for adj in adjustments))
        except CompatibilityError as exc:
            parsed.correction_mp2020 = None
            parsed.compat_message = str(exc).splitlines()[0] or "rejected by MP2020"
            continue
        except Exception as exc:  # malformed parameters pymatgen trips over
            message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise MliapdbError(
                f"{parsed.label}: MP2020 compatibility cannot process the entry "
                f"({type(exc).__name__}: {message}) - check its parameters (run_type, "
                "hubbards, potcar_spec)"
            ) from exc
        lo, hi = ENERGY_PER_ATOM_RANGE
        per_atom = (parsed.energy_raw + correction) / len(parsed.entry.structure)
        if not (math.isfinite(correction) and lo <= per_atom <= hi):
            raise MliapdbError(
                f"{parsed.label}: MP2020-corrected energy {per_atom:.6g} eV/atom is outside "
                f"the accepted range [{lo:g}, {hi:+g}] eV/atom - check the entry's energy and "
                "parameters (docs/conventions.md, Input checks)"
            )
        parsed.correction_mp2020 = correction


def load_entries(sources: Iterable[tuple[str, str, list]],
                 progress: Progress = no_progress) -> list[ParsedEntry]:
    """Parse and validate every entry of every ``(source, sha256, raw entry dicts)`` (a file,
    or a fetch from the MP API; no database access), then apply MP2020; fail on the first bad
    entry. The same material id twice in one source is an error. ``progress`` wraps the loop
    over each source's entries."""
    parsed: list[ParsedEntry] = []
    for source, sha, raws in sources:
        if not raws:
            raise MliapdbError(f"{source}: no entries - the file holds an empty list")
        seen: dict[str, int] = {}
        for index, raw in enumerate(progress(raws, len(raws), f"{source}: checking entries")):
            entry = parse_entry(raw, index, source, sha)
            if entry.material_id in seen:
                raise MliapdbError(
                    f"{source}: entry {index} ({entry.material_id}): material id repeats entry "
                    f"{seen[entry.material_id]} - keep one entry per material"
                )
            seen[entry.material_id] = index
            parsed.append(entry)
    apply_mp2020(parsed)
    return parsed


def display_path(path: Path | str) -> str:
    """``path`` as text that can be printed and stored: bytes of a file name that are not
    UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_entry_files(paths: list[Path], progress: Progress = no_progress) -> list[ParsedEntry]:
    """:func:`load_entries` of JSON files (plain or gzip); each file is named in messages
    and recorded by :func:`display_path`."""
    return load_entries(((display_path(path), *read_entry_file(path)) for path in paths),
                        progress)
