"""Model metadata (one ``*.toml`` per model in this folder) and a lazy calculator registry.

Nothing heavy is imported here: torch and the model packages are imported only inside the
calculator factories (:mod:`mliapdb.models.factories`), when :func:`make_calculator` runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mliapdb.relax import RelaxSettings

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

MODELS_DIR = Path(__file__).resolve().parent
"""Folder holding the model metadata files (``<name>.toml``)."""

ENERGY_CONVENTIONS = ("mp2020_corrected", "raw")
"""``mp2020_corrected``: the model predicts MP2020-corrected GGA/GGA+U energies, compare them
directly with the corrected DFT energy. ``raw``: the model predicts raw VASP energies, add the
DFT entry's own MP2020 correction before comparing."""

REQUIRED_STR_KEYS = (
    "name",
    "family",
    "version",
    "package",
    "checkpoint",
    "checkpoint_sha256",
    "training_set",
    "functional",
    "energy_convention",
    "license",
    "citation",
    "url",
)
OPTIONAL_KEYS = {"notes": str, "options": dict, "relax": dict}

COMMON_PACKAGES = ("torch", "ase", "pymatgen", "pymatgen-core", "numpy")
"""Packages whose versions :func:`package_versions` records besides the model's own."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ModelSpecError(ValueError):
    """A model metadata file is invalid (the message names the file)."""


class UnknownModelError(KeyError):
    """No metadata file for this model name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown model {self.name!r} - run 'mliapdb models' to list them"


class CheckpointError(RuntimeError):
    """The checkpoint of a model is missing or does not match its recorded sha256."""


@dataclass(frozen=True)
class ModelSpec:
    """Metadata of one model (from ``mliapdb/models/<name>.toml``)."""

    name: str
    family: str
    """Calculator factory family, e.g. ``"chgnet"``."""
    version: str
    package: str
    """Python distribution that provides the model (e.g. ``"chgnet"``)."""
    checkpoint: str
    """``"<package>:<path inside the installed package>"`` or a file path."""
    checkpoint_sha256: str
    training_set: str
    functional: str
    energy_convention: str
    """One of :data:`ENERGY_CONVENTIONS`."""
    license: str
    citation: str
    """DOI of the paper to cite."""
    url: str
    relax: dict[str, Any] = field(default_factory=dict)
    """Default relaxation settings (keys of :class:`mliapdb.relax.RelaxSettings`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Family-specific keyword arguments of the checkpoint loader."""
    notes: str = ""
    source: str = ""
    """Path of the metadata file this spec was read from."""

    def relax_settings(self, **overrides: Any) -> RelaxSettings:
        """The model's default :class:`RelaxSettings`, with ``overrides`` applied."""
        return RelaxSettings.from_dict({**self.relax, **overrides})

    @property
    def needs_mp2020_correction(self) -> bool:
        """True when the DFT entry's MP2020 correction must be added to the model energy."""
        return self.energy_convention == "raw"


# --- metadata -----------------------------------------------------------------------------


def _parse_spec(path: Path) -> ModelSpec:
    """Read and validate one metadata file; errors name the file."""

    def fail(msg: str) -> ModelSpecError:
        return ModelSpecError(f"{path}: {msg}")

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML ({exc})") from exc

    known = set(REQUIRED_STR_KEYS) | set(OPTIONAL_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise fail(f"unknown key(s) {unknown}")
    missing = [key for key in REQUIRED_STR_KEYS if key not in data]
    if missing:
        raise fail(f"missing required key(s) {missing}")
    for key in REQUIRED_STR_KEYS:
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string, got {value!r}")
    for key, kind in OPTIONAL_KEYS.items():
        if key in data and not isinstance(data[key], kind):
            raise fail(f"{key} must be a {'table' if kind is dict else 'string'}")

    if data["name"] != path.stem:
        raise fail(f"name {data['name']!r} does not match the file name {path.stem!r}")
    if not _NAME_RE.match(data["name"]):
        raise fail(f"name {data['name']!r} must be lower case letters, digits, '.', '_', '-'")
    if data["energy_convention"] not in ENERGY_CONVENTIONS:
        raise fail(
            f"energy_convention {data['energy_convention']!r} must be one of "
            f"{list(ENERGY_CONVENTIONS)}"
        )
    if not _SHA256_RE.match(data["checkpoint_sha256"]):
        raise fail("checkpoint_sha256 must be 64 lower-case hex characters")
    if data["family"] not in _FACTORIES:
        raise fail(f"no calculator factory for family {data['family']!r} ({sorted(_FACTORIES)})")
    try:
        RelaxSettings.from_dict(data.get("relax", {}))
    except (TypeError, ValueError) as exc:
        raise fail(f"[relax]: {exc}") from exc

    return ModelSpec(
        **{key: data[key] for key in REQUIRED_STR_KEYS},
        relax=dict(data.get("relax", {})),
        options=dict(data.get("options", {})),
        notes=data.get("notes", ""),
        source=str(path),
    )


def load_model_specs(folder: Path | None = None) -> dict[str, ModelSpec]:
    """Every model in ``folder`` (default: this package folder), by name, validated."""
    _register_builtin_factories()
    specs: dict[str, ModelSpec] = {}
    for path in sorted(Path(folder or MODELS_DIR).glob("*.toml")):
        spec = _parse_spec(path)
        if spec.name in specs:  # cannot happen with name == file stem, kept for safety
            raise ModelSpecError(f"{spec.source}: duplicate model name {spec.name!r}")
        specs[spec.name] = spec
    return specs


def get_model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; raises :class:`UnknownModelError` if there is none."""
    specs = load_model_specs()
    if name not in specs:
        raise UnknownModelError(name)
    return specs[name]


# --- checkpoints and provenance -------------------------------------------------------------


def resolve_checkpoint(spec: ModelSpec, checkpoint: str | None = None) -> Path:
    """Path of the checkpoint file (``checkpoint`` overrides the spec's), not importing it.

    ``"<package>:<relative path>"`` is looked up inside the installed package (found with
    ``importlib.util.find_spec``, which does not run the package's ``__init__``).
    """
    ref = checkpoint or spec.checkpoint
    package, sep, rel = ref.partition(":")
    if sep and package.isidentifier() and not Path(ref).exists():
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise CheckpointError(
                f"model {spec.name!r}: package {package!r} of checkpoint {ref!r} is not installed"
            )
        path = Path(next(iter(found.submodule_search_locations))) / rel
    else:
        path = Path(ref).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model {spec.name!r}: checkpoint file {path} not found")
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(spec: ModelSpec) -> str:
    """sha256 of the installed checkpoint; :class:`CheckpointError` if it differs from
    ``spec.checkpoint_sha256`` (or the file is missing)."""
    path = resolve_checkpoint(spec)
    actual = file_sha256(path)
    if actual != spec.checkpoint_sha256:
        raise CheckpointError(
            f"model {spec.name!r}: checkpoint {path} has sha256 {actual}, but {spec.source} "
            f"records {spec.checkpoint_sha256} (different {spec.package} install?)"
        )
    return actual


def package_versions(spec: ModelSpec) -> dict[str, str]:
    """Installed versions of the model's package and of :data:`COMMON_PACKAGES`
    (from package metadata, nothing is imported); missing packages are left out."""
    versions: dict[str, str] = {}
    for name in (spec.package, *COMMON_PACKAGES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# --- calculators ----------------------------------------------------------------------------

Factory = Callable[[ModelSpec, str, Path], "Calculator"]
"""``factory(spec, device, checkpoint_path) -> ase Calculator``; heavy imports inside."""

_FACTORIES: dict[str, Factory] = {}


def _register_builtin_factories() -> None:
    """Import the module defining the built-in factories (cheap: no torch at its top)."""
    from mliapdb.models import factories  # noqa: F401


def register_factory(family: str) -> Callable[[Factory], Factory]:
    """Decorator registering the calculator factory of a model family."""

    def decorator(func: Factory) -> Factory:
        _FACTORIES[family] = func
        return func

    return decorator


def make_calculator(
    spec: ModelSpec, device: str = "cpu", checkpoint: str | None = None
) -> Calculator:
    """ASE calculator of ``spec`` on ``device`` (``"cpu"``, ``"cuda"``, ...).

    Without ``checkpoint`` the installed checkpoint is used after checking its sha256;
    ``checkpoint`` (a file path or ``"<package>:<path>"``) loads another file instead (its
    sha256 is recorded, not checked). The calculator carries ``mliapdb_info``: model name,
    device, checkpoint path and sha256, package versions (picked up by ``relax_structure``).
    """
    _register_builtin_factories()
    if spec.family not in _FACTORIES:
        raise ModelSpecError(f"{spec.source}: no calculator factory for family {spec.family!r}")
    if checkpoint is None:
        path = resolve_checkpoint(spec)
        sha = checkpoint_sha256(spec)
    else:
        path = resolve_checkpoint(spec, checkpoint)
        sha = file_sha256(path)
    calc = _FACTORIES[spec.family](spec, device, path)
    calc.mliapdb_info = {
        "model": spec.name,
        "device": device,
        "checkpoint": str(path),
        "checkpoint_sha256": sha,
        "packages": package_versions(spec),
    }
    return calc
