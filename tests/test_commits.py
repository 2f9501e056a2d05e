"""When a long run commits (:mod:`mliapdb.compute.commits`): every N results or T seconds after
the first uncommitted one, whichever first, on a clock the test sets."""

from __future__ import annotations

import pytest

from mliapdb.compute.commits import EACH_RESULT, CommitClock, CommitOptions, commit_options
from mliapdb.errors import MliapdbError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_due_after_n_results_or_t_seconds_whichever_first() -> None:
    clock = Clock()
    batch = CommitClock(CommitOptions(every=3, seconds=10.0), clock)
    assert not batch.due()  # nothing to commit
    batch.add()
    clock.now += 9.9
    batch.add()
    assert not batch.due()  # 2 results, 9.9 s after the first
    batch.add()
    assert batch.due()  # 3 results
    batch.reset()
    clock.now += 60.0  # time without results makes no batch
    assert not batch.due()
    batch.add()
    clock.now += 9.9
    assert not batch.due()
    clock.now += 0.1
    assert batch.due()  # 1 result, 10 s old
    batch.reset()
    batch.add(5)  # a Parquet part of five results
    assert batch.due()


def test_defaults_and_refusals() -> None:
    assert commit_options(None, short_holds=True) == CommitOptions(every=100, seconds=10.0)
    assert commit_options(None, short_holds=False) == EACH_RESULT
    given = CommitOptions(every=7, seconds=2.5)
    assert commit_options(given, short_holds=False) is given
    with pytest.raises(MliapdbError, match="--commit-every must be 1 or more results, got 0"):
        CommitOptions(every=0)
    with pytest.raises(MliapdbError, match=r"--commit-seconds must be above 0 s, got nan"):
        CommitOptions(seconds=float("nan"))
