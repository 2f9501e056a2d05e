"""When a long ``mliapdb ingest relax`` writes: its results are committed in batches, every
``every`` results or ``seconds`` after the first uncommitted one (whichever comes first), each
batch in one short hold of the database (:class:`mliapdb.store.database.Holder`), so that other
processes (``query``, ``report``, ``sql``, a notebook) read the file between batches. The
batches themselves: :class:`mliapdb.compute.calculations.ResultBatches` (serial path) and
:class:`mliapdb.compute.cluster.PartBatches` (Parquet parts of a cluster run).

An interrupted run loses at most the batch it had not committed yet (on an exception or Ctrl-C
the batch is committed before the run stops; a SIGKILL loses it); the next run skips what is
stored (:func:`mliapdb.compute.calculations.done_keys`). A batch that meets the file held by
another process for longer than the lock timeout is kept and committed with the next one; at
the end of the run it is written as a Parquet part beside the database, which the next run of
the model merges (:func:`mliapdb.compute.cluster.merge_leftovers`): nothing computed is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mliapdb.errors import MliapdbError

DEFAULT_COMMIT_EVERY = 100
"""Results per commit at most (each commit is one open of the file, one transaction, a close)."""

DEFAULT_COMMIT_SECONDS = 10.0
"""Seconds after the first uncommitted result at most before a commit: what a SIGKILL loses."""


@dataclass(frozen=True)
class CommitOptions:
    """When a long run commits (``ingest relax --commit-every N --commit-seconds S``): once
    ``every`` results are uncommitted, or the first of them is ``seconds`` old, whichever
    first (checked as each result arrives)."""

    every: int = DEFAULT_COMMIT_EVERY
    seconds: float = DEFAULT_COMMIT_SECONDS

    def __post_init__(self) -> None:
        if self.every < 1:
            raise MliapdbError(f"--commit-every must be 1 or more results, got {self.every}")
        if not self.seconds > 0:
            raise MliapdbError(f"--commit-seconds must be above 0 s, got {self.seconds}")


EACH_RESULT = CommitOptions(every=1)
"""Commit every result as it comes: the default of a run on a connection kept open (batches
would only lose more on a kill: no other process reads the file meanwhile anyway)."""


def commit_options(given: CommitOptions | None, short_holds: bool) -> CommitOptions:
    """``given``, else the default of a run that holds the file only to commit
    (``short_holds``: :class:`CommitOptions`), else :data:`EACH_RESULT`."""
    if given is not None:
        return given
    return CommitOptions() if short_holds else EACH_RESULT


@dataclass
class CommitClock:
    """Counts uncommitted results and says when a batch is due (``clock``: seconds, monotonic)."""

    options: CommitOptions = field(default_factory=CommitOptions)
    clock: Callable[[], float] = time.monotonic
    pending: int = 0
    since: float = 0.0

    def add(self, n: int = 1) -> None:
        """``n`` more uncommitted results."""
        if self.pending == 0:
            self.since = self.clock()
        self.pending += n

    def due(self) -> bool:
        """True when the uncommitted results make a batch."""
        return self.pending > 0 and (self.pending >= self.options.every
                                     or self.clock() - self.since >= self.options.seconds)

    def reset(self) -> None:
        """Everything is committed."""
        self.pending = 0
