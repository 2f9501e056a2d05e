"""Tests of mliapdb.materials.symmetry: hand-checked structures, and every distinct MP material of
the
shared data against pymatgen's protostructure labels, pyxtal and the ITA site symmetries."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.prototypes import (
    count_crystal_dof,
    count_crystal_sites,
    get_protostructure_label_from_moyopy,
    get_protostructure_label_from_spglib,
)
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from mliapdb.config import DEFAULT_SYMPREC
from mliapdb.materials.symmetry import (
    METHODS,
    SymmetryAnalysis,
    WyckoffOrbit,
    analyze_symmetry,
    lattice_dof_for,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SYMPREC = 0.1
SPGLIB_PMG_ANGLE = 5.0  # the angle tolerance (degrees) of get_protostructure_label_from_spglib
LATTICE_DOF = {
    "triclinic": 6,
    "monoclinic": 4,
    "orthorhombic": 3,
    "tetragonal": 2,
    "trigonal": 2,
    "hexagonal": 2,
    "cubic": 1,
}
FAMILY_LETTER = {
    "triclinic": "a",
    "monoclinic": "m",
    "orthorhombic": "o",
    "tetragonal": "t",
    "trigonal": "h",
    "hexagonal": "h",
    "cubic": "c",
}
CENTERING_ORDER = {"P": 1, "A": 2, "B": 2, "C": 2, "S": 2, "I": 2, "F": 4, "R": 3}


def _material_id(entry: dict) -> str:
    mid = (entry.get("data") or {}).get("material_id") or entry["entry_id"]
    return re.sub(r"-GGA(\+U)?$", "", str(mid))


@pytest.fixture(scope="module")
def materials(mp_dir: Path) -> dict[str, Structure]:
    """One DFT-relaxed structure per distinct MP material (first occurrence, sorted files)."""
    out: dict[str, Structure] = {}
    for path in sorted(mp_dir.glob("*.json.gz")):
        with gzip.open(path, "rt") as fh:
            entries = json.load(fh)
        if not isinstance(entries, list):  # elemental references: no structures
            continue
        for entry in entries:
            mid = _material_id(entry)
            if mid not in out:
                out[mid] = ComputedStructureEntry.from_dict(entry).structure
    assert len(out) > 1000
    return out


@pytest.fixture(scope="module")
def moyopy_analyses(materials: dict[str, Structure]) -> dict[str, SymmetryAnalysis]:
    return {mid: analyze_symmetry(s, symprec=SYMPREC) for mid, s in materials.items()}


@pytest.fixture(scope="module")
def spglib_analyses(materials: dict[str, Structure]) -> dict[str, SymmetryAnalysis]:
    """spglib at pymatgen's angle tolerance, comparable with its labels and with pyxtal."""
    return {
        mid: analyze_symmetry(s, symprec=SYMPREC, method="spglib", angle_tolerance=SPGLIB_PMG_ANGLE)
        for mid, s in materials.items()
    }


def _check_consistency(analysis: SymmetryAnalysis, structure: Structure) -> None:
    """Internal consistency of one analysis with its structure and its own label."""
    orbits = analysis.orbits
    assert [o.orbit_index for o in orbits] == list(range(len(orbits)))
    assert sorted(i for o in orbits for i in o.site_indices) == list(range(len(structure)))
    for o in orbits:
        assert {structure[i].specie.symbol for i in o.site_indices} == {o.element}
        assert 0 <= o.n_free <= 3
    assert analysis.wyckoff_dof == sum(o.n_free for o in orbits)
    assert analysis.lattice_dof == LATTICE_DOF[analysis.crystal_system]
    assert analysis.dof == analysis.lattice_dof + analysis.wyckoff_dof
    assert analysis.dof == count_crystal_dof(analysis.protostructure_label)

    # Multiplicities (conventional cell) against the number of sites of the input cell.
    n_conv = sum(o.multiplicity for o in orbits)
    pearson = analysis.pearson_symbol
    assert pearson == f"{FAMILY_LETTER[analysis.crystal_system]}{pearson[1]}{n_conv}"
    assert n_conv == count_crystal_sites(analysis.protostructure_label)
    order = CENTERING_ORDER[pearson[1]]
    assert n_conv % order == 0
    n_prim = n_conv // order
    assert len(structure) % n_prim == 0
    n_cells = len(structure) // n_prim  # primitive cells in the input cell
    for o in orbits:
        assert o.multiplicity % order == 0
        assert len(o.site_indices) == o.multiplicity // order * n_cells
    counts: Counter[str] = Counter()
    for o in orbits:
        counts[o.element] += o.multiplicity
    composition = Composition(counts)
    assert composition.reduced_formula == structure.composition.reduced_formula


# --- hand-checked structures ------------------------------------------------------------------


def _rocksalt() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _rutile() -> Structure:
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )


def _wurtzite() -> Structure:
    return Structure.from_spacegroup(
        "P6_3mc",
        Lattice.hexagonal(3.25, 5.21),
        ["Zn", "O"],
        [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]],
    )


def _triclinic(n_sites: int = 5) -> Structure:
    rng = np.random.default_rng(7)
    lattice = Lattice.from_parameters(5.1, 6.3, 7.2, 81.0, 97.0, 104.0)
    species = ["Li", "Fe", "O", "O", "P", "Na", "O"][:n_sites]
    return Structure.from_spacegroup("P1", lattice, species, rng.random((n_sites, 3)))


@pytest.mark.parametrize("method", METHODS)
def test_rocksalt(method: str) -> None:
    structure = _rocksalt()
    result = analyze_symmetry(structure, method=method)
    assert (result.spacegroup_number, result.spacegroup_symbol) == (225, "Fm-3m")
    assert result.crystal_system == "cubic"
    assert result.pearson_symbol == "cF8"
    assert result.protostructure_label == "AB_cF8_225_a_b:Cl-Na"
    assert (result.lattice_dof, result.wyckoff_dof, result.dof) == (1, 0, 1)
    assert [
        (o.element, o.wyckoff_letter, o.multiplicity, o.site_symmetry, o.n_free)
        for o in result.orbits
    ] == [("Cl", "a", 4, "m-3m", 0), ("Na", "b", 4, "m-3m", 0)]
    assert result.symprec == DEFAULT_SYMPREC and result.method == method
    _check_consistency(result, structure)
    # The primitive cell and a supercell give the same orbits (fewer or more sites each).
    for cell in (structure.get_primitive_structure(), structure * (2, 1, 1)):
        other = analyze_symmetry(cell, method=method)
        assert other.protostructure_label == result.protostructure_label
        assert other.dof == 1
        _check_consistency(other, cell)


@pytest.mark.parametrize("method", METHODS)
def test_rutile(method: str) -> None:
    structure = _rutile()
    result = analyze_symmetry(structure, method=method)
    assert (result.spacegroup_number, result.spacegroup_symbol) == (136, "P4_2/mnm")
    # pymatgen orders elements alphabetically: O (A2, at 4f) before Ti (B, at 2a).
    assert result.protostructure_label == "A2B_tP6_136_f_a:O-Ti"
    assert (result.lattice_dof, result.wyckoff_dof, result.dof) == (2, 1, 3)
    orbits = {o.element: o for o in result.orbits}
    assert (orbits["Ti"].wyckoff_letter, orbits["Ti"].multiplicity, orbits["Ti"].n_free) == (
        "a",
        2,
        0,
    )
    assert (orbits["O"].wyckoff_letter, orbits["O"].multiplicity, orbits["O"].n_free) == ("f", 4, 1)
    assert orbits["Ti"].site_symmetry == "m.mm"
    assert orbits["O"].site_symmetry == "m.2m"
    _check_consistency(result, structure)


@pytest.mark.parametrize("method", METHODS)
def test_wurtzite(method: str) -> None:
    structure = _wurtzite()
    result = analyze_symmetry(structure, method=method)
    assert (result.spacegroup_number, result.spacegroup_symbol) == (186, "P6_3mc")
    assert result.crystal_system == "hexagonal"
    assert result.protostructure_label == "AB_hP4_186_b_b:O-Zn"
    assert (result.lattice_dof, result.wyckoff_dof, result.dof) == (2, 2, 4)
    assert [(o.element, o.wyckoff_letter, o.site_symmetry, o.n_free) for o in result.orbits] == [
        ("O", "b", "3m.", 1),
        ("Zn", "b", "3m.", 1),
    ]
    _check_consistency(result, structure)


@pytest.mark.parametrize("method", METHODS)
def test_triclinic_p1(method: str) -> None:
    structure = _triclinic(5)
    result = analyze_symmetry(structure, method=method)
    assert result.spacegroup_number == 1
    assert result.crystal_system == "triclinic"
    assert len(result.orbits) == 5
    assert all((o.wyckoff_letter, o.multiplicity, o.n_free) == ("a", 1, 3) for o in result.orbits)
    assert (result.lattice_dof, result.wyckoff_dof, result.dof) == (6, 15, 21)
    _check_consistency(result, structure)


def test_orbit_order_and_site_indices() -> None:
    structure = _rutile()
    result = analyze_symmetry(structure)
    assert [o.element for o in result.orbits] == ["O", "Ti"]  # element, then letter
    for o in result.orbits:
        assert isinstance(o, WyckoffOrbit)
        assert o.library_letter
        assert len(o.site_indices) == o.multiplicity  # conventional input cell
    assert analyze_symmetry(structure) == result  # deterministic (and hashable, frozen)
    hash(result)


def test_angle_tolerance_is_recorded() -> None:
    for method in METHODS:
        result = analyze_symmetry(_wurtzite(), method=method, angle_tolerance=5.0)
        assert result.angle_tolerance == 5.0
        assert result.dof == 4


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="method"):
        analyze_symmetry(_rocksalt(), method="aflow")
    disordered = _rocksalt()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    with pytest.raises(ValueError, match="ordered"):
        analyze_symmetry(disordered)


def test_lattice_dof_for() -> None:
    for system, dof in LATTICE_DOF.items():
        assert lattice_dof_for(system) == dof
        assert lattice_dof_for(system.capitalize()) == dof
    with pytest.raises(ValueError):
        lattice_dof_for("rhombohedral-ish")


def test_library_version() -> None:
    import moyopy
    import spglib

    assert analyze_symmetry(_rocksalt()).library_version == moyopy.__version__
    assert analyze_symmetry(_rocksalt(), method="spglib").library_version == spglib.__version__


# --- every distinct material of the shared MP data --------------------------------------------


def test_moyopy_matches_pymatgen_on_all_materials(
    materials: dict[str, Structure], moyopy_analyses: dict[str, SymmetryAnalysis]
) -> None:
    bad = []
    for mid, structure in materials.items():
        label = get_protostructure_label_from_moyopy(structure, symprec=SYMPREC)
        result = moyopy_analyses[mid]
        if result.protostructure_label != label or result.dof != count_crystal_dof(label):
            bad.append((mid, result.protostructure_label, label))
    assert not bad


def test_moyopy_matches_pymatgen_at_tight_symprec(materials: dict[str, Structure]) -> None:
    """symprec 0.01 on every fourth material (to keep the suite fast)."""
    bad = []
    for mid in sorted(materials)[::4]:
        structure = materials[mid]
        label = get_protostructure_label_from_moyopy(structure, symprec=0.01)
        result = analyze_symmetry(structure, symprec=0.01)
        if result.protostructure_label != label or result.dof != count_crystal_dof(label):
            bad.append((mid, result.protostructure_label, label))
    assert not bad


def test_spglib_matches_pymatgen_on_all_materials(
    materials: dict[str, Structure], spglib_analyses: dict[str, SymmetryAnalysis]
) -> None:
    """Same labels as pymatgen's spglib path, except where pymatgen's label counts more sites
    than the conventional cell holds: it groups sites by spglib's ``equivalent_atoms``, which
    can split an orbit of a supercell in two; we use ``crystallographic_orbits`` like moyopy."""
    bad, split = [], []
    for mid, structure in materials.items():
        label = get_protostructure_label_from_spglib(structure, init_symprec=SYMPREC)
        result = spglib_analyses[mid]
        if result.protostructure_label == label and result.dof == count_crystal_dof(label):
            continue
        n_conv = sum(o.multiplicity for o in result.orbits)
        if count_crystal_sites(label) > n_conv and label.split("_")[2] == str(
            result.spacegroup_number
        ):
            split.append(mid)
        else:
            bad.append((mid, result.protostructure_label, label))
    assert not bad
    assert len(split) <= 0.01 * len(materials), split


@pytest.mark.parametrize("method", METHODS)
def test_consistency_on_all_materials(
    method: str,
    materials: dict[str, Structure],
    moyopy_analyses: dict[str, SymmetryAnalysis],
    spglib_analyses: dict[str, SymmetryAnalysis],
) -> None:
    analyses = moyopy_analyses if method == "moyopy" else spglib_analyses
    for mid, structure in materials.items():
        result = analyses[mid]
        assert result.method == method
        try:
            _check_consistency(result, structure)
        except AssertionError as exc:
            raise AssertionError(f"{mid}: {result}") from exc


def test_moyopy_primitive_cell_size(
    materials: dict[str, Structure], moyopy_analyses: dict[str, SymmetryAnalysis]
) -> None:
    """Conventional multiplicities / centering order = size of moyopy's primitive cell."""
    import moyopy
    from moyopy.interface import MoyoAdapter

    for mid, structure in materials.items():
        result = moyopy_analyses[mid]
        data = moyopy.MoyoDataset(MoyoAdapter.from_structure(structure), symprec=SYMPREC)
        order = CENTERING_ORDER[result.pearson_symbol[1]]
        assert sum(o.multiplicity for o in result.orbits) // order == data.prim_std_cell.num_atoms


def test_moyopy_and_spglib_mostly_agree(
    moyopy_analyses: dict[str, SymmetryAnalysis], spglib_analyses: dict[str, SymmetryAnalysis]
) -> None:
    """moyopy and spglib (5 degrees) at symprec 0.1: a few percent of materials disagree."""
    disagree = []
    for mid, a in moyopy_analyses.items():
        b = spglib_analyses[mid]
        # moyopy writes base-centred Pearson symbols with S (oS8), spglib/pymatgen with C.
        label_a = re.sub(r"_([om])S(\d)", r"_\1C\2", a.protostructure_label)
        if label_a != b.protostructure_label:
            disagree.append((mid, a.spacegroup_symbol, b.spacegroup_symbol, a.dof, b.dof))
    assert 0 < len(disagree) < 0.05 * len(moyopy_analyses), disagree


# --- pyxtal: DOF and ITA site symmetries ------------------------------------------------------


def _pyxtal_site_symmetries(number: int, cache: dict[int, dict[str, str]]) -> dict[str, str]:
    from pyxtal.symmetry import Group

    if number not in cache:
        table = {}
        for wp in Group(number):
            wp.get_site_symmetry()
            table[wp.letter] = wp.site_symm
        cache[number] = table
    return cache[number]


def test_dof_matches_pyxtal_on_varied_space_groups(
    materials: dict[str, Structure],
    moyopy_analyses: dict[str, SymmetryAnalysis],
    spglib_analyses: dict[str, SymmetryAnalysis],
) -> None:
    """pyxtal's get_dof (lattice DOF of the crystal family + free coordinates of each orbit)
    after ``from_seed`` at the same tolerance (spglib through pymatgen, 5 degrees), on the
    smallest material of every other space group found (about 60)."""
    from pyxtal import pyxtal

    smallest: dict[int, str] = {}
    for mid in sorted(materials):
        number = moyopy_analyses[mid].spacegroup_number
        if number not in smallest or len(materials[mid]) < len(materials[smallest[number]]):
            smallest[number] = mid
    sample = [smallest[number] for number in sorted(smallest)[::2]]
    assert len(sample) > 50
    same_group: Counter[str] = Counter()
    for mid in sample:
        crystal = pyxtal()
        with contextlib.redirect_stdout(io.StringIO()):
            crystal.from_seed(materials[mid], tol=SYMPREC)
        for method, analyses in (("moyopy", moyopy_analyses), ("spglib", spglib_analyses)):
            result = analyses[mid]
            if crystal.group.number == result.spacegroup_number:
                same_group[method] += 1
                assert crystal.get_dof() == result.dof, (mid, method, result)
    assert same_group["spglib"] == len(sample)
    assert same_group["moyopy"] >= 0.9 * len(sample)


def test_site_symmetry_matches_ita_tables(
    moyopy_analyses: dict[str, SymmetryAnalysis],
) -> None:
    """Site symmetry = pyxtal's (ITA) symbol of the library's letter; also of the canonical
    letter, except where pymatgen canonicalises with an axis permutation (orthorhombic)."""
    cache: dict[int, dict[str, str]] = {}
    permuted = set()
    for mid, result in moyopy_analyses.items():
        table = _pyxtal_site_symmetries(result.spacegroup_number, cache)
        for o in result.orbits:
            assert o.site_symmetry == table[o.library_letter], (mid, o)
            if o.site_symmetry != table[o.wyckoff_letter]:
                assert result.crystal_system == "orthorhombic", (mid, o)
                permuted.add(mid)
    assert len(permuted) < 0.05 * len(moyopy_analyses)


def test_wyckoff_tables_equal_pymatgens(materials: dict[str, Structure]) -> None:
    """mliapdb.materials.wyckoff_tables (read without the AFLOW library) equals
    pymatgen.analysis.prototypes: its tables, and its functions on every relabelling of every
    space group and on every shared material's composition."""
    import pymatgen.analysis.prototypes as proto

    from mliapdb.materials import wyckoff_tables as wt

    assert wt.wyckoff_multiplicities() == proto.WYCKOFF_MULTIPLICITY_DICT
    assert wt.wyckoff_free_params() == proto.WYCKOFF_POSITION_PARAM_DICT
    assert wt.wyckoff_relabellings() == proto.WYCKOFF_POSITION_RELAB_DICT
    assert wt.CRYSTAL_FAMILY_SYMBOLS == proto.CRYSTAL_FAMILY_SYMBOLS
    assert wt.CRYSTAL_LATTICE_PARAMETERS_COUNTS == proto.CRYSTAL_LATTICE_PARAMETERS_COUNTS
    n = 0
    for spg, letters in proto.WYCKOFF_MULTIPLICITY_DICT.items():
        ordered = sorted(letters)
        if not ordered:
            continue
        for raw in ("".join(f"{i + 1}{x}" for i, x in enumerate(ordered[:3])),
                    f"2{ordered[0]}_1{ordered[-1]}", f"1{ordered[-1]}_3{ordered[0]}"):
            assert wt.canonicalize_element_wyckoffs(raw, spg) == \
                proto.canonicalize_element_wyckoffs(raw, spg)
            assert wt.sort_and_score_element_wyckoffs(raw) == \
                proto.sort_and_score_element_wyckoffs(raw)
            n += 1
    assert n >= 3 * 230
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for structure in materials.values():
            comp = structure.composition
            assert wt.prototype_formula(comp) == \
                proto.get_prototype_formula_from_composition(comp)
