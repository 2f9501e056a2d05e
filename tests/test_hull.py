"""mliapdb.materials.hull.compute_hull against pymatgen's PhaseDiagram / PatchedPhaseDiagram.

Real data: every entry list in ``mp/`` (each file its own hull) and a few thousand MP
compositions of ``compositions/`` (elements at 0 eV/atom); plus hand-made cases with known
answers and checks that the three solvers inside compute_hull (vectorised simplex, qhull,
HiGHS) agree.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PatchedPhaseDiagram, PDEntry, PhaseDiagram
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

import mliapdb.materials.hull as hull_mod
from mliapdb.materials.hull import HullResult, compute_hull

TOL = 1e-6  # eV/atom


def _hull_of(entries: list) -> HullResult:
    return compute_hull(
        [e.composition.get_el_amt_dict() for e in entries], [e.energy_per_atom for e in entries]
    )


def _pd_entries(comps: list[dict], energies) -> list[PDEntry]:
    return [
        PDEntry(Composition(c), e * sum(c.values())) for c, e in zip(comps, energies, strict=True)
    ]


def _assert_matches(pd: PhaseDiagram, entries: list, result: HullResult, label: str) -> None:
    """compute_hull == pymatgen for every entry (e_above_hull, e_form, e_ref, references)."""
    ref_hull = np.array([pd.get_e_above_hull(e) for e in entries])
    ref_form = np.array([pd.get_form_energy_per_atom(e) for e in entries])
    ref_eref = np.array([pd.get_reference_energy_per_atom(e.composition) for e in entries])
    np.testing.assert_allclose(result.e_above_hull, ref_hull, rtol=0, atol=TOL, err_msg=label)
    np.testing.assert_allclose(result.e_form_per_atom, ref_form, rtol=0, atol=TOL, err_msg=label)
    np.testing.assert_allclose(result.e_ref_per_atom, ref_eref, rtol=0, atol=TOL, err_msg=label)
    assert result.elemental_refs == pytest.approx(
        {el.symbol: e.energy_per_atom for el, e in pd.el_refs.items()}, abs=1e-12
    )
    assert (result.e_above_hull >= 0).all(), label
    stable = [i for i, e in enumerate(entries) if e in pd.stable_entries]
    assert (result.e_above_hull[stable] == 0).all(), label


# --- real MP entries: every list file is one complete chemical system -----------------------


@pytest.fixture(scope="module")
def mp_lists(mp_dir: Path) -> dict[str, list[dict]]:
    """Entry dicts of every ``mp/*.json.gz`` that holds a list (the elemental-reference file
    holds a dict and is skipped)."""
    out = {}
    for path in sorted(mp_dir.glob("*.json.gz")):
        with gzip.open(path, "rt") as fh:
            data = json.load(fh)
        if isinstance(data, list):
            out[path.name] = data
    return out


@pytest.fixture(scope="module")
def mp_entries(mp_lists: dict[str, list[dict]]) -> dict[str, list[ComputedEntry]]:
    """Entries without their structures: same composition and (MP2020-corrected) energy as
    ``ComputedStructureEntry.from_dict`` (checked below), five times faster to build."""
    return {
        name: [
            ComputedEntry.from_dict({k: v for k, v in d.items() if k != "structure"}) for d in data
        ]
        for name, data in mp_lists.items()
    }


def test_entries_without_structure_are_equivalent(mp_lists, mp_entries):
    name = min(mp_lists, key=lambda name: len(mp_lists[name]))
    full = [ComputedStructureEntry.from_dict(d) for d in mp_lists[name]]
    for a, b in zip(full, mp_entries[name], strict=True):
        assert a.composition == b.composition and a.energy == b.energy


def test_mp_files_match_phase_diagram(mp_entries: dict[str, list[ComputedEntry]]):
    assert len(mp_entries) >= 7, sorted(mp_entries)
    for name, entries in mp_entries.items():
        result = _hull_of(entries)
        _assert_matches(PhaseDiagram(entries), entries, result, name)
        assert (result.e_above_hull == 0).sum() >= len(result.elemental_refs), name


def test_mp_2025_stored_hull_values(mp_lists: dict[str, list[dict]], mp_entries):
    """The 2025 Na-Fe-P-O file carries MP's own e_above_hull / e_form_per_atom / is_stable."""
    name = "Na-Fe-P-O_entries_2025.json.gz"
    if name not in mp_lists:
        pytest.skip(f"{name} not in the shared data")
    data = mp_lists[name]
    result = _hull_of(mp_entries[name])
    stored = {key: np.array([d[key] for d in data]) for key in ("e_above_hull", "e_form_per_atom")}
    np.testing.assert_allclose(result.e_above_hull, stored["e_above_hull"], rtol=0, atol=TOL)
    np.testing.assert_allclose(result.e_form_per_atom, stored["e_form_per_atom"], rtol=0, atol=TOL)
    assert ((result.e_above_hull == 0) == np.array([d["is_stable"] for d in data])).all()


# --- real MP compositions (formation energies, elements at 0 eV/atom) -----------------------

CSV_ELEMENT_SETS = (
    {"Li", "Mn", "Fe", "Co", "Ni", "O", "P", "F"},  # up to 6-element compositions
    {"Ba", "Sr", "Ti", "Zr", "O", "N", "S", "Se"},
)


@pytest.fixture(scope="module")
def csv_rows(data_dir: Path) -> list[tuple[str, float]]:
    rows = []
    for split in ("train", "val", "test"):
        with open(data_dir / "compositions" / f"CritExam__Ef_{split}.csv", newline="") as fh:
            rows += [(r["formula"], float(r["target"])) for r in csv.DictReader(fh)]
    assert len(rows) == 85_014
    return rows


def _patched_e_above_hull(ppd: PatchedPhaseDiagram, entries: list, entry) -> float:
    """PatchedPhaseDiagram's e_above_hull, but exact (PhaseDiagram of the entry's own system)
    for an entry that no patch covers, where PatchedPhaseDiagram itself would use SLSQP."""
    try:
        ppd.get_pd_for_entry(entry)
    except ValueError:
        space = set(entry.elements)
        pd = PhaseDiagram([e for e in entries if set(e.elements) <= space])
        return pd.get_e_above_hull(entry)
    return ppd.get_e_above_hull(entry)


@pytest.mark.parametrize("elements", CSV_ELEMENT_SETS, ids=lambda s: "-".join(sorted(s)))
def test_mp_compositions_match_patched_phase_diagram(
    csv_rows: list[tuple[str, float]], elements: set[str]
):
    """All MP compositions within a set of elements, as one dataset, vs PatchedPhaseDiagram."""
    symbol = re.compile(r"[A-Z][a-z]?")
    rows = [(f, e) for f, e in csv_rows if set(symbol.findall(f)) <= elements]
    comps = [Composition(f) for f, _ in rows] + [Composition(el) for el in sorted(elements)]
    energies = [e for _, e in rows] + [0.0] * len(elements)
    entries = [PDEntry(c, e * c.num_atoms) for c, e in zip(comps, energies, strict=True)]
    assert len(entries) > 300
    result = compute_hull([c.get_el_amt_dict() for c in comps], energies)
    ppd = PatchedPhaseDiagram(entries)
    ref_hull = np.array([_patched_e_above_hull(ppd, entries, e) for e in entries])
    ref_form = np.array([ppd.get_form_energy_per_atom(e) for e in entries])
    np.testing.assert_allclose(result.e_above_hull, ref_hull, rtol=0, atol=TOL)
    np.testing.assert_allclose(result.e_form_per_atom, ref_form, rtol=0, atol=TOL)
    assert np.isfinite(result.e_above_hull).all()


# --- hand-made cases with known answers -----------------------------------------------------


def test_binary_known_answers():
    comps = [
        {"A": 1},  # 0: reference, mu_A = -1
        {"A": 3},  # 1: A polymorph, 0.1 eV/atom above
        {"B": 2},  # 2: reference, mu_B = -2
        {"A": 1, "B": 1},  # 3: stable, Ef = -0.5
        {"A": 2, "B": 2},  # 4: same composition, 0.1 above
        {"A": 3, "B": 1},  # 5: Ef = -0.1; hull at x_B = 0.25 is -0.25
        {"A": 1, "B": 3},  # 6: Ef = -0.25 exactly on the tie line AB-B: on hull
    ]
    e_ref = np.array([-1, -1, -2, -1.5, -1.5, -1.25, -1.75])
    e_form = np.array([0, 0.1, 0, -0.5, -0.4, -0.1, -0.25])
    result = compute_hull(comps, e_ref + e_form)
    assert result.elemental_refs == {"A": -1.0, "B": -2.0}
    np.testing.assert_allclose(result.e_ref_per_atom, e_ref, atol=1e-12)
    np.testing.assert_allclose(result.e_form_per_atom, e_form, atol=1e-12)
    np.testing.assert_allclose(
        result.e_above_hull, [0, 0.1, 0, 0, 0.1, 0.15, 0], rtol=0, atol=1e-12
    )
    assert result.e_above_hull[[0, 2, 3, 6]].tolist() == [0.0] * 4  # exactly 0 on the hull


def test_duplicate_polymorphs():
    """Identical stable polymorphs are both on the hull; the unstable one is above it."""
    comps = [{"Li": 1}, {"O": 1}, {"Li": 2, "O": 1}, {"Li": 4, "O": 2}, {"Li": 2, "O": 1}]
    energies = [-1.9, -4.9, -4.5, -4.5, -4.4]
    result = compute_hull(comps, energies)
    assert result.e_above_hull[[2, 3]].tolist() == [0.0, 0.0]
    assert result.e_above_hull[4] == pytest.approx(0.1, abs=1e-12)
    entries = _pd_entries(comps, energies)
    _assert_matches(PhaseDiagram(entries), entries, result, "Li-O")


def test_missing_elemental_reference_gives_nan():
    comps = [{"A": 1}, {"B": 1}, {"A": 1, "B": 1}, {"A": 1, "C": 1}, {"A": 1, "B": 1, "C": 1}]
    result = compute_hull(comps, [0.0, 0.0, -1.0, -5.0, -9.0])
    assert result.elemental_refs == {"A": 0.0, "B": 0.0}
    assert np.isnan(result.e_form_per_atom[3:]).all()
    assert np.isnan(result.e_above_hull[3:]).all()
    assert np.isnan(result.e_ref_per_atom[3:]).all()
    np.testing.assert_allclose(result.e_above_hull[:3], [0, 0, 0])
    np.testing.assert_allclose(result.e_form_per_atom[:3], [0, 0, -1])


def test_non_finite_energy_is_ignored():
    comps = [{"A": 1}, {"A": 1}, {"B": 1}, {"A": 1, "B": 1}, {"A": 1, "B": 1}]
    result = compute_hull(comps, [np.nan, -1.0, -1.0, -np.inf, -1.5])
    assert result.elemental_refs == {"A": -1.0, "B": -1.0}
    assert np.isnan(result.e_above_hull[[0, 3]]).all()
    assert np.isnan(result.e_form_per_atom[[0, 3]]).all()
    assert result.e_ref_per_atom[3] == pytest.approx(-1.0)  # defined by the composition
    np.testing.assert_allclose(result.e_above_hull[[1, 2, 4]], [0, 0, 0])


def test_flat_hull():
    """No compound below the elements: the hull is the plane Ef = 0 (qhull would be flat)."""
    comps = [{"A": 1}, {"B": 1}, {"C": 1}, {"A": 1, "B": 1, "C": 1}, {"A": 1, "C": 1}]
    energies = [0.0, -1.0, 2.0, 1 / 3, 1.2]  # Ef = 0 and +0.2
    result = compute_hull(comps, energies)
    np.testing.assert_allclose(result.e_form_per_atom, [0, 0, 0, 0, 0.2], atol=1e-12)
    assert result.e_above_hull[:4].tolist() == [0.0] * 4
    assert result.e_above_hull[4] == pytest.approx(0.2, abs=1e-12)
    entries = _pd_entries(comps, energies)
    _assert_matches(PhaseDiagram(entries), entries, result, "flat")


def test_points_exactly_on_tie_lines_and_planes():
    comps = [
        {"A": 1}, {"B": 1}, {"C": 1},
        {"B": 1, "C": 1},  # Ef = -0.4: stable
        {"B": 1, "C": 3}, {"B": 3, "C": 1},  # Ef = -0.2: exactly on the tie lines
        {"A": 1, "B": 1, "C": 2},  # Ef = -0.2: exactly on the A-BC-C tie plane
        {"A": 1, "B": 1, "C": 1},  # Ef = 0: hull there is 2/3 * -0.4
    ]  # fmt: skip
    e_form = [0, 0, 0, -0.4, -0.2, -0.2, -0.2, 0.0]
    result = compute_hull(comps, e_form)
    assert result.e_above_hull[:7].tolist() == [0.0] * 7
    assert result.e_above_hull[7] == pytest.approx(0.8 / 3, abs=1e-12)
    entries = _pd_entries(comps, e_form)
    _assert_matches(PhaseDiagram(entries), entries, result, "tie lines")


def test_random_six_element_system_matches_phase_diagram():
    """A dense random 6-element system (LP/simplex path, many ties at the elements)."""
    rng = np.random.default_rng(7)
    elements = ["Ag", "Bi", "Co", "Dy", "Er", "F"]
    comps = [{el: 1} for el in elements] + [{el: 1} for el in elements]
    for _ in range(150):
        chosen = rng.choice(elements, size=rng.integers(2, 7), replace=False)
        comps.append({str(el): int(rng.integers(1, 5)) for el in chosen})
    energies = rng.uniform(-1.0, 0.3, len(comps))
    energies[:6] = 0.0
    entries = _pd_entries(comps, energies)
    _assert_matches(PhaseDiagram(entries), entries, compute_hull(comps, energies), "random")


@pytest.mark.parametrize("path", ["qhull", "highs"])
def test_solvers_agree(mp_entries: dict[str, list[ComputedEntry]], monkeypatch, path: str):
    """Forcing every system through qhull, or through HiGHS, gives the simplex's results."""
    entries = mp_entries["Mn_Na_O_Y_entries.json.gz"]
    rng = np.random.default_rng(3)
    comps = [e.composition.get_el_amt_dict() for e in entries]
    energies = np.array([e.energy_per_atom for e in entries])
    energies += np.where([len(c) > 1 for c in comps], rng.normal(0, 0.05, len(comps)), 0.0)
    expected = compute_hull(comps, energies)

    def no_simplex(fracs, e_pad, problems):
        return [np.full(len(own), np.nan) for _, _, own in problems]

    monkeypatch.setattr(hull_mod, "_hull_energy_simplex", no_simplex)
    if path == "qhull":
        monkeypatch.setattr(hull_mod, "_QHULL_MIN_QUERIES", 1)
    else:
        monkeypatch.setattr(hull_mod, "_QHULL_MAX_ELEMENTS", 0)
    got = compute_hull(comps, energies)
    np.testing.assert_allclose(got.e_above_hull, expected.e_above_hull, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.e_form_per_atom, expected.e_form_per_atom)


def test_input_validation():
    empty = compute_hull([], [])
    assert empty.e_above_hull.shape == (0,) and empty.elemental_refs == {}
    with pytest.raises(ValueError, match="energies"):
        compute_hull([{"A": 1}], [0.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        compute_hull([{"A": 0}], [0.0])
    with pytest.raises(ValueError, match="invalid amount"):
        compute_hull([{"A": 1, "B": -1}], [0.0])
