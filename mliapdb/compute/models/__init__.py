"""Model metadata (``<name>.toml`` files in this folder) and the lazy calculator registry.

Importing this package does not import torch or any model package.
"""

from mliapdb.compute.models.errors import (
    CheckpointError,
    ModelSpecError,
    ModelUnavailableError,
    PackageMissingError,
    UnknownModelError,
)
from mliapdb.compute.models.families import register_factory
from mliapdb.compute.models.registry import (
    CHECKPOINTS_ENV,
    ENERGY_CONVENTIONS,
    MODELS_DIR,
    ModelSpec,
    availability,
    checkpoint_sha256,
    checkpoints_file,
    get_model_spec,
    load_model_specs,
    make_calculator,
    package_versions,
    resolve_checkpoint,
)

__all__ = [
    "CHECKPOINTS_ENV",
    "ENERGY_CONVENTIONS",
    "MODELS_DIR",
    "CheckpointError",
    "ModelSpec",
    "ModelSpecError",
    "ModelUnavailableError",
    "PackageMissingError",
    "UnknownModelError",
    "availability",
    "checkpoint_sha256",
    "checkpoints_file",
    "get_model_spec",
    "load_model_specs",
    "make_calculator",
    "package_versions",
    "register_factory",
    "resolve_checkpoint",
]
