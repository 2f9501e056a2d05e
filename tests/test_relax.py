"""The generic relaxation routine: settings hash, real CHGNet relaxations on CPU, and the
failure / non-convergence / divergence paths (fake calculators keep those fast)."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.core import Lattice, Structure

from mliapdb.compute.relaxation import RelaxResult, RelaxSettings, relax_structure

# --- settings -------------------------------------------------------------------------------


def test_settings_hash_is_stable_and_tracks_fmax() -> None:
    default = RelaxSettings()
    assert default.to_dict() == {
        "optimizer": "FIRE",
        "cell_filter": "FrechetCellFilter",
        "fmax": 0.05,
        "max_steps": 500,
        "fix_symmetry": False,
    }
    # canonical JSON with sorted keys: this value must never change silently
    assert default.settings_hash() == "88a0386881573a17"
    assert RelaxSettings().settings_hash() == default.settings_hash()
    assert len(default.settings_hash()) == 16
    assert RelaxSettings(fmax=0.02).settings_hash() != default.settings_hash()
    assert RelaxSettings(max_steps=2).settings_hash() != default.settings_hash()
    assert RelaxSettings(fmax=1).settings_hash() == RelaxSettings(fmax=1.0).settings_hash()
    assert RelaxSettings.from_dict(default.to_dict()) == default


@pytest.mark.parametrize(
    "kwargs",
    [{"optimizer": "Adam"}, {"cell_filter": "StrainFilter"}, {"fmax": 0}, {"max_steps": 1.5}],
)
def test_bad_settings_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RelaxSettings(**kwargs)


# --- real CHGNet relaxations ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chgnet_calc() -> Iterator[Calculator]:
    """CHGNet 0.3.0 on CPU, loaded once for the module, with one torch thread: on a shared
    2-core machine more threads oversubscribe the cores and run 5-10x slower."""
    import torch

    from mliapdb.compute.models import get_model_spec, make_calculator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield make_calculator(get_model_spec("chgnet-0.3.0"), device="cpu")
    finally:
        torch.set_num_threads(threads)


def _structure(mp_dir: Path, filename: str, entry_id: str) -> Structure:
    with gzip.open(mp_dir / filename) as fh:
        (entry,) = [d for d in json.load(fh) if d["entry_id"] == entry_id]
    return Structure.from_dict(entry["structure"])


def _distorted(structure: Structure, strain: float = 0.02, shift: float = 0.03) -> Structure:
    """Strained cell and deterministically displaced atoms (Angstrom), so relaxing takes steps."""
    out = structure.copy()
    out.apply_strain(strain)
    rng = np.random.default_rng(42)
    for i in range(len(out)):
        out.translate_sites([i], rng.uniform(-shift, shift, 3), frac_coords=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("entry_id", ["mp-19006", "mp-13061"])  # MnO (AFM, 4 atoms), Y2O3 (5)
def test_chgnet_relaxation_converges(chgnet_calc: Calculator, mp_dir: Path, entry_id: str) -> None:
    structure = _distorted(_structure(mp_dir, "Mn_O_Y_entries.json.gz", entry_id))
    before = structure.copy()
    settings = RelaxSettings()
    result = relax_structure(structure, chgnet_calc, settings)
    assert isinstance(result, RelaxResult)
    assert result.status == "ok", result.error
    assert result.error is None
    assert result.converged
    assert result.n_steps is not None and result.n_steps > 0
    assert result.energy_single_point is not None and result.energy_relaxed is not None
    assert result.energy_relaxed <= result.energy_single_point + 1e-3
    assert result.fmax_final is not None and result.fmax_final <= settings.fmax
    assert result.max_force is not None and result.max_force <= settings.fmax
    assert result.stress is not None and len(result.stress) == 6
    assert result.max_stress == pytest.approx(max(abs(s) for s in result.stress))
    assert result.relaxed_structure is not None
    assert result.relaxed_structure.composition == structure.composition
    assert isinstance(result.spacegroup_after, int) and 1 <= result.spacegroup_after <= 230
    assert result.n_atoms == len(structure)
    assert result.device == "cpu"
    assert result.settings_hash == settings.settings_hash()
    assert result.calculator_info["model"] == "chgnet-0.3.0"
    assert len(result.calculator_info["checkpoint_sha256"]) == 64
    assert result.wall_time_s > 0
    assert structure == before  # the input is not modified
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_fix_symmetry_keeps_the_space_group(chgnet_calc: Calculator, mp_dir: Path) -> None:
    structure = _structure(mp_dir, "Mn_O_Y_entries.json.gz", "mp-13061")  # Y2O3, P-3m1
    strained = structure.copy()
    strained.apply_strain(0.03)  # isotropic: keeps the trigonal symmetry
    settings = RelaxSettings(fix_symmetry=True, max_steps=4)
    result = relax_structure(strained, chgnet_calc, settings)
    assert result.status in ("ok", "not_converged"), result.error
    assert result.n_steps is not None and result.n_steps > 0
    assert result.spacegroup_after == 164


@pytest.mark.slow
def test_not_converged_in_two_steps(chgnet_calc: Calculator, mp_dir: Path) -> None:
    structure = _distorted(_structure(mp_dir, "Mn_O_Y_entries.json.gz", "mp-19006"))
    result = relax_structure(structure, chgnet_calc, RelaxSettings(max_steps=2))
    assert result.status == "not_converged"
    assert not result.converged
    assert result.n_steps == 2
    assert result.error is not None
    assert result.error.startswith("did not reach fmax 0.05 eV/Å in 2 steps, final fmax ")
    assert result.energy_relaxed is not None and result.relaxed_structure is not None


@pytest.mark.slow
def test_isolated_atoms_fail_without_raising(chgnet_calc: Calculator, mp_dir: Path) -> None:
    # mp-1093989: one Na in a 7.05 A cube (350 A^3/atom) - no neighbour within CHGNet's 6 A
    real = _structure(mp_dir, "Cl_Mn_Na_O_Y_entries.json.gz", "mp-1093989")
    lone = Structure(Lattice.cubic(20.0), ["Fe"], [[0, 0, 0]])
    for structure in (real, lone):
        result = relax_structure(structure, chgnet_calc, RelaxSettings())
        assert result.status == "failed"
        assert result.error is not None and "isolated atom" in result.error
        assert "\n" not in result.error
        assert result.energy_single_point is None and result.energy_relaxed is None
        assert result.relaxed_structure is None
        assert not result.converged


# --- fake calculators: failure paths without a model -----------------------------------------


class _Fake(Calculator):
    """Analytic test calculator: energy ``e0 + slope * volume`` (eV), zero forces.

    Stress is ``slope`` (eV/A^3, ASE sign): a negative slope pulls the cell open forever.
    ``nan_after`` / ``raise_after`` turn the n-th and later calls into NaN / an exception.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(
        self,
        e0: float = 0.0,
        slope: float = 0.0,
        nan_after: int | None = None,
        raise_after: int | None = None,
    ) -> None:
        super().__init__()
        self.e0, self.slope = e0, slope
        self.nan_after, self.raise_after = nan_after, raise_after
        self.calls = 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.raise_after is not None and self.calls >= self.raise_after:
            raise RuntimeError("model blew up\nsecond line")
        energy = self.e0 + self.slope * self.atoms.get_volume()
        if self.nan_after is not None and self.calls >= self.nan_after:
            energy = math.nan
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.zeros((len(self.atoms), 3)),
            "stress": np.array([self.slope] * 3 + [0.0] * 3),
        }


def _cubic() -> Structure:
    return Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])


def test_volume_runaway_fails() -> None:
    result = relax_structure(_cubic(), _Fake(slope=-0.01), RelaxSettings(max_steps=2000))
    assert result.status == "failed"
    assert "volume changed by a factor" in result.error and "diverged" in result.error
    assert result.energy_single_point == pytest.approx(-0.27)
    assert result.energy_relaxed is None and result.relaxed_structure is None
    assert result.n_steps is not None and 0 < result.n_steps < 2000


def test_energy_below_floor_fails() -> None:
    result = relax_structure(_cubic(), _Fake(e0=-50.0), RelaxSettings())
    assert result.status == "failed"
    assert "below -20.0 eV/atom" in result.error


def test_nan_during_relaxation_fails() -> None:
    result = relax_structure(_cubic(), _Fake(slope=-0.01, nan_after=3), RelaxSettings())
    assert result.status == "failed"
    assert "non-finite energy" in result.error
    assert result.energy_single_point is not None


def test_model_exception_fails_with_one_line() -> None:
    for raise_after, where in ((1, "single point failed"), (3, "relaxation failed")):
        calc = _Fake(slope=-0.01, raise_after=raise_after)
        result = relax_structure(_cubic(), calc, RelaxSettings())
        assert result.status == "failed"
        assert result.error == f"{where}: RuntimeError: model blew up second line"


def test_fixed_cell_relaxation_of_a_flat_potential() -> None:
    result = relax_structure(_cubic(), _Fake(), RelaxSettings(cell_filter="none", optimizer="BFGS"))
    assert result.status == "ok"
    assert result.n_steps == 0
    assert result.energy_relaxed == result.energy_single_point == 0.0
    assert result.spacegroup_after == 221
