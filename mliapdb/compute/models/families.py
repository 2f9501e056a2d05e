"""The calculator factory of each model family, registered by :mod:`.factories` (a table with
no imports of its own, so the factories and the registry both build on it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

    from mliapdb.compute.models.registry import ModelSpec

Factory = Callable[["ModelSpec", str, Path], "Calculator"]
"""``factory(spec, device, checkpoint_path) -> ase Calculator``; heavy imports inside."""


FACTORIES: dict[str, Factory] = {}


def register_factory(family: str) -> Callable[[Factory], Factory]:
    """Decorator registering the calculator factory of a model family."""

    def decorator(func: Factory) -> Factory:
        FACTORIES[family] = func
        return func

    return decorator

