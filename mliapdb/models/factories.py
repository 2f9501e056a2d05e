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
