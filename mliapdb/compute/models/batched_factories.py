"""torch-sim model factories, one per model family that torch-sim can batch (the batched
path, :mod:`mliapdb.compute.batched`). Heavy imports happen inside each factory.

Families without a torch-sim wrapper (CHGNet, HIENet, GRACE, M3GNet/matgl in torch-sim 0.3)
run on the ASE path only; :func:`batched_support` says so in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mliapdb.compute.models.registry import (
    ModelSpec,
    checked_checkpoint,
    load_checkpoint,
    provenance,
)

BatchedFactory = Callable[[ModelSpec, str, Path], Any]
"""``factory(spec, device, checkpoint_path) -> torch_sim ModelInterface``."""

_BATCHED: dict[str, BatchedFactory] = {}


def register_batched(family: str) -> Callable[[BatchedFactory], BatchedFactory]:
    """Decorator registering the torch-sim model factory of a model family."""

    def decorator(func: BatchedFactory) -> BatchedFactory:
        _BATCHED[family] = func
        return func

    return decorator


def batched_support(spec: ModelSpec) -> tuple[bool, str]:
    """(supported, reason): whether ``spec``'s family has a torch-sim model here."""
    if spec.family not in _BATCHED:
        return False, (
            f"model {spec.name}: torch-sim has no {spec.family} model - use --engine ase"
        )
    try:
        import torch_sim  # noqa: F401
    except ImportError:
        return False, "torch-sim is not installed - pip install 'mliapdb[batched]'"
    return True, "ready"


def make_batched_model(spec: ModelSpec, device: str = "cpu", checkpoint: str | None = None):
    """torch-sim model of ``spec`` on ``device``, with ``mliapdb_info`` as
    :func:`mliapdb.compute.models.make_calculator` sets it (same checkpoint checks)."""
    supported, reason = batched_support(spec)
    if not supported:
        raise ValueError(reason)
    path, sha = checked_checkpoint(spec, checkpoint)
    model = load_checkpoint(_BATCHED[spec.family], spec, device, path)
    info = provenance(spec, device, path, sha)
    info["packages"].update(_torch_sim_version())
    model.mliapdb_info = {**info, "engine": "torch-sim"}
    return model


def _torch_sim_version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"torch-sim-atomistic": version("torch-sim-atomistic")}
    except PackageNotFoundError:
        return {}


@register_batched("sevennet")
def sevennet_model(spec: ModelSpec, device: str, checkpoint: Path):
    """SevenNet on torch-sim (float32, as SevenNet's own calculator).

    torch-sim >= 0.4 (Python >= 3.12) is used through sevenn's own ``sevenn.torchsim``
    wrapper. On Python 3.11 the newest torch-sim is 0.3.0, whose wrapper imports
    ``sevenn.calculator.torch_script_type``, gone in sevenn 0.13: the shim below restores
    the name (TorchScript models are never passed here, so only the ``isinstance`` check
    against it runs).
    """
    import sevenn.calculator
    import sevenn.util
    import torch

    model = sevenn.util.load_checkpoint(str(checkpoint)).build_model()
    modal = spec.options.get("modal")
    try:
        from sevenn.torchsim import SevenNetModel  # needs torch-sim >= 0.4
    except ImportError:
        if not hasattr(sevenn.calculator, "torch_script_type"):
            sevenn.calculator.torch_script_type = torch.jit.ScriptModule
        from torch_sim.models.sevennet import SevenNetModel
    return SevenNetModel(model=model, modal=modal, device=torch.device(device))


@register_batched("mace")
def mace_model(spec: ModelSpec, device: str, checkpoint: Path):
    """MACE on torch-sim (float64, as mliapdb's MACE ASE calculator)."""
    import torch
    from torch_sim.models.mace import MaceModel

    model = torch.load(str(checkpoint), map_location=device, weights_only=False)
    return MaceModel(model=model, device=torch.device(device), dtype=torch.float64,
                     compute_forces=True, compute_stress=True)


@register_batched("mattersim")
def mattersim_model(spec: ModelSpec, device: str, checkpoint: Path):
    """MatterSim on torch-sim."""
    import torch
    from mattersim.forcefield.potential import Potential
    from torch_sim.models.mattersim import MatterSimModel

    potential = Potential.from_checkpoint(str(checkpoint), device=device, load_training_state=False)
    return MatterSimModel(model=potential, device=torch.device(device))


@register_batched("orb")
def orb_model(spec: ModelSpec, device: str, checkpoint: Path):
    """ORB on torch-sim (the architecture named by ``[options] orb_model``)."""
    import torch
    from orb_models.forcefield import pretrained
    from torch_sim.models.orb import OrbModel

    loader = getattr(pretrained, spec.options.get("orb_model", "orb_v3_conservative_inf_mpa"))
    orbff = loader(weights_path=str(checkpoint), device=device)
    return OrbModel(model=orbff, device=torch.device(device))


@register_batched("fairchem")
def fairchem_model(spec: ModelSpec, device: str, checkpoint: Path):
    """fairchem (eqV2/eSEN/UMA) on torch-sim."""
    import torch
    from torch_sim.models.fairchem import FairChemModel

    kwargs = {k: v for k, v in spec.options.items() if k in ("task_name",)}
    return FairChemModel(model=str(checkpoint), device=torch.device(device), **kwargs)
