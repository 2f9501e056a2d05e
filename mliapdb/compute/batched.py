"""Batched relaxation on torch-sim with in-flight batching: the protocol of
:func:`mliapdb.compute.relaxation.relax_structure`, many structures per model call.

Convergence means what it means on the ASE path: after every FIRE step each structure is
checked on its own, and it is done when the largest force over its degrees of freedom (atomic
force norms and the Frechet cell filter's cell-force rows, eV/Angstrom) is below ``fmax``, or
after ``max_steps`` steps of its own (not of the batch). A finished structure leaves the
batch at once and the next waiting one takes its place (``max_atoms`` atoms per batch), so the
batch stays full. The same divergence guards as the ASE path turn blow-ups into
``status="failed"``. FIRE here is torch-sim's ``frechet_cell_fire`` with
``md_flavor="ase_fire"`` and ASE's default parameters (dt 0.1, dt_max 1.0, max step 0.2 Angstrom,
N_min 5, f_inc 1.1, f_dec 0.5, alpha 0.1, f_alpha 0.99) and the cell factor ASE uses (the
number of atoms).

Supported settings: FIRE with ``FrechetCellFilter`` (or ``cell_filter = "none"``: positions
only), no ``fix_symmetry`` (torch-sim has no symmetry constraint: use the ASE engine).
torch, torch-sim and the model package are imported inside the functions.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mliapdb.compute.relaxation import (
    MAX_VOLUME_FACTOR,
    MIN_DISTANCE,
    MIN_ENERGY_PER_ATOM,
    RelaxResult,
    RelaxSettings,
    internal_rmsd,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

DEFAULT_MAX_ATOMS = {"cpu": 128, "cuda": 12_000}
"""Atoms per batch by device type. On a CPU the model's arithmetic dominates and large
batches only cost cache (SevenNet-0 single points: 4.1 structures/s at 32-128 atoms per
batch, 1.7 at 2,048; docs/benchmarks.md); on a GPU a batch must be large to fill it (12,000
atoms of SevenNet-0 fit an H100)."""


def default_max_atoms(device: str) -> int:
    """:data:`DEFAULT_MAX_ATOMS` for a torch device string (``"cuda:1"`` counts as cuda)."""
    return DEFAULT_MAX_ATOMS.get(str(device).split(":")[0], DEFAULT_MAX_ATOMS["cpu"])

ENGINES = ("ase", "torch-sim")
"""Relaxation engines: ``ase`` (:mod:`mliapdb.compute.relaxation`, one structure at a time) and
``torch-sim`` (this module)."""


class BatchedUnsupported(ValueError):
    """These settings or this model cannot run on the batched path (the message says why)."""


def check_batched_settings(settings: RelaxSettings) -> None:
    """Raise :class:`BatchedUnsupported` unless the batched path runs ``settings`` exactly as
    the ASE path would."""
    if settings.fix_symmetry:
        raise BatchedUnsupported(
            "symmetry-constrained relaxation (FixSymmetry) is not available in torch-sim - "
            "use --engine ase"
        )
    if settings.optimizer != "FIRE" or settings.cell_filter not in ("FrechetCellFilter", "none"):
        raise BatchedUnsupported(
            f"the batched path runs FIRE with FrechetCellFilter (or no cell filter), not "
            f"{settings.optimizer} with {settings.cell_filter} - use --engine ase"
        )


def _optimizer(model: Any, settings: RelaxSettings):
    """(init_fn, step_fn) of torch-sim's FIRE matching ASE's FIRE defaults."""
    import torch_sim as ts

    params = dict(dt_max=1.0, dt_start=0.1, n_min=5, f_inc=1.1, f_dec=0.5, alpha_start=0.1,
                  f_alpha=0.99, max_step=0.2, md_flavor="ase_fire")
    if settings.cell_filter == "FrechetCellFilter":
        return ts.optimizers.frechet_cell_fire(model=model, **params)
    return ts.optimizers.fire(model=model, **params)


def _per_system_max_force(state: Any) -> Any:
    """Largest force norm per system (eV/Angstrom): atoms, and the cell rows if present."""
    import torch

    norms = state.forces.norm(dim=1)
    out = torch.zeros(state.n_systems, dtype=norms.dtype, device=norms.device)
    out = out.scatter_reduce(0, state.system_idx, norms, reduce="amax", include_self=True)
    cell_forces = getattr(state, "cell_forces", None)
    if cell_forces is not None:
        out = torch.maximum(out, cell_forces.norm(dim=2).max(dim=1).values)
    return out


def _per_system_atom_force(state: Any) -> Any:
    import torch

    norms = state.forces.norm(dim=1)
    out = torch.zeros(state.n_systems, dtype=norms.dtype, device=norms.device)
    return out.scatter_reduce(0, state.system_idx, norms, reduce="amax", include_self=True)


def _finite_per_system(state: Any) -> Any:
    import torch

    bad_atoms = (~torch.isfinite(state.forces)).any(dim=1).to(torch.int64)
    bad = torch.zeros(state.n_systems, dtype=torch.int64, device=bad_atoms.device)
    bad = bad.index_add(0, state.system_idx, bad_atoms)
    return torch.isfinite(state.energy) & (bad == 0)


def _voigt(stress_3x3: Any) -> list[float]:
    """ASE Voigt order xx yy zz yz xz xy (eV/Angstrom^3)."""
    s = stress_3x3
    return [float(s[0, 0]), float(s[1, 1]), float(s[2, 2]), float(s[1, 2]), float(s[0, 2]),
            float(s[0, 1])]


class _Job:
    """Book-keeping of one structure on the batched path."""

    __slots__ = ("index", "structure", "n_atoms", "volume_initial", "steps", "result", "start")

    def __init__(self, index: int, structure: Structure, result: RelaxResult) -> None:
        self.index = index
        self.structure = structure
        self.n_atoms = len(structure)
        self.volume_initial = float(structure.volume)
        self.steps = 0
        self.result = result
        self.start = time.perf_counter()


def relax_batched(
    structures: Sequence[Structure],
    model: Any,
    settings: RelaxSettings,
    max_atoms: int | None = None,
    info: dict[str, Any] | None = None,
) -> Iterator[tuple[int, RelaxResult]]:
    """Relax ``structures`` with the torch-sim ``model``; yields ``(index, RelaxResult)`` as
    each finishes (not in input order). Energies eV/cell, forces eV/Angstrom.

    ``settings.calc_kind == "single_point"`` only evaluates the model on the inputs (in
    batches of at most ``max_atoms`` atoms; default :func:`default_max_atoms` of the model's
    device). ``info`` (default: the model's
    ``mliapdb_info``) is stored as each result's ``calculator_info``. ``wall_time_s`` of a
    result is the time from its entering the batch to its leaving it (shared with the
    structures batched beside it).
    """
    from torch_sim.state import concatenate_states, initialize_state

    check_batched_settings(settings)
    max_atoms = max_atoms or default_max_atoms(str(model.device))
    info = dict(info if info is not None else getattr(model, "mliapdb_info", None) or {})
    device = str(model.device)

    def new_result(structure: Structure) -> RelaxResult:
        return RelaxResult(
            status="failed", error=None, energy_single_point=None, energy_relaxed=None,
            n_steps=None, converged=False, max_force=None, max_stress=None, stress=None,
            relaxed_structure=None, spacegroup_after=None, wall_time_s=0.0,
            n_atoms=len(structure), device=device, settings=settings.to_dict(),
            settings_hash=settings.settings_hash(), calculator_info=info,
            calc_kind=settings.calc_kind, engine="torch-sim",
            volume_initial=float(structure.volume),
        )

    pending: deque[_Job] = deque()
    for i, structure in enumerate(structures):
        job = _Job(i, structure, new_result(structure))
        if len(structure) == 0:
            job.result.error = "single point failed: empty structure"
            yield i, _finish(job)
            continue
        pending.append(job)

    if settings.calc_kind == "single_point":
        yield from _single_points(pending, model, settings, max_atoms)
        return

    init_fn, step_fn = _optimizer(model, settings)
    active: list[_Job] = []
    batch = None
    while pending or active:
        # --- fill the batch with waiting structures ----------------------------------
        room = max_atoms - sum(job.n_atoms for job in active)
        joining: list[_Job] = []
        while pending and (not active and not joining or pending[0].n_atoms <= room):
            job = pending.popleft()
            job.start = time.perf_counter()
            room -= job.n_atoms
            joining.append(job)
        if joining:
            fresh = init_fn(initialize_state(
                [job.structure for job in joining], model.device, model.dtype))
            # the single point of the input structure, and convergence at step 0
            done = _record_start(fresh, joining, settings)
            for pos in sorted(done, reverse=True):
                yield joining[pos].index, _finish(joining[pos])
            keep = [pos for pos in range(len(joining)) if pos not in done]
            if keep:
                if done:
                    fresh.pop(sorted(done))
                batch = fresh if batch is None else concatenate_states([batch, fresh])
                active.extend(joining[pos] for pos in keep)
        if batch is None:
            continue
        # --- one FIRE step for every structure in the batch ---------------------------
        batch = step_fn(batch)
        for job in active:
            job.steps += 1
        finished = _check_after_step(batch, active, settings)
        if not finished:
            continue
        if len(finished) == len(active):
            states = batch.split()
            batch = None
        else:
            states = batch.pop(finished)
        for pos, state in zip(finished, states, strict=True):
            job = active[pos]
            _record_end(job, state, settings)
            yield job.index, _finish(job)
        for pos in sorted(finished, reverse=True):
            del active[pos]


def _single_points(pending: deque[_Job], model: Any, settings: RelaxSettings,
                   max_atoms: int) -> Iterator[tuple[int, RelaxResult]]:
    from torch_sim.state import initialize_state

    while pending:
        group: list[_Job] = [pending.popleft()]
        room = max_atoms - group[0].n_atoms
        while pending and pending[0].n_atoms <= room:
            room -= pending[0].n_atoms
            group.append(pending.popleft())
        start = time.perf_counter()
        state = initialize_state([job.structure for job in group], model.device, model.dtype)
        out = model(state)
        state.energy, state.forces = out["energy"], out["forces"]
        stress = out.get("stress")
        finite = _finite_per_system(state).tolist()
        fmax = _per_system_atom_force(state).tolist()
        elapsed = (time.perf_counter() - start) / len(group)
        for k, job in enumerate(group):
            res = job.result
            job.start = time.perf_counter() - elapsed
            if not finite[k]:
                res.error = (
                    "single point failed: non-finite energy or forces on the input structure"
                )
                yield job.index, _finish(job)
                continue
            energy = float(state.energy[k])
            res.energy_single_point = energy
            res.max_force_single_point = res.max_force = float(fmax[k])
            if energy / job.n_atoms < MIN_ENERGY_PER_ATOM:
                res.error = (f"single point failed: energy {energy / job.n_atoms:.3f} eV/atom "
                             f"below {MIN_ENERGY_PER_ATOM} eV/atom on the input structure "
                             "(diverged)")
                yield job.index, _finish(job)
                continue
            if stress is not None:
                res.stress = _voigt(stress[k])
                res.max_stress = max(abs(x) for x in res.stress)
            res.spacegroup_before = _spacegroup(job.structure)
            res.n_steps = 0
            res.converged = res.max_force_single_point <= settings.fmax
            res.status = "ok"
            yield job.index, _finish(job)


def _record_start(state: Any, jobs: list[_Job], settings: RelaxSettings) -> set[int]:
    """Store the single point of freshly initialised structures; return the positions of
    those already finished (failed, or converged at step 0)."""
    finite = _finite_per_system(state).tolist()
    fmax_all = _per_system_max_force(state).tolist()
    fmax_atoms = _per_system_atom_force(state).tolist()
    done: set[int] = set()
    singles: list[Any] | None = None  # split lazily, once
    for k, job in enumerate(jobs):
        res = job.result
        if not finite[k]:
            res.error = "single point failed: non-finite energy or forces on the input structure"
            done.add(k)
            continue
        energy = float(state.energy[k])
        res.energy_single_point = energy
        res.max_force_single_point = float(fmax_atoms[k])
        res.spacegroup_before = _spacegroup(job.structure)
        if energy / job.n_atoms < MIN_ENERGY_PER_ATOM:
            res.error = (f"single point failed: energy {energy / job.n_atoms:.3f} eV/atom below "
                         f"{MIN_ENERGY_PER_ATOM} eV/atom on the input structure (diverged)")
            done.add(k)
        elif fmax_all[k] < settings.fmax or settings.max_steps == 0:
            singles = singles if singles is not None else state.split()
            _record_end(job, singles[k], settings)
            done.add(k)
    return done


def _check_after_step(state: Any, jobs: list[_Job], settings: RelaxSettings) -> list[int]:
    """Positions (ascending) of the structures that are done after this step."""
    finite = _finite_per_system(state).tolist()
    fmax = _per_system_max_force(state).tolist()
    energy = state.energy.tolist()
    volume = state.volume.tolist() if hasattr(state, "volume") else [None] * len(jobs)
    finished = []
    for k, job in enumerate(jobs):
        where = f"at step {job.steps}"
        reason = None
        if not finite[k]:
            reason = f"non-finite energy or forces {where}"
        elif energy[k] / job.n_atoms < MIN_ENERGY_PER_ATOM:
            reason = (f"energy {energy[k] / job.n_atoms:.3f} eV/atom below "
                      f"{MIN_ENERGY_PER_ATOM} eV/atom {where} (diverged)")
        elif volume[k] is not None:
            ratio = abs(volume[k]) / job.volume_initial
            if not (1 / MAX_VOLUME_FACTOR <= ratio <= MAX_VOLUME_FACTOR):
                reason = (f"volume changed by a factor {ratio:.3g} {where} "
                          f"(limit {MAX_VOLUME_FACTOR:g}; diverged)")
        if reason is not None:
            job.result.n_steps = job.steps
            job.result.error = f"relaxation failed: {reason}"
            job.result.status = "failed_pending"
            finished.append(k)
        elif fmax[k] < settings.fmax or job.steps >= settings.max_steps:
            finished.append(k)
    return finished


def _record_end(job: _Job, state: Any, settings: RelaxSettings) -> None:
    """Fill the result of a structure that left the batch (single-system ``state``)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from mliapdb.compute.relaxation import _min_distance

    res = job.result
    res.n_steps = job.steps
    if res.status == "failed_pending":
        res.status = "failed"
        return
    fmax_final = float(_per_system_max_force(state)[0])
    converged = fmax_final < settings.fmax
    structure = state.to_structures()[0]
    shortest = _min_distance(AseAtomsAdaptor.get_atoms(structure))
    if shortest < MIN_DISTANCE:
        res.error = (f"relaxation failed: atoms {shortest:.3f} Å apart at the end "
                     f"(< {MIN_DISTANCE} Å; collapsed)")
        return
    res.converged = converged
    res.energy_relaxed = float(state.energy[0])
    res.fmax_final = fmax_final
    res.max_force = float(_per_system_atom_force(state)[0])
    stress = getattr(state, "stress", None)
    if stress is not None:
        voigt = _voigt(stress[0])
        if all(math.isfinite(x) for x in voigt):
            res.stress = voigt
            res.max_stress = max(abs(x) for x in voigt)
    res.volume_relaxed = float(structure.volume)
    res.relaxed_structure = structure
    res.spacegroup_after = _spacegroup(structure)
    res.rmsd = internal_rmsd(job.structure, structure)
    if converged:
        res.status = "ok"
    else:
        res.status = "not_converged"
        res.error = (f"did not reach fmax {settings.fmax:g} eV/Å in {settings.max_steps} "
                     f"steps, final fmax {fmax_final:.3g} eV/Å")


def _finish(job: _Job) -> RelaxResult:
    res = job.result
    if res.status == "failed_pending":
        res.status = "failed"
    res.wall_time_s = time.perf_counter() - job.start
    return res


def _spacegroup(structure: Structure) -> int | None:
    from mliapdb.compute.relaxation import _spacegroup as spacegroup

    return spacegroup(structure)
