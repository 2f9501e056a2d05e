"""One generic MLIAP relaxation routine for every model (the atomate2 ForceFieldRelaxMaker idea).

A single point of the model on the input (DFT-relaxed) structure, then an ASE optimizer
(default ``FIRE``) on a cell filter (default ``FrechetCellFilter``) until the largest force
the filter exposes (atoms and cell) is below ``fmax`` or ``max_steps`` is reached.

Model failures never raise: they come back as ``RelaxResult(status="failed", error=...)``.
Divergence guards (checked after every optimizer step and at the end):

* energy or forces not finite (NaN/inf);
* energy per atom below ``MIN_ENERGY_PER_ATOM`` (-20 eV/atom: the lowest MP GGA/GGA+U energies,
  corrections included, are around -13 eV/atom, so lower values are a hole in the potential);
* cell volume changed by more than a factor ``MAX_VOLUME_FACTOR`` (3) either way from the input;
* at the end, two atoms closer than ``MIN_DISTANCE`` (0.5 Angstrom; the shortest real bond,
  H-H, is 0.74 Angstrom).

Heavy imports (ase, pymatgen, moyopy) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mliapdb.errors import MliapdbError

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure

STATUSES = ("ok", "not_converged", "failed")
"""Possible values of ``RelaxResult.status``."""

CALC_KINDS = ("single_point", "relax", "relax_fixsym")
"""``single_point``: the model on the DFT structure only (``max_steps = 0``); ``relax``:
positions and cell relaxed freely; ``relax_fixsym``: relaxed under ASE ``FixSymmetry``
(``fix_symmetry = true``), so the space group of the DFT structure is kept."""


def calc_kind(kind: str) -> str:
    """``kind`` as stored (:data:`CALC_KINDS`): the CLI's ``single-point`` / ``relax-fixsym``
    and the stored ``single_point`` / ``relax_fixsym`` are one spelling each; anything else is
    a one-line error listing them."""
    stored = str(kind).strip().lower().replace("-", "_")
    if stored not in CALC_KINDS:
        shown = ", ".join(k.replace("_", "-") for k in CALC_KINDS)
        raise MliapdbError(f"unknown calculation kind {kind!r} - use one of {shown}")
    return stored

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "MDMin", "GPMin")
"""ASE optimizers (``ase.optimize``) that ``RelaxSettings.optimizer`` may name."""

CELL_FILTERS = ("FrechetCellFilter", "ExpCellFilter", "UnitCellFilter", "none")
"""ASE cell filters (``ase.filters``) that ``RelaxSettings.cell_filter`` may name;
``"none"`` relaxes the positions only, in a fixed cell."""

MIN_ENERGY_PER_ATOM = -20.0
"""eV/atom: a model energy below this is treated as a divergence (hole in the potential)."""

MAX_VOLUME_FACTOR = 3.0
"""A relaxation whose cell volume grows or shrinks by more than this factor has diverged."""

MIN_DISTANCE = 0.5
"""Angstrom: two atoms closer than this at the end of a relaxation mean it has collapsed."""

SPACEGROUP_SYMPREC = 0.1
"""Angstrom: symmetry tolerance of ``RelaxResult.spacegroup_after`` (moyopy)."""

MAX_ERROR_CHARS = 300
"""Errors are reduced to one line of at most this many characters."""


@dataclass(frozen=True)
class RelaxSettings:
    """Settings of :func:`relax_structure`; their hash identifies a relaxation protocol.

    ``fmax`` is in eV/Angstrom and applies to every degree of freedom of the cell filter
    (atomic forces and the filter's cell "forces"), as ASE optimizers do.
    """

    optimizer: str = "FIRE"
    cell_filter: str = "FrechetCellFilter"
    fmax: float = 0.05
    max_steps: int = 500
    fix_symmetry: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: expected one of {OPTIMIZERS}")
        if self.cell_filter not in CELL_FILTERS:
            raise ValueError(
                f"unknown cell_filter {self.cell_filter!r}: expected one of {CELL_FILTERS}"
            )
        if isinstance(self.fmax, bool) or not isinstance(self.fmax, int | float):
            raise ValueError(f"fmax must be a number (eV/Å), got {self.fmax!r}")
        if not (math.isfinite(self.fmax) and self.fmax > 0):
            raise ValueError(f"fmax must be a positive number (eV/Å), got {self.fmax!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise ValueError(f"max_steps must be an integer, got {self.max_steps!r}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps!r}")
        if not isinstance(self.fix_symmetry, bool):
            raise ValueError(f"fix_symmetry must be true or false, got {self.fix_symmetry!r}")
        # canonical float so that fmax=1 and fmax=1.0 hash alike
        object.__setattr__(self, "fmax", float(self.fmax))

    @property
    def calc_kind(self) -> str:
        """One of :data:`CALC_KINDS`, derived from ``max_steps`` and ``fix_symmetry``."""
        if self.max_steps == 0:
            return "single_point"
        return "relax_fixsym" if self.fix_symmetry else "relax"

    @classmethod
    def for_kind(cls, kind: str, base: dict[str, Any] | None = None) -> RelaxSettings:
        """Settings ``base`` (a dict) turned into calculation kind ``kind``."""
        data = dict(base or {})
        if kind == "single_point":
            data["max_steps"] = 0
            data["fix_symmetry"] = False
        elif kind == "relax_fixsym":
            data["fix_symmetry"] = True
        elif kind == "relax":
            data["fix_symmetry"] = False
        else:
            raise ValueError(f"unknown calculation kind {kind!r}: expected one of {CALC_KINDS}")
        if kind == "relax_fixsym" and data.get("max_steps") == 0:
            raise ValueError("max_steps 0 is a single point, not a symmetry-constrained relaxation")
        return cls.from_dict(data)  # relax with max_steps 0 is a single point (calc_kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (JSON-serialisable)."""
        return asdict(self)

    def settings_hash(self) -> str:
        """First 16 hex characters of the sha256 of the canonical JSON (sorted keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelaxSettings:
        """Settings from a dict; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown relax setting(s) {unknown}: expected {sorted(known)}")
        return cls(**data)


@dataclass
class RelaxResult:
    """Outcome of :func:`relax_structure`. Energies in eV per cell, forces in eV/Angstrom,
    stresses in eV/Angstrom^3 (ASE sign convention, Voigt order xx yy zz yz xz xy)."""

    status: str
    """``"ok"`` | ``"not_converged"`` | ``"failed"``."""
    error: str | None
    """One-line reason when status is not ``"ok"``."""
    energy_single_point: float | None
    """Raw model energy (eV/cell) of the input structure, before any relaxation."""
    energy_relaxed: float | None
    """Raw model energy (eV/cell) at the end of the relaxation; None if failed."""
    n_steps: int | None
    """Optimizer steps taken (None if the single point already failed)."""
    converged: bool
    max_force: float | None
    """Largest atomic force norm (eV/Angstrom) at the end (None if failed)."""
    max_stress: float | None
    """Largest absolute stress component (eV/Angstrom^3) at the end (None if failed)."""
    stress: list[float] | None
    """Final stress, Voigt 6 (eV/Angstrom^3); None if failed or the model gives none."""
    relaxed_structure: Structure | None
    spacegroup_after: int | None
    """moyopy space-group number of the relaxed structure at symprec 0.1 Angstrom."""
    wall_time_s: float
    n_atoms: int
    fmax_final: float | None = None
    """Largest force over the filter's degrees of freedom (atoms + cell), eV/Angstrom."""
    max_force_single_point: float | None = None
    """Largest atomic force norm (eV/Angstrom) on the input structure."""
    volume_initial: float | None = None
    """Angstrom^3, input cell."""
    volume_relaxed: float | None = None
    """Angstrom^3, final cell (None if failed)."""
    device: str | None = None
    """Device the calculator ran on (e.g. ``"cpu"``), when it says."""
    settings: dict[str, Any] = field(default_factory=dict)
    settings_hash: str | None = None
    calculator_info: dict[str, Any] = field(default_factory=dict)
    """Provenance the calculator carries (model name, checkpoint sha256, package versions)."""
    calc_kind: str = "relax"
    """One of :data:`CALC_KINDS`."""
    engine: str = "ase"
    """``"ase"`` (this module) or ``"torch-sim"`` (:mod:`mliapdb.compute.batched`)."""
    spacegroup_before: int | None = None
    """moyopy space-group number of the input structure at symprec 0.1 Angstrom."""
    rmsd: float | None = None
    """Angstrom: RMS displacement of the atoms in internal coordinates, input -> relaxed (see
    :func:`internal_rmsd`); None for single points and failures."""

    @property
    def volume_ratio(self) -> float | None:
        """Relaxed / input cell volume (None when either is unknown)."""
        if self.volume_relaxed is None or not self.volume_initial:
            return None
        return self.volume_relaxed / self.volume_initial

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (the relaxed structure as a pymatgen dict)."""
        out = asdict(self)
        out["relaxed_structure"] = (
            self.relaxed_structure.as_dict() if self.relaxed_structure is not None else None
        )
        return out


class _RelaxationFailed(Exception):
    """Raised internally by the guards; becomes ``status="failed"``."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(msg) > MAX_ERROR_CHARS:
        msg = msg[: MAX_ERROR_CHARS - 3] + "..."
    return msg


def _check_state(atoms: Atoms, volume_initial: float, where: str) -> None:
    """Raise ``_RelaxationFailed`` if energy/forces are not finite or a guard is crossed."""
    import numpy as np

    energy = float(atoms.get_potential_energy())
    if not math.isfinite(energy):
        raise _RelaxationFailed(f"non-finite energy ({energy}) {where}")
    forces = np.asarray(atoms.get_forces())
    if not np.all(np.isfinite(forces)):
        raise _RelaxationFailed(f"non-finite forces {where}")
    per_atom = energy / len(atoms)
    if per_atom < MIN_ENERGY_PER_ATOM:
        raise _RelaxationFailed(
            f"energy {per_atom:.3f} eV/atom below {MIN_ENERGY_PER_ATOM} eV/atom {where} (diverged)"
        )
    volume = float(atoms.get_volume())
    ratio = volume / volume_initial
    if not (1 / MAX_VOLUME_FACTOR <= ratio <= MAX_VOLUME_FACTOR):
        raise _RelaxationFailed(
            f"volume changed by a factor {ratio:.3g} {where} "
            f"(limit {MAX_VOLUME_FACTOR:g}; diverged)"
        )


def _min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance (Angstrom), periodic images included."""
    from ase.neighborlist import neighbor_list

    if len(atoms) == 0:
        return math.inf
    d = neighbor_list("d", atoms, MIN_DISTANCE * 2)
    return float(d.min()) if len(d) else math.inf


def internal_rmsd(initial: Structure, relaxed: Structure) -> float:
    """RMS atomic displacement (Angstrom) from ``initial`` to ``relaxed`` (same atoms, same
    order, as a relaxation keeps them), in internal coordinates.

    Fractional displacements are wrapped to the nearest image, their mean (a rigid
    translation) is removed, and they are expressed in the relaxed cell: a uniform strain of
    the cell alone gives 0 (its size is in ``volume_ratio``), atoms moving inside it do not.
    """
    import numpy as np

    if len(initial) != len(relaxed):
        raise ValueError(f"{len(initial)} vs {len(relaxed)} sites: not the same structure")
    dfrac = relaxed.frac_coords - initial.frac_coords
    dfrac -= np.round(dfrac)
    dfrac -= dfrac.mean(axis=0)
    dcart = dfrac @ relaxed.lattice.matrix
    return float(np.sqrt((dcart**2).sum(axis=1).mean()))


def _spacegroup(structure: Structure) -> int | None:
    """moyopy space-group number at ``SPACEGROUP_SYMPREC``; None if moyopy fails."""
    from mliapdb.materials.symmetry import spacegroup_number

    try:
        return spacegroup_number(structure, symprec=SPACEGROUP_SYMPREC)
    except Exception:
        return None


def _make_optimizer(settings: RelaxSettings, atoms: Atoms) -> tuple[Any, Any]:
    """(cell filter or atoms, ASE optimizer on it); the optimizer has no log, no trajectory."""
    import ase.filters
    import ase.optimize

    target: Any = atoms
    if settings.cell_filter != "none":
        target = getattr(ase.filters, settings.cell_filter)(atoms)
    optimizer_cls = getattr(ase.optimize, settings.optimizer)
    return target, optimizer_cls(target, logfile=None)


def _fmax_of(target: Any) -> float:
    """Largest force norm over the optimizer's degrees of freedom (eV/Angstrom)."""
    import numpy as np

    forces = np.asarray(target.get_forces())
    return float(np.sqrt((forces**2).sum(axis=1)).max()) if len(forces) else 0.0


def relax_structure(
    structure: Structure, calculator: Calculator, settings: RelaxSettings
) -> RelaxResult:
    """Single point on ``structure``, then (unless ``settings.calc_kind`` is
    ``single_point``) relax positions and cell with ``settings``.

    Returns a :class:`RelaxResult`; exceptions of the model (e.g. CHGNet refusing isolated
    atoms), non-finite values and divergence become ``status="failed"``, never an exception.
    ``calculator`` is an ASE calculator (see :func:`mliapdb.compute.models.make_calculator`); it is
    attached to a copy of the structure, the input is not modified.
    """
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    start = time.perf_counter()
    n_atoms = len(structure)
    info = dict(getattr(calculator, "mliapdb_info", None) or {})
    device = info.get("device", getattr(calculator, "device", None))
    result = RelaxResult(
        status="failed",
        error=None,
        energy_single_point=None,
        energy_relaxed=None,
        n_steps=None,
        converged=False,
        max_force=None,
        max_stress=None,
        stress=None,
        relaxed_structure=None,
        spacegroup_after=None,
        wall_time_s=0.0,
        n_atoms=n_atoms,
        device=None if device is None else str(device),
        settings=settings.to_dict(),
        settings_hash=settings.settings_hash(),
        calculator_info=info,
        calc_kind=settings.calc_kind,
    )

    def finish(status: str, error: str | None) -> RelaxResult:
        result.status = status
        result.error = error
        result.wall_time_s = time.perf_counter() - start
        return result

    # --- single point on the input structure --------------------------------------------
    try:
        if n_atoms == 0:
            raise _RelaxationFailed("empty structure")
        atoms = AseAtomsAdaptor.get_atoms(structure.copy())
        atoms.calc = calculator
        volume_initial = float(atoms.get_volume())
        result.volume_initial = volume_initial
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces())
        if not math.isfinite(energy) or not np.all(np.isfinite(forces)):
            raise _RelaxationFailed("non-finite energy or forces on the input structure")
        result.energy_single_point = energy
        result.max_force_single_point = float(np.sqrt((forces**2).sum(axis=1)).max())
        _check_state(atoms, volume_initial, "on the input structure")
    except Exception as exc:  # a model failure must not crash the caller
        reason = str(exc) if isinstance(exc, _RelaxationFailed) else _one_line(exc)
        return finish("failed", f"single point failed: {reason}")
    result.spacegroup_before = _spacegroup(structure)

    if settings.calc_kind == "single_point":
        # converged: the DFT structure is already a minimum of the model within fmax
        result.max_force = result.max_force_single_point
        result.converged = result.max_force_single_point <= settings.fmax
        result.n_steps = 0
        try:
            stress = np.asarray(atoms.get_stress(voigt=True), dtype=float)
            if np.all(np.isfinite(stress)):
                result.stress = [float(x) for x in stress]
                result.max_stress = float(np.abs(stress).max())
        except Exception:  # a model without stress
            pass
        return finish("ok", None)

    # --- relaxation ------------------------------------------------------------------------
    optimizer = None
    try:
        if settings.fix_symmetry:
            from ase.constraints import FixSymmetry

            atoms.set_constraint(FixSymmetry(atoms))
        target, optimizer = _make_optimizer(settings, atoms)

        def guard() -> None:
            _check_state(atoms, volume_initial, f"at step {optimizer.nsteps}")

        optimizer.attach(guard, interval=1)
        with warnings.catch_warnings():
            # FrechetCellFilter's matrix logarithm warns "logm result may be inaccurate" at
            # ~1e-12 error: harmless, and it would flood stderr.
            warnings.filterwarnings("ignore", message="logm result may be inaccurate")
            converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps))
        result.n_steps = int(optimizer.nsteps)
        _check_state(atoms, volume_initial, "at the end")
        shortest = _min_distance(atoms)
        if shortest < MIN_DISTANCE:
            raise _RelaxationFailed(
                f"atoms {shortest:.3f} Å apart at the end (< {MIN_DISTANCE} Å; collapsed)"
            )
        fmax_final = _fmax_of(target)
        final_forces = np.asarray(atoms.get_forces())
        energy_relaxed = float(atoms.get_potential_energy())
        try:
            stress = np.asarray(atoms.get_stress(voigt=True), dtype=float)
        except Exception:  # a model without stress (only possible with cell_filter="none")
            stress = None
    except Exception as exc:
        if optimizer is not None:
            result.n_steps = int(optimizer.nsteps)
        reason = str(exc) if isinstance(exc, _RelaxationFailed) else _one_line(exc)
        return finish("failed", f"relaxation failed: {reason}")

    result.converged = converged
    result.energy_relaxed = energy_relaxed
    result.fmax_final = fmax_final
    result.max_force = float(np.sqrt((final_forces**2).sum(axis=1)).max())
    if stress is not None and np.all(np.isfinite(stress)):
        result.stress = [float(x) for x in stress]
        result.max_stress = float(np.abs(stress).max())
    result.volume_relaxed = float(atoms.get_volume())
    plain = atoms.copy()  # no calculator: keep model results out of the structure
    plain.set_constraint()
    relaxed = AseAtomsAdaptor.get_structure(plain)
    result.relaxed_structure = relaxed
    result.spacegroup_after = _spacegroup(relaxed)
    result.rmsd = internal_rmsd(structure, relaxed)
    if converged:
        return finish("ok", None)
    return finish(
        "not_converged",
        f"did not reach fmax {settings.fmax:g} eV/Å in {settings.max_steps} steps, "
        f"final fmax {fmax_final:.3g} eV/Å",
    )
