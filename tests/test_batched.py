"""The batched torch-sim path against the ASE path: same protocol, same relaxed energies
(within 1 meV/atom) on real MP structures with real SevenNet-0 on CPU; in-flight batching
that swaps structures in and out; refusals; and the CLI storing rows with their engine."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure

from mliapdb.cli.main import cli
from mliapdb.compute.batched import BatchedUnsupported, check_batched_settings, relax_batched
from mliapdb.compute.relaxation import RelaxSettings, relax_structure
from mliapdb.materials.entries import material_id_of

pytest.importorskip("torch_sim")
pytestmark = pytest.mark.slow
MODEL = "sevennet-0"
# Real Mn-O entries of 1-8 atoms whose relaxations take from 0 to ~40 FIRE steps.
IDS = ("mp-1238899", "mp-25223", "mp-19006", "mp-755671", "mp-1221542", "mp-1279979",
       "mp-8634", "mp-1238773", "mp-999539")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def structures(mp_dir: Path) -> list[Structure]:
    with gzip.open(mp_dir / "Mn_O_entries.json.gz") as fh:
        entries = {material_id_of(d): d for d in json.load(fh)}
    return [Structure.from_dict(entries[mid]["structure"]) for mid in IDS if mid in entries]


@pytest.fixture(scope="module")
def models(torch_one_thread):
    from mliapdb.compute.models import get_model_spec, make_calculator
    from mliapdb.compute.models.batched_factories import make_batched_model

    spec = get_model_spec(MODEL)
    return make_calculator(spec), make_batched_model(spec)


@pytest.fixture(scope="module")
def both_paths(structures, models):
    calc, model = models
    settings = RelaxSettings()
    ase = [relax_structure(s, calc, settings) for s in structures]
    batched = dict(relax_batched(structures, model, settings, max_atoms=16))
    return ase, [batched[i] for i in range(len(structures))]


def test_fixture_has_the_structures(structures) -> None:
    assert len(structures) == len(IDS)
    assert sorted(len(s) for s in structures)[0] >= 1


def test_relaxed_energies_equal_within_1_mev_per_atom(structures, both_paths) -> None:
    ase, batched = both_paths
    for s, a, b in zip(structures, ase, batched, strict=True):
        n = len(s)
        assert a.status == b.status == "ok", (a.error, b.error)
        assert b.engine == "torch-sim" and a.engine == "ase"
        assert abs(a.energy_single_point - b.energy_single_point) / n < 1e-5
        assert abs(a.energy_relaxed - b.energy_relaxed) / n < 1e-3, s.formula
        assert b.fmax_final < 0.05 and b.converged
        assert abs(a.n_steps - b.n_steps) <= max(5, a.n_steps // 5), (a.n_steps, b.n_steps)
        assert a.spacegroup_before == b.spacegroup_before
        assert a.spacegroup_after == b.spacegroup_after
        # both stop within fmax on a flat surface: volumes agree to ~1 %, energies far better
        assert abs(a.volume_relaxed - b.volume_relaxed) / a.volume_relaxed < 0.02
        assert b.stress is not None and len(b.stress) == 6
        # same sign convention as ASE (eV/A^3, Voigt xx yy zz yz xz xy)
        assert max(abs(x - y) for x, y in zip(a.stress, b.stress, strict=True)) < 2e-3
        assert b.relaxed_structure.composition == s.composition
        assert b.calculator_info["model"] == MODEL and b.settings_hash == a.settings_hash


def test_in_flight_batching_does_not_change_results(structures, models, both_paths) -> None:
    """Batches of at most 9 atoms swap structures in and out many times; one batch of all
    structures does not: per-structure results agree. Only float32 round-off differs (the
    order of sums over a batch), which moves a FIRE trajectory by a little over tens of
    steps: within the same 1 meV/atom as the ASE comparison."""
    _, model = models
    _, small = both_paths
    big = dict(relax_batched(structures, model, RelaxSettings(), max_atoms=10_000))
    tiny = dict(relax_batched(structures, model, RelaxSettings(), max_atoms=9))
    assert sorted(tiny) == sorted(big) == list(range(len(structures)))
    for i, s in enumerate(structures):
        for other in (big[i], tiny[i]):
            assert abs(other.energy_relaxed - small[i].energy_relaxed) / len(s) < 1e-3
            assert abs(other.n_steps - small[i].n_steps) <= max(5, small[i].n_steps // 5)


def test_single_points_and_step_limit_match_ase(structures, models) -> None:
    calc, model = models
    sp = RelaxSettings.for_kind("single_point")
    batched = dict(relax_batched(structures, model, sp, max_atoms=12))
    for i, s in enumerate(structures):
        a = relax_structure(s, calc, sp)
        b = batched[i]
        assert a.status == b.status == "ok" and a.calc_kind == b.calc_kind == "single_point"
        assert a.n_steps == b.n_steps == 0 and b.energy_relaxed is None
        assert abs(a.energy_single_point - b.energy_single_point) / len(s) < 1e-5
        assert a.converged == b.converged
    three = RelaxSettings(max_steps=3)
    slow = [i for i, s in enumerate(structures) if len(s) >= 5][:2]
    out = dict(relax_batched([structures[i] for i in slow], model, three))
    for k, i in enumerate(slow):
        a = relax_structure(structures[i], calc, three)
        assert a.status == out[k].status
        if a.status == "not_converged":
            assert a.n_steps == out[k].n_steps == 3
            assert "did not reach fmax 0.05" in out[k].error


def test_unsupported_settings_are_refused() -> None:
    with pytest.raises(BatchedUnsupported, match="FixSymmetry"):
        check_batched_settings(RelaxSettings(fix_symmetry=True))
    with pytest.raises(BatchedUnsupported, match="BFGS"):
        check_batched_settings(RelaxSettings(optimizer="BFGS"))
    check_batched_settings(RelaxSettings())
    check_batched_settings(RelaxSettings(cell_filter="none"))


def test_energy_floor_guard_on_a_real_torch_sim_model(torch_one_thread) -> None:
    """A Lennard-Jones well 100 eV deep (torch-sim's own model) is a 'hole': failed."""
    import torch
    from torch_sim.models.lennard_jones import LennardJonesModel

    model = LennardJonesModel(sigma=2.0, epsilon=100.0, cutoff=5.0, device=torch.device("cpu"),
                              dtype=torch.float64, compute_forces=True, compute_stress=True)
    ok_model = LennardJonesModel(sigma=2.0, epsilon=0.01, cutoff=5.0,
                                 device=torch.device("cpu"), dtype=torch.float64,
                                 compute_forces=True, compute_stress=True)
    fcc = Structure(Lattice.cubic(3.2), ["Ar"] * 4,
                    [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    (deep,) = [r for _, r in relax_batched([fcc], model, RelaxSettings())]
    assert deep.status == "failed" and "below -20.0 eV/atom" in deep.error
    (fine,) = [r for _, r in relax_batched([fcc], ok_model, RelaxSettings(max_steps=200))]
    assert fine.status in ("ok", "not_converged") and fine.error is None or "fmax" in fine.error


def test_cli_torch_sim_engine(tmp_path: Path, mp_dir: Path, torch_one_thread) -> None:
    path = tmp_path / "db.duckdb"
    assert run("--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_entries.json.gz")
               ).exit_code == 0
    ids = [a for mid in IDS[:3] for a in ("--material-id", mid)]
    result = run("--db", str(path), "ingest", "relax", "--model", MODEL, "--engine",
                 "torch-sim", "--max-atoms", "8", *ids, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split(",")[2:7] == ["3", "0", "3", "0", "0"]
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT engine, calc_kind, status, spacegroup_before, rmsd "
                           "FROM calculations").fetchall()
        registered = con.execute(
            "SELECT package_versions->>'$.\"torch-sim-atomistic\"' FROM models").fetchone()
    assert len(rows) == 3 and {r[:3] for r in rows} == {("torch-sim", "relax", "ok")}
    assert all(r[3] is not None and r[4] is not None for r in rows)
    assert registered[0]
    # the same protocol: the ASE engine finds them done
    again = run("--db", str(path), "ingest", "relax", "--model", MODEL, *ids)
    assert again.exit_code == 0 and "3 selected, 3 already done" in again.stderr
    refused = run("--db", str(path), "ingest", "relax", "--model", "chgnet-0.3.0",
                  "--engine", "torch-sim", *ids)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "Error: model chgnet-0.3.0: torch-sim has no chgnet model - use --engine ase\n"
    )
    fixsym = run("--db", str(path), "ingest", "relax", "--model", MODEL, "--engine",
                 "torch-sim", "--kind", "relax-fixsym", *ids)
    assert fixsym.exit_code == 1 and "FixSymmetry" in fixsym.stderr
