"""Shared fixtures: the real MP data in ../shared/data (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mliapdb.config import shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "mp").is_dir():
        pytest.fail(f"shared MP data not found at {path}: set MLIAPDB_DATA")
    return path


@pytest.fixture(scope="session")
def mp_dir(data_dir: Path) -> Path:
    return data_dir / "mp"
