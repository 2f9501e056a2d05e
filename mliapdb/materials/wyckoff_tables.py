"""pymatgen's Wyckoff tables and AFLOW-label canonicalisation without its prototype library.

``pymatgen.analysis.prototypes`` decodes its AFLOW prototype library (~2.5 s, a few hundred
structures through monty) and imports the structure matcher when imported; the symmetry
analysis needs none of that, only three small tables of the same package folder and four
short functions. The tables are read here from pymatgen's own files (gzip JSON, ms) and the
functions are pymatgen's (2026.10.16; MIT licence, (c) Pymatgen Development Team), kept
equal: ``tests/test_symmetry.py`` compares both on every shared material and every space
group's relabellings."""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import cache
from itertools import groupby
from pathlib import Path
from string import ascii_uppercase
from typing import Any

CRYSTAL_FAMILY_SYMBOLS = {
    "triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t",
    "trigonal": "h", "hexagonal": "h", "cubic": "c",
}
"""Crystal system -> AFLOW crystal-family letter (pymatgen's table)."""

CRYSTAL_LATTICE_PARAMETERS_COUNTS = {"a": 6, "m": 4, "o": 3, "t": 2, "h": 2, "c": 1}
"""Crystal family -> free lattice parameters (pymatgen's table)."""


def _folder() -> Path:
    spec = importlib.util.find_spec("pymatgen.analysis")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "prototypes"


def _load(name: str) -> Any:
    with gzip.open(_folder() / name, "rt") as fh:
        return json.load(fh)


@cache
def wyckoff_multiplicities() -> dict[str, dict[str, int]]:
    """Space group number (str) -> Wyckoff letter -> multiplicity."""
    return _load("wyckoff-position-multiplicities.json.gz")


@cache
def wyckoff_free_params() -> dict[str, dict[str, int]]:
    """Space group number (str) -> Wyckoff letter -> free coordinates."""
    return _load("wyckoff-position-params.json.gz")


@cache
def wyckoff_relabellings() -> dict[str, list[dict[int, str]]]:
    """Space group number (str) -> letter translations between equivalent settings."""
    return {spg: [{int(k): v for k, v in trans.items()} for trans in options]
            for spg, options in _load("wyckoff-position-relabelings.json.gz").items()}


def split_alpha_numeric(s: str) -> dict[str, list[str]]:
    """The alphabetic and the numeric groups of ``s`` (pymatgen's function)."""
    groups = ["".join(g) for _, g in groupby(s, str.isalpha)]
    return {"alpha": [g for g in groups if g.isalpha()],
            "numeric": [g for g in groups if g.isnumeric()]}


def sort_and_score_element_wyckoffs(element_wyckoffs: str) -> tuple[str, int]:
    """Sorted Wyckoff substring and its alphabetical score (pymatgen's function)."""
    score = 0
    sorted_element_wyckoffs = []
    for el_wyks in element_wyckoffs.split("_"):
        wp_counts = split_alpha_numeric(el_wyks)
        sorted_element_wyckoffs.append("".join(
            f"{count}{letter}" if count != "1" else letter
            for count, letter in sorted(zip(wp_counts["numeric"], wp_counts["alpha"],
                                            strict=False), key=lambda x: x[1])))
        score += sum(0 if letter == "A" else ord(letter) - 96 for letter in wp_counts["alpha"])
    return "_".join(sorted_element_wyckoffs), score


def canonicalize_element_wyckoffs(element_wyckoffs: str, spg_num: int | str) -> str:
    """The canonical choice among the equivalent settings (pymatgen's function)."""
    isopointal = list({element_wyckoffs.translate(str.maketrans(trans))
                       for trans in wyckoff_relabellings()[str(spg_num)]})
    scored = [sort_and_score_element_wyckoffs(w) for w in isopointal]
    return min(scored, key=lambda x: (x[1], x[0]))[0]


def prototype_formula(composition: Any) -> str:
    """Anonymised formula, species in alphabetical order (pymatgen's
    ``get_prototype_formula_from_composition``)."""
    import math

    reduced = composition.element_composition
    if all(x == int(x) for x in composition.values()):
        reduced /= math.gcd(*(int(amt) for amt in composition.values()))
    amounts = [reduced[key] for key in sorted(reduced, key=str)]
    anon = ""
    for elem, amt in zip(ascii_uppercase, amounts, strict=False):
        if amt == 1:
            amt_str = ""
        elif abs(amt % 1) < 1e-8:
            amt_str = str(int(amt))
        else:
            amt_str = str(amt)
        anon += f"{elem}{amt_str}"
    return anon
