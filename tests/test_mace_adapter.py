"""The MACE adapter on a small randomly initialised MACE model (no published weights here).

Runs in the MACE venv (``make install-mace``: mace-torch pins e3nn==0.4.4, which clashes with
sevenn's e3nn>=0.5 in ``.venv``); ``make test`` runs this file there. Elsewhere it is skipped.
Real code end to end: the model is built with ``mace.modules``, saved with ``torch.save``
like the published ``.model`` files, and loaded through mliapdb's registry and factory.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "mace.modules",
    reason="mace-torch is not installed here: it lives in its own venv (make install-mace)",
)

import torch  # noqa: E402

from mliapdb.compute.models import get_model_spec, make_calculator  # noqa: E402
from mliapdb.compute.relaxation import RelaxSettings, relax_structure  # noqa: E402

ELEMENTS = [8, 25, 39]  # O, Mn, Y: the elements of the Mn-O-Y entries


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny ScaleShiftMACE (2 interactions, 8 channels, L=1) saved with ``torch.save``."""
    from e3nn import o3
    from mace import modules

    torch.set_num_threads(1)  # shared 2-core machine
    torch.manual_seed(0)
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=2,
        num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps("8x0e + 8x1o"),
        MLP_irreps=o3.Irreps("8x0e"),
        atomic_energies=np.array([-4.9, -8.4, -10.1]),  # eV per isolated atom, made up
        avg_num_neighbors=10.0,
        atomic_numbers=ELEMENTS,
        correlation=2,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=0.1,
        atomic_inter_shift=0.0,
    ).to(torch.float64)
    path = tmp_path_factory.mktemp("mace") / "random-mace.model"
    torch.save(model, path)
    return path


@pytest.fixture(scope="module")
def structure(mp_dir: Path):
    """The smallest real Mn-O-Y compound (DFT-relaxed MP structure)."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        entries = [ComputedStructureEntry.from_dict(d) for d in json.load(fh)]
    compounds = [e for e in entries if len(e.composition.elements) >= 2]
    return min(compounds, key=lambda e: (len(e.structure), e.entry_id)).structure


def test_factory_single_point_and_provenance(checkpoint: Path, structure) -> None:
    spec = get_model_spec("mace-mp-0")
    calc = make_calculator(spec, device="cpu", checkpoint=str(checkpoint))
    info = calc.mliapdb_info
    assert info["model"] == "mace-mp-0"
    assert info["checkpoint"] == str(checkpoint)
    assert len(info["checkpoint_sha256"]) == 64
    assert "mace-torch" in info["packages"]
    atoms = structure.to_ase_atoms()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    assert np.isfinite(energy)
    assert forces.shape == (len(structure), 3)
    assert np.isfinite(forces).all()
    assert stress.shape == (6,)
    # same model, same structure: the factory adds nothing to the model's own energy
    again = make_calculator(spec, device="cpu", checkpoint=str(checkpoint))
    atoms2 = structure.to_ase_atoms()
    atoms2.calc = again
    assert atoms2.get_potential_energy() == pytest.approx(energy, abs=1e-8)


def test_relax_structure_runs(checkpoint: Path, structure) -> None:
    spec = get_model_spec("mace-mp-0")
    calc = make_calculator(spec, device="cpu", checkpoint=str(checkpoint))
    settings = RelaxSettings.from_dict({**spec.relax, "max_steps": 5})
    result = relax_structure(structure, calc, settings)
    assert result.status in ("ok", "not_converged"), result.error
    assert result.n_steps is not None and result.n_steps <= 5
    assert np.isfinite(result.energy_single_point)
    assert np.isfinite(result.energy_relaxed)
    assert result.relaxed_structure is not None
    assert len(result.relaxed_structure) == len(structure)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from mliapdb.compute.models import CHECKPOINTS_ENV, CheckpointError

    config = tmp_path / "checkpoints.toml"
    monkeypatch.setenv(CHECKPOINTS_ENV, str(config))
    spec = get_model_spec("mace-mpa-0")
    with pytest.raises(CheckpointError) as info:
        make_calculator(spec)
    assert str(info.value) == (
        "model 'mace-mpa-0' needs a checkpoint file - pass --checkpoint PATH (download it from "
        "https://github.com/ACEsuit/mace-foundations/releases/download/mace_mpa_0/"
        f"mace-mpa-0-medium.model) or set it in {config}"
    )


def test_checkpoint_from_the_checkpoints_file(checkpoint: Path, tmp_path: Path, monkeypatch):
    from mliapdb.compute.models import CHECKPOINTS_ENV, availability

    config = tmp_path / "checkpoints.toml"
    config.write_text(f'"mace-mp-0" = "{checkpoint}"\n')
    monkeypatch.setenv(CHECKPOINTS_ENV, str(config))
    spec = get_model_spec("mace-mp-0")
    assert availability(spec) == (True, "ready")
    calc = make_calculator(spec)  # no published sha256 to check: the file's own is recorded
    assert calc.mliapdb_info["checkpoint"] == str(checkpoint)
