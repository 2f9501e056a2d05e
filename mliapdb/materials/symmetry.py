"""Wyckoff-resolved symmetry analysis and degree-of-freedom (DOF) counting.

The DOF of a crystal structure is the number of free parameters left to optimise by a relaxation
that keeps its space group: the lattice parameters free under the crystal family (triclinic 6,
monoclinic 4, orthorhombic 3, tetragonal 2, trigonal/hexagonal 2, cubic 1) plus the free
coordinates of every occupied Wyckoff orbit (e.g. 4e of P2_1/c has x, y, z free, 2a none).

Symmetry comes from moyopy or spglib; Wyckoff letters are then mapped to the canonical choice of
``pymatgen.analysis.prototypes`` (among the settings related by the normalizer of the group;
its tables and functions, read without its AFLOW library by
:mod:`mliapdb.materials.wyckoff_tables`), so
that ``SymmetryAnalysis.protostructure_label`` is the label pymatgen builds with the same library
at the same tolerance, and ``dof == count_crystal_dof(protostructure_label)``. Multiplicities and
free-parameter counts come from pymatgen's Wyckoff tables (``WYCKOFF_MULTIPLICITY_DICT``,
``WYCKOFF_POSITION_PARAM_DICT``), which ``count_crystal_dof`` uses too.

Magnetic moments and oxidation states are ignored: sites are told apart by element only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, NamedTuple

from mliapdb.config import DEFAULT_SYMPREC, SYMPREC_RANGE

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

METHODS: tuple[str, ...] = ("moyopy", "spglib")
"""Symmetry libraries that :func:`analyze_symmetry` can use."""


@dataclass(frozen=True)
class WyckoffOrbit:
    """One crystallographic orbit (set of symmetry-equivalent sites) of a structure.

    ``wyckoff_letter``, ``multiplicity`` and ``n_free`` refer to the canonical Wyckoff setting of
    the protostructure label (multiplicity and free coordinates are the same in every equivalent
    setting). ``site_symmetry`` is the detecting library's symbol, oriented w.r.t. the library's
    standardized cell, where the orbit has Wyckoff letter ``library_letter``. The two settings
    differ by an origin shift or an axis permutation; only an axis permutation (some orthorhombic
    groups, ~2% of MP materials) makes the ITA symbol of ``wyckoff_letter`` a permutation of
    ``site_symmetry`` (same point group, e.g. ``"m2m"`` for ``"2mm"``).
    """

    orbit_index: int
    """0-based position in ``SymmetryAnalysis.orbits`` (sorted by element, letter, first site)."""
    element: str
    """Element symbol, e.g. ``"Mn"``."""
    wyckoff_letter: str
    """Canonical Wyckoff letter (as in the protostructure label), e.g. ``"e"``."""
    multiplicity: int
    """Number of sites of the orbit in the conventional cell."""
    site_symmetry: str
    """Oriented Hermann-Mauguin site-symmetry symbol, e.g. ``"-1"``, ``"2/m"``, ``"m.."``."""
    n_free: int
    """Free coordinates of the Wyckoff position (0..3)."""
    site_indices: tuple[int, ...] = ()
    """Indices of the orbit's sites in the analysed structure."""
    library_letter: str = ""
    """Wyckoff letter in the library's own standardized setting (before canonicalisation)."""


@dataclass(frozen=True)
class SymmetryAnalysis:
    """Space group, Wyckoff orbits and DOF of one structure at one tolerance."""

    symprec: float
    """Distance tolerance (Angstrom) that was requested."""
    angle_tolerance: float | None
    """Angle tolerance (degrees), or ``None`` for the library default."""
    method: str
    """``"moyopy"`` or ``"spglib"``."""
    library_version: str
    """Version of the library named by ``method``."""
    spacegroup_number: int
    spacegroup_symbol: str
    """Short Hermann-Mauguin symbol without spaces, e.g. ``"P2_1/c"``."""
    crystal_system: str
    """triclinic|monoclinic|orthorhombic|tetragonal|trigonal|hexagonal|cubic."""
    pearson_symbol: str
    """As the library writes it: moyopy uses ``S`` for base-centred (``oS8``), spglib ``C``."""
    protostructure_label: str
    """AFLOW-style label as ``pymatgen.analysis.prototypes`` builds it with the same library."""
    lattice_dof: int
    wyckoff_dof: int
    dof: int
    """``lattice_dof + wyckoff_dof``."""
    orbits: tuple[WyckoffOrbit, ...]


class _Detected(NamedTuple):
    """What a symmetry library reports, reduced to what the analysis needs."""

    number: int
    symbol: str
    pearson_symbol: str
    orbit_of_site: list[int]  # representative site index of each site's orbit
    wyckoffs: list[str]
    site_symmetries: list[str]
    n_conventional: int  # sites in the conventional standardized cell
    version: str


def lattice_dof_for(crystal_system: str) -> int:
    """Lattice parameters free under the crystal family of ``crystal_system``."""
    from mliapdb.materials.wyckoff_tables import (
        CRYSTAL_FAMILY_SYMBOLS,
        CRYSTAL_LATTICE_PARAMETERS_COUNTS,
    )

    try:
        return CRYSTAL_LATTICE_PARAMETERS_COUNTS[CRYSTAL_FAMILY_SYMBOLS[crystal_system.lower()]]
    except KeyError:
        raise ValueError(f"unknown crystal system {crystal_system!r}") from None


def _detect_moyopy(
    structure: Structure, symprec: float, angle_tolerance: float | None
) -> _Detected:
    import moyopy
    from moyopy.interface import MoyoAdapter

    # moyo logs "Omitted N primitive-cell symmetry operations ..." (harmless) at WARNING,
    # which would land on the CLI's stderr for many MP cells.
    logging.getLogger("moyo").setLevel(logging.ERROR)
    angle = None if angle_tolerance is None else math.radians(angle_tolerance)
    data = moyopy.MoyoDataset(
        MoyoAdapter.from_structure(structure), symprec=symprec, angle_tolerance=angle
    )
    return _Detected(
        number=data.number,
        symbol=moyopy.SpaceGroupType(data.number).hm_short.replace(" ", ""),
        pearson_symbol=data.pearson_symbol,
        orbit_of_site=list(data.orbits),
        wyckoffs=list(data.wyckoffs),
        site_symmetries=list(data.site_symmetry_symbols),
        n_conventional=data.std_cell.num_atoms,
        version=moyopy.__version__,
    )


def _detect_spglib(
    structure: Structure, symprec: float, angle_tolerance: float | None
) -> _Detected:
    import spglib

    from mliapdb.materials.wyckoff_tables import CRYSTAL_FAMILY_SYMBOLS

    cell = (structure.lattice.matrix, structure.frac_coords, structure.atomic_numbers)
    angle = -1.0 if angle_tolerance is None else float(angle_tolerance)
    try:
        data = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle)
    except spglib.SpglibError as exc:  # raised instead of returning None when so configured
        raise ValueError(f"spglib found no symmetry: {exc}") from exc
    if data is None:
        raise ValueError(f"spglib found no symmetry: {spglib.get_error_message()}")
    number = int(data.number)
    symbol = data.international
    # Pearson symbol as pymatgen's SpacegroupAnalyzer.get_pearson_symbol builds it.
    centering = "C" if symbol[0] in "ABCS" else symbol[0]
    n_conv = len(data.std_types)
    family = CRYSTAL_FAMILY_SYMBOLS[_crystal_system(number)]
    return _Detected(
        number=number,
        symbol=symbol,
        pearson_symbol=f"{family}{centering}{n_conv}",
        # crystallographic_orbits (symmetry of the primitive cell) like moyopy's orbits; spglib's
        # equivalent_atoms can split an orbit of a supercell input in two.
        orbit_of_site=[int(i) for i in data.crystallographic_orbits],
        wyckoffs=list(data.wyckoffs),
        site_symmetries=list(data.site_symmetry_symbols),
        n_conventional=n_conv,
        version=spglib.__version__,
    )


def _crystal_system(number: int) -> str:
    import moyopy

    return moyopy.SpaceGroupType(number).crystal_system.lower()


def _raw_wyckoff_string(labels: Sequence[tuple[str, str]]) -> str:
    """Element-wise Wyckoff string of (element, letter) per orbit, as pymatgen builds it
    before canonicalisation (``"1a2e_1b"``)."""
    groups = []
    for _, per_element in groupby(sorted(labels), key=lambda x: x[0]):
        letters = [letter for _, letter in per_element]
        groups.append("".join(f"{len(list(g))}{k}" for k, g in groupby(letters)))
    return "_".join(groups)


def _canonical_relabelling(labels: Sequence[tuple[str, str]], number: int) -> tuple[str, dict]:
    """pymatgen's canonical Wyckoff substring and one letter translation that yields it."""
    from mliapdb.materials.wyckoff_tables import (
        canonicalize_element_wyckoffs,
        sort_and_score_element_wyckoffs,
        wyckoff_relabellings,
    )

    raw = _raw_wyckoff_string(labels)
    canonical = canonicalize_element_wyckoffs(raw, number)
    for trans in wyckoff_relabellings()[str(number)]:
        if sort_and_score_element_wyckoffs(raw.translate(str.maketrans(trans)))[0] == canonical:
            return canonical, trans
    raise AssertionError(f"no relabelling gives {canonical} from {raw}")  # pragma: no cover


def check_tolerances(symprec: float, angle_tolerance: float | None = None) -> None:
    """Raise ValueError for a ``symprec`` outside :data:`mliapdb.config.SYMPREC_RANGE`
    (Angstrom) or NaN, or an angle tolerance outside (0, 90) degrees."""
    lo, hi = SYMPREC_RANGE
    if isinstance(symprec, bool) or not isinstance(symprec, int | float) or not (
        lo <= symprec <= hi
    ):
        raise ValueError(f"symprec {symprec!r} is outside [{lo:g}, {hi:g}] Angstrom")
    if angle_tolerance is not None and not 0 < angle_tolerance < 90:
        raise ValueError(f"angle_tolerance {angle_tolerance!r} is outside (0, 90) degrees")


def analyze_symmetry(
    structure: Structure,
    symprec: float = DEFAULT_SYMPREC,
    method: str = "moyopy",
    angle_tolerance: float | None = None,
    composition: Composition | None = None,
) -> SymmetryAnalysis:
    """Space group, canonical Wyckoff orbits and DOF of an ordered ``structure``.

    Args:
        structure: ordered pymatgen Structure (any cell: primitive, conventional or supercell).
        symprec: distance tolerance in Angstrom.
        method: ``"moyopy"`` or ``"spglib"``.
        angle_tolerance: angle tolerance in degrees; ``None`` is the library default (moyopy:
            none; spglib: -1, i.e. none). pymatgen's spglib label uses 5 degrees.
        composition: ``structure.composition`` where the caller has it already.

    Raises:
        ValueError: unknown method, tolerance out of range (:func:`check_tolerances`),
            disordered structure, failed symmetry search, or orbits whose sizes contradict
            their Wyckoff multiplicities.
    """
    from mliapdb.materials.wyckoff_tables import (
        prototype_formula,
        wyckoff_free_params,
        wyckoff_multiplicities,
    )

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    check_tolerances(symprec, angle_tolerance)
    if not structure.is_ordered:
        raise ValueError("symmetry analysis needs an ordered structure")
    detect = _detect_moyopy if method == "moyopy" else _detect_spglib
    found = detect(structure, symprec, angle_tolerance)

    members: dict[int, list[int]] = {}
    for i, rep in enumerate(found.orbit_of_site):
        members.setdefault(rep, []).append(i)
    orbit_sites = list(members.values())
    labels = [(structure[s[0]].specie.symbol, found.wyckoffs[s[0]]) for s in orbit_sites]

    number, n_sites = found.number, len(structure)
    multiplicities = wyckoff_multiplicities()[str(number)]
    params = wyckoff_free_params()[str(number)]
    canonical, trans = _canonical_relabelling(labels, number)

    drafts = []
    for sites, (element, letter) in zip(orbit_sites, labels, strict=True):
        canon_letter = trans.get(ord(letter), letter)
        multiplicity = multiplicities[canon_letter]
        # The orbit's share of the input cell must match its share of the conventional cell.
        if len(sites) * found.n_conventional != multiplicity * n_sites:
            raise ValueError(
                f"{method} orbit of {len(sites)}/{n_sites} {element} sites at Wyckoff "
                f"{letter} (multiplicity {multiplicity}/{found.n_conventional}) is inconsistent"
            )
        drafts.append(
            (
                element,
                canon_letter,
                sites[0],
                dict(
                    element=element,
                    wyckoff_letter=canon_letter,
                    multiplicity=multiplicity,
                    site_symmetry=found.site_symmetries[sites[0]],
                    n_free=params[canon_letter],
                    site_indices=tuple(sites),
                    library_letter=letter,
                ),
            )
        )
    drafts.sort(key=lambda d: d[:3])
    orbits = tuple(WyckoffOrbit(orbit_index=i, **d[3]) for i, d in enumerate(drafts))

    crystal_system = _crystal_system(number)
    lattice_dof = lattice_dof_for(crystal_system)
    wyckoff_dof = sum(o.n_free for o in orbits)
    comp = composition if composition is not None else structure.composition
    label = (
        f"{prototype_formula(comp)}_{found.pearson_symbol}_{number}_{canonical}"
        f":{comp.chemical_system}"
    )
    return SymmetryAnalysis(
        symprec=symprec,
        angle_tolerance=angle_tolerance,
        method=method,
        library_version=found.version,
        spacegroup_number=number,
        spacegroup_symbol=found.symbol,
        crystal_system=crystal_system,
        pearson_symbol=found.pearson_symbol,
        protostructure_label=label,
        lattice_dof=lattice_dof,
        wyckoff_dof=wyckoff_dof,
        dof=lattice_dof + wyckoff_dof,
        orbits=orbits,
    )


def spacegroup_number(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, method: str = "moyopy"
) -> int:
    """International space-group number of ``structure`` (no Wyckoff analysis)."""
    check_tolerances(symprec)
    detect = _detect_moyopy if method == "moyopy" else _detect_spglib
    return int(detect(structure, symprec, None).number)
