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

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "schema"


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
