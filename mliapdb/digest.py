"""sha256 of a file or a folder (checkpoints, snapshot files), read in 1 MiB chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file (``progress(n)`` after each chunk of ``n`` bytes); of a folder, the
    sha256 of its sorted ``"<relative path> <file sha256>\\n"`` lines."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(
            f"{item.relative_to(path).as_posix()} {sha256_file(item, progress)}\n"
            for item in sorted(path.rglob("*"))
            if item.is_file()
        )
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()
