"""Read pymatgen ``ComputedStructureEntry`` JSON files (plain or gzip) into validated entries
with MP2020 corrections re-applied to the raw DFT energies."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mliapdb.errors import MliapdbError

_ID_SUFFIX = re.compile(r"-(GGA\+U|GGA|R2SCAN|r2SCAN|SCAN)$")


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

    @property
    def compat_status(self) -> str:
        return "ok" if self.correction_mp2020 is not None else "rejected"


def read_entry_file(path: Path) -> tuple[str, list[dict]]:
    """Raw entry dicts of a JSON list file (gzip detected by content) and the file's sha256."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise MliapdbError(f"{path}: cannot read ({exc.strerror}) - check the path") from exc
    sha = hashlib.sha256(blob).hexdigest()
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError) as exc:
            raise MliapdbError(f"{path}: corrupt gzip data ({exc}) - re-download it") from exc
    try:
        data = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MliapdbError(
            f"{path}: not JSON ({exc}) - expected a JSON list of ComputedStructureEntry dicts"
        ) from exc
    if not isinstance(data, list):
        raise MliapdbError(
            f"{path}: expected a JSON list of ComputedStructureEntry dicts, "
            f"got a JSON {type(data).__name__}"
        )
    return sha, data


def material_id_of(raw: dict) -> str | None:
    """MP id from ``data.material_id``, else ``entry_id`` without a ``-GGA``-style suffix."""
    data = raw.get("data") or {}
    mid = data.get("material_id") if isinstance(data, dict) else None
    if not mid:
        mid = raw.get("entry_id")
    if not mid or not isinstance(mid, str):
        return None
    return _ID_SUFFIX.sub("", mid)


def _label(raw: Any, index: int) -> str:
    mid = material_id_of(raw) if isinstance(raw, dict) else None
    return f"entry {index} ({mid})" if mid else f"entry {index}"


def _last_updated(data: dict) -> str | None:
    value = data.get("last_updated")
    if isinstance(value, dict):
        value = value.get("string")
    return str(value) if value is not None else None


def fingerprint(energy_raw: float, structure: Any) -> str:
    """sha256 of the raw energy and the structure (rounded), to recognise the same DFT data."""
    payload = [
        round(energy_raw, 8),
        [[round(x, 6) for x in row] for row in structure.lattice.matrix.tolist()],
        [[site.species_string, [round(x, 6) for x in site.frac_coords]] for site in structure],
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


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
    if isinstance(energy, bool) or not isinstance(energy, int | float) or not math.isfinite(energy):
        raise MliapdbError(f"{where}: energy is {energy!r}, not a finite number (eV)")
    if not isinstance(raw.get("structure"), dict):
        raise MliapdbError(
            f"{where}: no structure - ingest needs ComputedStructureEntry dicts with structures"
        )
    source = {**raw, "correction": raw.get("correction") or 0.0}
    try:
        entry = ComputedStructureEntry.from_dict(source)
    except Exception as exc:  # pymatgen raises ValueError, KeyError, TypeError ...
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "valid Element" in message or "not a valid" in message:
            message = f"unknown element ({message})"
        raise MliapdbError(f"{where}: cannot read the entry: {message}") from exc
    structure = entry.structure
    if len(structure) == 0:
        raise MliapdbError(f"{where}: structure has no sites")
    coords_ok = all(math.isfinite(x) for x in structure.lattice.matrix.flat) and all(
        math.isfinite(x) for site in structure for x in site.frac_coords
    )
    if not coords_ok:
        raise MliapdbError(f"{where}: structure has NaN or infinite coordinates")
    if structure.volume <= 0 or not math.isfinite(structure.volume):
        raise MliapdbError(
            f"{where}: structure has a degenerate lattice (volume {structure.volume} A^3)"
        )
    # Keep what the file said for comparison, then strip it: MP2020 is re-applied from raw.
    correction_in_source = float(entry.correction) if entry.energy_adjustments else None
    entry.energy_adjustments = []
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
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
        except CompatibilityError as exc:
            parsed.correction_mp2020 = None
            parsed.compat_message = str(exc).splitlines()[0] or "rejected by MP2020"
            continue
        parsed.correction_mp2020 = float(sum(adj.value for adj in adjustments))


def load_entries(sources: Iterable[tuple[str, str, list]]) -> list[ParsedEntry]:
    """Parse and validate every entry of every ``(source, sha256, raw entry dicts)`` (a file,
    or a fetch from the MP API; no database access), then apply MP2020; fail on the first bad
    entry. The same material id twice in one source is an error."""
    parsed: list[ParsedEntry] = []
    for source, sha, raws in sources:
        if not raws:
            raise MliapdbError(f"{source}: no entries - the file holds an empty list")
        seen: dict[str, int] = {}
        for index, raw in enumerate(raws):
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


def load_entry_files(paths: list[Path]) -> list[ParsedEntry]:
    """:func:`load_entries` of JSON files (plain or gzip)."""
    return load_entries((str(path), *read_entry_file(path)) for path in paths)
