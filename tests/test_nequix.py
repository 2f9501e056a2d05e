"""Nequix (nequix-mp-1, nequix-oam-1): checkpoints from the weights folder (../shared/weights or
$MLIAPDB_WEIGHTS, never copied into the repo), sha256 checks, and real single points on MP
structures against nequix's own calculator and the raw DFT energies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli
from mliapdb.compute.models import (
    CHECKPOINTS_ENV,
    CheckpointError,
    availability,
    checkpoint_sha256,
    get_model_spec,
    make_calculator,
    resolve_checkpoint,
)
from mliapdb.config import WEIGHTS_ENV, shared_weights_dir

NEQUIX = ["nequix-mp-1", "nequix-oam-1"]
SHA256 = {  # published (shared/weights/README.md)
    "nequix-mp-1": "1647af8e627e1afa11e2bfadeab0797326513a521afd7dd01606a96f56783eee",
    "nequix-oam-1": "6a43475eaeb32a7a049f36c1306d78aa1e7a17e8af37aeda7901c8fec0ca845c",
}
WEIGHTS = shared_weights_dir() / "nequix"
needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "nequix-mp-1.nqx").is_file(),
    reason=f"no Nequix checkpoints at {WEIGHTS} (set {WEIGHTS_ENV})",
)


@pytest.fixture(autouse=True)
def isolated(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """No user checkpoints file; converted torch files go to a cache folder of this session."""
    path = tmp_path / "no-checkpoints.toml"
    monkeypatch.setenv(CHECKPOINTS_ENV, str(path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    return path


def test_toml_records_the_published_file() -> None:
    for name in NEQUIX:
        spec = get_model_spec(name)
        assert spec.user_checkpoint and spec.family == "nequix"
        assert spec.checkpoint_sha256 == SHA256[name]
        assert spec.checkpoint_file == f"{name}.nqx"
        assert spec.checkpoint_url.endswith(f"/models/{name}.nqx")
        assert spec.energy_convention == "raw" and spec.needs_mp2020_correction
        assert spec.functional == "PBE/PBE+U"
        assert spec.options == {"backend": "torch"}


@needs_weights
def test_weights_folder_is_searched_and_checked(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_model_spec("nequix-mp-1")
    assert resolve_checkpoint(spec) == WEIGHTS / "nequix-mp-1.nqx"
    assert checkpoint_sha256(spec) == SHA256["nequix-mp-1"]
    assert availability(spec) == (True, "ready")
    # the checkpoints file comes first: the oam-1 file given as mp-1 is refused by sha256
    isolated.write_text(f'"nequix-mp-1" = "{WEIGHTS / "nequix-oam-1.nqx"}"\n')
    with pytest.raises(CheckpointError, match=f"has sha256 {SHA256['nequix-oam-1']}.*records "
                                              f"{SHA256['nequix-mp-1']}.*a different download"):
        checkpoint_sha256(spec)
    with pytest.raises(CheckpointError, match="sha256"):
        make_calculator(spec)
    isolated.unlink()
    # a weights folder holding a wrong file under the published name is refused too
    (tmp_path / "nequix").mkdir()
    (tmp_path / "nequix" / "nequix-mp-1.nqx").write_bytes(b"not a model\n")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="has sha256 .* records 1647af8e"):
        make_calculator(spec)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="needs a checkpoint file - pass --checkpoint PATH"):
        resolve_checkpoint(spec)
    assert not availability(spec)[0]


@needs_weights
def test_models_command_lists_them_ready() -> None:
    result = CliRunner().invoke(cli, ["models", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = {line.split(",")[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["nequix-mp-1"] == "nequix-mp-1,nequix,mp-1,MPtrj,PBE/PBE+U,raw,yes,ready"
    assert rows["nequix-oam-1"] == (
        "nequix-oam-1,nequix,oam-1,OMat24 + sAlex + MPtrj,PBE/PBE+U,raw,yes,ready"
    )


@needs_weights
def test_wrong_checkpoint_is_refused_under_the_model_name(tmp_path: Path) -> None:
    """--checkpoint with another file than the published one is refused (it needs --as)."""
    from mliapdb.compute.calculations import model_identity
    from mliapdb.errors import MliapdbError
    from mliapdb.store.database import connect

    spec = get_model_spec("nequix-mp-1")
    con = connect(tmp_path / "t.duckdb", create=True)
    try:
        with pytest.raises(MliapdbError, match="is not the checkpoint of model nequix-mp-1.*--as"):
            model_identity(con, spec, checkpoint=str(WEIGHTS / "nequix-oam-1.nqx"))
        identity = model_identity(con, spec, checkpoint=str(WEIGHTS / "nequix-mp-1.nqx"))
        assert identity.checkpoint_sha256 == SHA256["nequix-mp-1"]
    finally:
        con.close()


def _entries(mp_dir: Path, ids: set[str]) -> list:
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    with gzip.open(mp_dir / "Mn_O_Y_entries.json.gz") as fh:
        data = json.load(fh)
    entries = [ComputedStructureEntry.from_dict(d) for d in data if d["entry_id"] in ids]
    return sorted(entries, key=lambda entry: entry.entry_id)


@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("name", NEQUIX)
def test_single_points_match_nequix_and_the_raw_dft_energies(
    name: str, mp_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The registry calculator (torch backend, converted once) reproduces nequix's own
    calculator on the .nqx (JAX backend) and sits on the raw DFT energies of oxides with large
    MP2020 corrections, not on the corrected ones."""
    import torch
    from nequix.calculator import NequixCalculator

    torch.set_num_threads(1)
    entries = _entries(mp_dir, {"mp-19006", "mp-13061", "mp-1221574"})
    assert len(entries) == 3
    spec = get_model_spec(name)
    calc = make_calculator(spec, device="cpu")
    assert calc.mliapdb_info["checkpoint"] == str(WEIGHTS / f"{name}.nqx")
    assert calc.mliapdb_info["checkpoint_sha256"] == SHA256[name]
    assert calc.backend == "torch"
    energies = {}
    for entry in entries:
        n = len(entry.structure)
        atoms = entry.structure.to_ase_atoms()
        atoms.calc = calc
        per_atom = atoms.get_potential_energy() / n
        energies[entry.entry_id] = per_atom
        assert entry.correction / n < -0.3  # large MP2020 oxide + U corrections
        assert abs(per_atom - entry.uncorrected_energy / n) < 0.1
        assert abs(per_atom - entry.energy / n) > 0.3
    # nequix's own calculator, straight on the shared .nqx (one structure: JAX compiles per size)
    reference = NequixCalculator(
        model_path=str(WEIGHTS / f"{name}.nqx"), backend="jax", use_kernel=False
    )
    atoms = entries[0].structure.to_ase_atoms()
    atoms.calc = reference
    assert energies[entries[0].entry_id] == pytest.approx(
        atoms.get_potential_energy() / len(atoms), abs=1e-4
    )
    # converted once into the cache folder, never beside the (read-only) shared checkpoint
    cache = tmp_path_factory.getbasetemp() / "cache" / "mliapdb" / "nequix"
    assert (cache / f"{SHA256[name]}.pt").is_file()
    assert not list(WEIGHTS.glob("*.pt"))
