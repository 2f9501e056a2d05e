"""Paths and defaults shared by every command (no work at import time)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mliapdb.duckdb"
"""Database file used when ``--db`` is not given (in the working directory)."""

DEFAULT_SYMPREC = 0.1
"""Symmetry tolerance (Angstrom) of the analysis that queries use unless told otherwise."""

SYMPREC_RANGE = (1e-5, 1.0)
"""Smallest and largest symmetry tolerance (Angstrom) accepted anywhere."""

DATA_ENV = "MLIAPDB_DATA"
"""Environment variable naming the folder with MP data (``mp/*.json.gz``, ``compositions/``)."""

WEIGHTS_ENV = "MLIAPDB_WEIGHTS"
"""Environment variable naming a folder of model checkpoints (``<family>/<checkpoint_file>``)."""

MP_API_ENDPOINT = "https://api.materialsproject.org/"
"""Materials Project API address used by ``mliapdb ingest mp`` unless told otherwise."""

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
"""The checkout an editable install runs from (for a wheel: site-packages, where it is unused)."""

PACKAGED_DATA = PACKAGE_DIR / "_data"
"""Where a wheel carries ``schema/`` and ``snapshots/`` (copied there by ``setup.py``'s build)."""


def _shipped(name: str) -> Path:
    """``name`` (``schema``, ``snapshots``) as the wheel carries it, else the checkout's."""
    packaged = PACKAGED_DATA / name
    return packaged if packaged.is_dir() else REPO_ROOT / name


def schema_dir() -> Path:
    """The folder with ``migrations/`` and ``views/`` this code applies."""
    return _shipped("schema")


def snapshots_dir() -> Path:
    """The folder with the published snapshot index (``index.json``)."""
    return _shipped("snapshots")


def shared_data_dir() -> Path:
    """Folder with the shared MP data: ``$MLIAPDB_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def shared_weights_dir() -> Path:
    """Folder searched for user checkpoints as ``<family>/<checkpoint_file>`` (after
    ``--checkpoint`` and the checkpoints file): ``$MLIAPDB_WEIGHTS`` or ``../shared/weights``
    beside the repo. It may not exist."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "weights"
