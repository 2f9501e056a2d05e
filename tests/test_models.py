"""Model metadata files, the calculator registry and the energy convention of each model."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mliapdb.models import (
    ENERGY_CONVENTIONS,
    MODELS_DIR,
    CheckpointError,
    ModelSpecError,
    UnknownModelError,
    checkpoint_sha256,
    get_model_spec,
    load_model_specs,
    make_calculator,
    package_versions,
    resolve_checkpoint,
)
from mliapdb.relax import RelaxSettings

MODEL_NAMES = sorted(path.stem for path in MODELS_DIR.glob("*.toml"))


def test_every_toml_is_a_valid_model() -> None:
    specs = load_model_specs()
    assert sorted(specs) == MODEL_NAMES
    assert {"chgnet-0.3.0", "chgnet-0.2.0"} <= set(specs)
    for name, spec in specs.items():
        assert spec.name == name == Path(spec.source).stem
        assert spec.energy_convention in ENERGY_CONVENTIONS
        assert re.fullmatch(r"10\.\d{4,9}/\S+", spec.citation), spec.citation
        assert spec.url.startswith("https://")
        assert re.fullmatch(r"[0-9a-f]{64}", spec.checkpoint_sha256)
        assert isinstance(spec.relax_settings(), RelaxSettings)
        for field in ("family", "version", "package", "training_set", "functional", "license"):
            assert getattr(spec, field).strip()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_sha256_matches_installed_file(name: str) -> None:
    spec = get_model_spec(name)
    assert resolve_checkpoint(spec).is_file()
    assert checkpoint_sha256(spec) == spec.checkpoint_sha256


def test_checkpoint_mismatch_is_a_clear_error() -> None:
    spec = dataclasses.replace(get_model_spec("chgnet-0.3.0"), checkpoint_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="has sha256 d14ab7c0.*records 0000"):
        checkpoint_sha256(spec)
    with pytest.raises(CheckpointError, match="sha256"):
        make_calculator(spec)
    missing = dataclasses.replace(spec, checkpoint="chgnet:pretrained/9.9.9/none.pth.tar")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_sha256(missing)


def test_chgnet_predicts_mp2020_corrected_energies() -> None:
    # CHGNet is trained on MPtrj energy_per_atom = corrected_total_energy / n_atoms
    for name in ("chgnet-0.3.0", "chgnet-0.2.0"):
        spec = get_model_spec(name)
        assert spec.energy_convention == "mp2020_corrected"
        assert not spec.needs_mp2020_correction
        assert spec.training_set == "MPtrj"


def test_unknown_model_message() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model_spec("chgnet-9")
    assert str(info.value) == "unknown model 'chgnet-9' - run 'mliapdb models' to list them"


def test_import_does_not_import_torch_or_chgnet() -> None:
    code = (
        "import sys, mliapdb.models as m, mliapdb.relax; m.load_model_specs(); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'chgnet')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_package_versions() -> None:
    versions = package_versions(get_model_spec("chgnet-0.3.0"))
    assert versions["torch"].startswith("2.13.0")
    assert {"chgnet", "ase", "pymatgen", "numpy"} <= set(versions)


GOOD = """\
name = "{name}"
family = "chgnet"
version = "0.3.0"
package = "chgnet"
checkpoint = "chgnet:pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"
checkpoint_sha256 = "{sha}"
training_set = "MPtrj"
functional = "PBE/PBE+U"
energy_convention = "{convention}"
license = "BSD-3-Clause-LBNL"
citation = "10.1038/s42256-023-00716-3"
url = "https://github.com/CederGroupHub/chgnet"
"""
SHA = "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_valid_custom_folder(tmp_path: Path) -> None:
    _write(tmp_path, "m-1", GOOD.format(name="m-1", sha=SHA, convention="raw"))
    spec = load_model_specs(tmp_path)["m-1"]
    assert spec.needs_mp2020_correction
    assert spec.relax_settings() == RelaxSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.format(name="m", sha=SHA, convention="corrected"), "energy_convention 'corrected'"),
        (GOOD.format(name="m", sha=SHA, convention="raw") + 'colour = "red"\n', "unknown key"),
        (
            GOOD.format(name="m", sha=SHA, convention="raw").replace('"BSD-3-Clause-LBNL"', "3"),
            "license must be a non-empty string",
        ),
        (GOOD.format(name="m", sha="abc", convention="raw"), "checkpoint_sha256"),
        (GOOD.format(name="other", sha=SHA, convention="raw"), "does not match the file name"),
        (GOOD.format(name="m", sha=SHA, convention="raw") + "[relax]\nfmax = -1\n", "fmax"),
        (GOOD.format(name="m", sha=SHA, convention="raw") + "[relax]\nsteps = 3\n", "steps"),
        (
            GOOD.format(name="m", sha=SHA, convention="raw").replace('"chgnet"\nv', '"nn"\nv'),
            "no calculator factory",
        ),
        ("name = ", "not valid TOML"),
    ],
)
def test_invalid_metadata_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "m", text)
    with pytest.raises(ModelSpecError) as info:
        load_model_specs(tmp_path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_key_is_reported(tmp_path: Path) -> None:
    text = GOOD.format(name="m", sha=SHA, convention="raw").replace(
        'license = "BSD-3-Clause-LBNL"\n', ""
    )
    _write(tmp_path, "m", text)
    with pytest.raises(ModelSpecError, match=r"missing required key\(s\) \['license'\]"):
        load_model_specs(tmp_path)


# --- real calculators -----------------------------------------------------------------------


def _entries(mp_dir: Path, filename: str, ids: set[str]) -> list:
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(mp_dir / filename) as fh:
        data = json.load(fh)
    return [ComputedStructureEntry.from_dict(d) for d in data if d["entry_id"] in ids]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chgnet-0.3.0", "chgnet-0.2.0"])
def test_calculator_matches_chgnet_and_the_convention(name: str, mp_dir: Path) -> None:
    """The registry calculator reproduces CHGNet.load(); its energies sit on the MP2020-corrected
    DFT energies of oxides with large corrections, not on the raw ones."""
    import torch
    from chgnet.model import CHGNet

    torch.set_num_threads(1)  # shared 2-core machine: more threads oversubscribe it
    entries = _entries(mp_dir, "Mn_O_Y_entries.json.gz", {"mp-19006", "mp-13061", "mp-1221574"})
    assert len(entries) == 3
    calc = make_calculator(get_model_spec(name), device="cpu")
    assert calc.mliapdb_info["checkpoint_sha256"] == get_model_spec(name).checkpoint_sha256
    assert calc.mliapdb_info["device"] == "cpu"
    reference = CHGNet.load(model_name=name.split("-")[1], use_device="cpu", verbose=False)
    for entry in entries:
        n = len(entry.structure)
        atoms = entry.structure.to_ase_atoms()
        atoms.calc = calc
        per_atom = atoms.get_potential_energy() / n
        expected = float(reference.predict_structure(entry.structure, task="e")["e"])
        assert per_atom == pytest.approx(expected, abs=1e-4)
        assert entry.correction / n < -0.3  # large MP2020 oxide + U corrections
        assert abs(per_atom - entry.energy / n) < 0.15
        assert abs(per_atom - entry.uncorrected_energy / n) > 0.3


@pytest.mark.slow
def test_checkpoint_override_is_recorded() -> None:
    spec = get_model_spec("chgnet-0.3.0")
    path = resolve_checkpoint(spec)
    calc = make_calculator(spec, checkpoint=str(path))
    assert calc.mliapdb_info["checkpoint"] == str(path)
    assert calc.mliapdb_info["checkpoint_sha256"] == spec.checkpoint_sha256
