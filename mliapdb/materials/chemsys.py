"""Which materials a change of some chemical systems reaches.

A material's hull quantities (formation energy, Ehull, completeness of its system, in eV/atom)
depend only on the entries whose elements are a subset of its own (its chemical system and
the subsystems, elements included). A change of entries of chemical system ``T`` therefore
reaches exactly the materials whose system contains ``T``; recomputing them needs the entries
of their subsystems (the closure), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Reach:
    """``affected``: material ids whose hull rows may change; ``closure``: the material ids
    whose entries their recomputation reads (``affected`` and every material of a
    subsystem of an affected one)."""

    affected: frozenset[str]
    closure: frozenset[str]


def elements(chemsys: str) -> frozenset[str]:
    """``"Fe-Li-O"`` -> ``{"Fe", "Li", "O"}``."""
    return frozenset(chemsys.split("-"))


def _subsystems(system: frozenset[str]) -> list[frozenset[str]]:
    items = sorted(system)
    return [frozenset(c) for k in range(1, len(items) + 1) for c in combinations(items, k)]


def reach(chemsys_of: Mapping[str, str], touched: Iterable[str]) -> Reach:
    """The materials (``chemsys_of``: material id -> chemical system) a change of the
    ``touched`` chemical systems reaches, and the closure their recomputation reads."""
    touched_sets = {elements(t) for t in touched}
    if not touched_sets:
        return Reach(frozenset(), frozenset())
    by_system: dict[frozenset[str], list[str]] = {}
    for material_id, chemsys in chemsys_of.items():
        by_system.setdefault(elements(chemsys), []).append(material_id)
    hit = []
    for system in by_system:  # the cheaper test: against each touched set, or each subset
        if len(touched_sets) < 2 ** len(system):
            found = any(t <= system for t in touched_sets)
        else:
            found = any(sub in touched_sets for sub in _subsystems(system))
        if found:
            hit.append(system)
    needed: set[frozenset[str]] = set()
    for system in hit:
        needed.update(_subsystems(system))
    affected = frozenset(m for s in hit for m in by_system[s])
    closure = frozenset(m for s in needed if s in by_system for m in by_system[s])
    return Reach(affected, closure)
