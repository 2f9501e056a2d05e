"""Progress of long loops on stderr: a rich bar on a terminal, log lines elsewhere (a CI log,
a batch job's output file) with ``i/N``, the percentage, the rate and the time left."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

LOG_LINES = 20
"""About how many lines a loop writes when stderr is not a terminal (one per ``N / 20`` items,
and at least one every :data:`LOG_EVERY_S` seconds)."""

LOG_EVERY_S = 60.0
"""Longest silence (seconds) of a logged loop, while items keep arriving."""

QUIET_S = 5.0
"""A loop done within this many seconds writes no line at all (short commands stay quiet)."""


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (rich bars instead of log lines)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def progress_bar(items: Iterable, total: int, description: str) -> Iterator:
    """Yield ``items`` while showing a rich progress bar on stderr, or, when stderr is not a
    terminal, writing :func:`progress_line` lines about every ``total / 20`` items."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield from progress_log(items, total, description, _echo_err)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _echo_err(line: str) -> None:
    import click

    click.echo(line, err=True)


def progress_log(items: Iterable, total: int, description: str,
                 write: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 ) -> Iterator:
    """Yield ``items``, calling ``write`` with a :func:`progress_line` after each
    ``ceil(total / LOG_LINES)``-th item, after the last one, and whenever
    :data:`LOG_EVERY_S` seconds passed since the previous line; nothing while the loop is
    younger than :data:`QUIET_S` seconds."""
    step = max(1, math.ceil(total / LOG_LINES))
    start = last = clock()
    for done, item in enumerate(items, start=1):
        yield item
        now = clock()
        if now - start < QUIET_S:
            continue
        if done % step == 0 or done == total or now - last >= LOG_EVERY_S:
            write(progress_line(description, done, total, now - start))
            last = now


def progress_line(description: str, done: int, total: int, elapsed_s: float) -> str:
    """``"DESCRIPTION: 40/132 (30 %), 12.5/s, 0:07 left"`` (the rate per second over the whole
    loop so far; the time left at that rate; ``done`` once all are)."""
    pct = 100 * done / total if total else 100.0
    rate = done / elapsed_s if elapsed_s > 0 else math.inf
    shown_rate = f"{rate:.3g}/s" if math.isfinite(rate) else "-/s"
    if done >= total:
        left = f"done in {_clock(elapsed_s)}"
    elif math.isfinite(rate) and rate > 0:
        left = f"{_clock((total - done) / rate)} left"
    else:
        left = "time left unknown"
    return f"{description}: {done}/{total} ({pct:.0f} %), {shown_rate}, {left}"


def _clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
