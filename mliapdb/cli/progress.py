"""Rich progress bars on stderr (silent when stderr is not a terminal)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (rich bars instead of log lines)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def progress_bar(items: Iterable, total: int, description: str) -> Iterator:
    """Yield ``items`` while showing a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
