"""matgl models (M3GNet-MP-2021.2.8-PES, TensorNet-MatPES-PBE-v2025.1-PES) with the shared
weights (``../shared/weights/matgl``, never copied into the repo): per-file sha256 of a
checkpoint folder, matgl's own published reference energies (the aggregation-direction trap),
real MP compounds against raw DFT, and a model trained without +U compared on GGA entries
only (``models.trained_with_u``, the views, the query note)."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.compute.models import (
    CHECKPOINTS_ENV,
    CheckpointError,
    ModelSpecError,
    PackageMissingError,
    availability,
    checkpoint_sha256,
    get_model_spec,
    load_model_specs,
    make_calculator,
    resolve_checkpoint,
)
from mliapdb.compute.models.registry import MODELS_DIR
from mliapdb.config import WEIGHTS_ENV, shared_weights_dir
from mliapdb.digest import sha256_file

pytest.importorskip("matgl", reason="matgl not installed: pip install 'mliapdb[matgl]'")

M3GNET = "m3gnet-mp-2021.2.8-pes"
TENSORNET = "tensornet-matpes-pbe-v2025.1"
WEIGHTS = shared_weights_dir() / "matgl"
PUBLISHED = {  # ../shared/weights/README.md (matgl @ e9cde2291acd0b4c4a342428e7dd5e4d596b7bf9)
    M3GNET: {
        "model.json": "05e7db8676ceb37eb07848aff49c556b188699e1035f3df0cbbf1a2c4959148f",
        "model.pt": "62678f76fbc5d8997ea1d7f3c4bf086df200102125c802b32b08ce14fbcde25b",
        "state.pt": "a9aa723705bd1a242ec8749332f137811c4a94e17995a564f8f94a9aca68061b",
    },
    TENSORNET: {
        "model.json": "cf7d1db6c89da617245021a8fde16fb79db5bc06f7b6e11ee837f06eb32137d8",
        "model.pt": "1cba95766c872082eec349a7e417a28461aea450b655a0301eec060a985fdd71",
        "state.pt": "d2dfa51a65d23a47fd935eb0628177d2a1088584562091ef3350ce3a002fce6a",
    },
}
FOLDERS = {M3GNET: "M3GNet-MP-2021.2.8-PES", TENSORNET: "TensorNet-MatPES-PBE-v2025.1-PES"}

if not all((WEIGHTS / folder / "model.pt").is_file() for folder in FOLDERS.values()):
    pytest.skip(f"matgl weights not found in {WEIGHTS} (set {WEIGHTS_ENV})",
                allow_module_level=True)

# matgl's own test structures and published reference energies (eV per cell), from
# materialsvirtuallab/matgl tests/conftest.py and tests/ext/test_ase.py (MoS, AcAla3NHMe)
MOS_REF = -10.824362  # M3GNet-MP-2021.2.8-PES
MOL_REF = {M3GNET: -250.16803, TENSORNET: -247.287}
MOL_SPECIES = "HHHCOCNHCHCCOHHHNHCHCCOHHHNHCHCCOHHHNHCHHH"  # 42 atoms, ase chemical symbols
MOL_COORDS = [
    [2.04866, 3.0397, -1.90538], [2.57508, 1.72268, -0.856315], [2.17184, 3.30896, -0.152382],
    [1.90655, 2.58401, -0.92348], [0.037714, 1.25465, -1.59488], [0.483967, 2.10062, -0.827513],
    [-0.289728, 2.66225, 0.136071], [0.161037, 3.23064, 0.832326], [-1.66536, 2.24227, 0.388567],
    [-1.9808, 2.78577, 1.282], [-2.60093, 2.60713, -0.760946], [-1.65737, 0.769353, 0.840767],
    [-1.07671, 0.464849, 1.87157], [-3.62795, 2.3159, -0.527314], [-2.58345, 3.68786, -0.912033],
    [-2.28934, 2.13627, -1.69468], [-2.28796, -0.137832, 0.065975],
    [-2.61433, 0.150844, -0.842711], [-2.21633, -1.56248, 0.355258],
    [-2.49106, -1.71026, 1.40128], [-3.17539, -2.32986, -0.547194],
    [-0.796612, -2.1518, 0.244173], [-0.545385, -3.20721, 0.795462],
    [-3.09773, -3.39555, -0.33182], [-4.20586, -2.01059, -0.375903],
    [-2.92852, -2.17659, -1.60274], [0.085186, -1.43854, -0.489616],
    [-0.203936, -0.57022, -0.92587], [1.4937, -1.76346, -0.597477], [1.62352, -2.74612, -0.134396],
    [1.93595, -1.80971, -2.05523], [2.37375, -0.79291, 0.212842], [3.55545, -0.639111, -0.056601],
    [3.00626, -2.00417, -2.11517], [1.39238, -2.59759, -2.5804], [1.73079, -0.853384, -2.54426],
    [1.77244, -0.143217, 1.23186], [0.795387, -0.298277, 1.437], [2.52442, 0.707989, 2.12658],
    [3.17617, 0.124743, 2.7838], [3.1563, 1.39339, 1.55717], [1.81944, 1.27508, 2.73527],
]
GGA_U_ID, GGA_ID = "mp-25223", "mp-13061"  # MnO2 (GGA+U, 3 atoms), Y2O3 (GGA, 5 atoms)


@pytest.fixture(autouse=True)
def shared_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared weights folder, never the user's own checkpoints file."""
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path / "no-checkpoints.toml"))
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights_dir()))


@pytest.fixture(scope="module")
def calcs():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CHECKPOINTS_ENV, "/nonexistent/checkpoints.toml")
        return {name: make_calculator(get_model_spec(name)) for name in (M3GNET, TENSORNET)}


def _energy(calc, atoms) -> float:
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _mos():
    from ase import Atoms

    return Atoms("MoS", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[4.0] * 3, pbc=True)


def _molecule():
    from ase import Atoms

    return Atoms(MOL_SPECIES, positions=MOL_COORDS)


def _mp_entries(mp_dir: Path) -> dict[str, tuple[object, float]]:
    """material id -> (ase Atoms, raw DFT energy eV/atom) of the two test compounds."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        data = json.load(fh)
    out = {}
    for raw in data:
        if raw["entry_id"] in (GGA_U_ID, GGA_ID):
            entry = ComputedStructureEntry.from_dict(raw)
            assert raw["parameters"]["is_hubbard"] == (raw["entry_id"] == GGA_U_ID)
            out[raw["entry_id"]] = (entry.structure.to_ase_atoms(),
                                    entry.uncorrected_energy / len(entry.structure))
    return out


# --- checkpoint identity ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [M3GNET, TENSORNET])
def test_every_published_file_sha256_is_recorded_and_checked(name: str, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    assert spec.checkpoint_files == PUBLISHED[name]
    assert resolve_checkpoint(spec) == WEIGHTS / FOLDERS[name]  # the shared weights folder
    assert availability(spec) == (True, "ready")
    # the folder's README is not part of the checkpoint: the digest covers the three files,
    # equal to the folder digest of a folder that holds exactly them
    assert (WEIGHTS / FOLDERS[name] / "README.md").is_file()
    only = tmp_path / "only"
    only.mkdir()
    for fname in PUBLISHED[name]:
        os.symlink(WEIGHTS / FOLDERS[name] / fname, only / fname)
    assert checkpoint_sha256(spec) == spec.checkpoint_sha256 == sha256_file(only)


def test_a_wrong_or_missing_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / FOLDERS[M3GNET]
    folder.mkdir()
    for fname in ("model.json", "state.pt"):
        os.symlink(WEIGHTS / FOLDERS[M3GNET] / fname, folder / fname)
    (folder / "model.pt").write_bytes(b"not the published model.pt")
    checkpoints = tmp_path / "checkpoints.toml"
    checkpoints.write_text(f'"{M3GNET}" = "{folder}"\n')
    monkeypatch.setenv(CHECKPOINTS_ENV, str(checkpoints))
    spec = get_model_spec(M3GNET)
    wrong = sha256_file(folder / "model.pt")
    with pytest.raises(CheckpointError, match=f"model.pt has sha256 {wrong}, but .* records "
                       f"{PUBLISHED[M3GNET]['model.pt']}"):
        checkpoint_sha256(spec)
    with pytest.raises(CheckpointError, match="model.pt has sha256"):
        make_calculator(spec)  # refused before matgl loads anything
    (folder / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="has no state.pt"):
        checkpoint_sha256(spec)


def test_a_folder_with_the_published_files_is_the_model_and_another_one_a_model_of_its_own(
    tmp_path: Path,
) -> None:
    """``--checkpoint FOLDER``: identified by the files matgl loads (model.json, model.pt,
    state.pt); a folder holding the published ones (a README beside them, as in the shared
    folder, changes nothing) is the model's checkpoint, one with another model.pt is derived
    (``--as``), its own sha256 then identifying it (the published per-file list does not apply
    to it)."""
    from mliapdb.compute.models.registry import checked_checkpoint, derive_spec

    spec = get_model_spec(M3GNET)
    assert checked_checkpoint(spec, str(WEIGHTS / FOLDERS[M3GNET]))[1] == spec.checkpoint_sha256
    only = tmp_path / "only"
    only.mkdir()
    for fname in PUBLISHED[M3GNET]:
        os.symlink(WEIGHTS / FOLDERS[M3GNET] / fname, only / fname)
    assert checked_checkpoint(spec, str(only)) == (only, spec.checkpoint_sha256)
    (only / "README.md").write_text("notes")
    assert checked_checkpoint(spec, str(only)) == (only, spec.checkpoint_sha256)
    (only / "model.pt").unlink()
    (only / "model.pt").write_bytes((WEIGHTS / FOLDERS[M3GNET] / "model.pt").read_bytes()
                                    + b"fine-tuned")
    path, sha = checked_checkpoint(spec, str(only))
    assert sha != spec.checkpoint_sha256
    derived = derive_spec(spec, "m3gnet-custom", path, sha)
    assert derived.checkpoint_files == {} and checkpoint_sha256(derived) == sha


def _write_spec(folder: Path, **changes: str) -> None:
    text = (MODELS_DIR / f"{TENSORNET}.toml").read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    folder.mkdir(exist_ok=True)
    (folder / f"{TENSORNET}.toml").write_text(text)


def test_metadata_keys_are_validated(tmp_path: Path) -> None:
    _write_spec(tmp_path / "ok")
    spec = load_model_specs(tmp_path / "ok")[TENSORNET]
    assert spec.trained_with_u is False and spec.functional == "PBE"
    assert get_model_spec(M3GNET).trained_with_u is True  # the default
    bad = {
        "+U": ({'functional = "PBE"\n': 'functional = "PBE/PBE+U"\n'}, "names \\+U"),
        "type": ({"\ntrained_with_u = false": '\ntrained_with_u = "no"'}, "must be a boolean"),
        "sha": ({'"model.pt" = "1cba': '"model.pt" = "XXba'}, "sha256 of 'model.pt'"),
        "path": ({'"model.pt" = ': '"../model.pt" = '}, "relative path inside"),
        "digest": ({"\ntrained_with_u = false": "\ntrained_with_u = false\n"
                    f'checkpoint_sha256 = "{"0" * 64}"'}, "not the digest of checkpoint_files"),
    }
    for label, (changes, message) in bad.items():
        _write_spec(tmp_path / label, **changes)
        with pytest.raises(ModelSpecError, match=message):
            load_model_specs(tmp_path / label)


def test_only_the_verified_matgl_release_is_used(monkeypatch) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.0.4" if name == "matgl" else real(name))
    with pytest.raises(PackageMissingError, match="matgl 2.0.4 is installed.*verified with "
                       "matgl 4.1.2"):
        make_calculator(get_model_spec(M3GNET))


# --- energies --------------------------------------------------------------------------------


def test_matgl_reference_energies_are_reproduced(calcs) -> None:
    """matgl's own test values on compounds (the MoS crystal, a 42-atom peptide): wrong by
    eV without the aggregation-direction fix (an element would not show it)."""
    assert _energy(calcs[M3GNET], _mos()) == pytest.approx(MOS_REF, abs=1e-4)
    for name, ref in MOL_REF.items():
        assert _energy(calcs[name], _molecule()) == pytest.approx(ref, abs=1e-3), name
    assert calcs[M3GNET].mliapdb_info["checkpoint_sha256"] == (
        get_model_spec(M3GNET).checkpoint_sha256
    )


def test_unpatched_matgl_is_wrong_on_compounds() -> None:
    """The trap the adapter removes: matgl 4.1 loads the checkpoint silently, with wrong
    compound energies."""
    import matgl
    from matgl.ext.ase import PESCalculator

    potential = matgl.load_model(WEIGHTS / FOLDERS[M3GNET])
    assert abs(_energy(PESCalculator(potential, stress_unit="eV/A3"), _mos()) - MOS_REF) > 1.0


def test_mp_compounds_sit_on_raw_dft(calcs, mp_dir: Path) -> None:
    """Single points on real MP entries, eV/atom: M3GNet on the raw GGA/GGA+U energies (not the
    MP2020-corrected ones, ~1 eV/atom lower for MnO2); TensorNet-MatPES-PBE on the raw GGA
    energy, ~0.75 eV/atom below the GGA+U one (no +U in training)."""
    entries = _mp_entries(mp_dir)
    for atoms, raw in entries.values():
        assert _energy(calcs[M3GNET], atoms.copy()) / len(atoms) == pytest.approx(raw, abs=0.05)
    atoms, raw = entries[GGA_ID]
    assert _energy(calcs[TENSORNET], atoms.copy()) / len(atoms) == pytest.approx(raw, abs=0.05)
    atoms, raw = entries[GGA_U_ID]
    assert _energy(calcs[TENSORNET], atoms.copy()) / len(atoms) - raw < -0.4


# --- database ----------------------------------------------------------------------------------


def test_no_u_model_is_compared_on_gga_entries_only(tmp_path: Path, mp_dir: Path) -> None:
    db = str(tmp_path / "db.duckdb")
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(cli, ["--db", db, *args])
        assert result.exit_code == 0, result.output
        return result

    run("ingest", "entries", str(mp_dir / "Mn_O_Y_entries.json.gz"))
    for name in (M3GNET, TENSORNET):
        run("ingest", "relax", "--model", name, "--kind", "single-point",
            "--material-id", GGA_U_ID, "--material-id", GGA_ID)
    import duckdb

    with duckdb.connect(db, read_only=True) as con:
        assert con.execute(
            "SELECT name, trained_with_u, checkpoint_sha256 FROM models ORDER BY name"
        ).fetchall() == [(M3GNET, True, get_model_spec(M3GNET).checkpoint_sha256),
                         (TENSORNET, False, get_model_spec(TENSORNET).checkpoint_sha256)]
        stored = con.execute(
            "SELECT model, material_id FROM calculations WHERE status = 'ok' ORDER BY ALL"
        ).fetchall()
        assert stored == sorted((m, i) for m in (M3GNET, TENSORNET) for i in (GGA_U_ID, GGA_ID))
        compared = con.execute(
            "SELECT model, material_id FROM stg_model_energies ORDER BY ALL").fetchall()
        assert compared == sorted([(M3GNET, GGA_U_ID), (M3GNET, GGA_ID), (TENSORNET, GGA_ID)])
        assert con.execute(
            "SELECT model, material_id FROM ehull_errors WHERE convention = 'dft-hull' "
            "ORDER BY ALL").fetchall() == compared
    result = run("query", "ehull-mae", "--by", "model", "--kind", "single-point")
    assert f"{TENSORNET} trained without +U: compared on GGA entries only" in result.stderr


def test_models_command_lists_both_ready() -> None:
    result = CliRunner().invoke(cli, ["models", "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = {line.split(",")[0]: line for line in result.stdout.splitlines()}
    assert lines[M3GNET].endswith(",yes,ready")
    assert lines[TENSORNET].endswith(",yes,ready")
    assert ",PBE," in lines[TENSORNET]
