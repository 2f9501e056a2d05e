"""How long loops report how far they are: ``progress(items, total, description)`` wraps a loop
and yields its items (the CLI passes a rich bar on a terminal, log lines with i/N, rate and ETA
elsewhere; :func:`no_progress` says nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

Progress = Callable[[Iterable, int, str], Iterable]
"""``progress(iterable, total, description)`` wraps a loop (a rich progress bar in the CLI)."""


def no_progress(items: Iterable, total: int, description: str) -> Iterable:
    """The items, silently."""
    return items

