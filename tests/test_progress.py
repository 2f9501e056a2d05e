"""Progress of long loops when stderr is not a terminal: i/N, percentage, rate and time left,
about 20 lines per loop, none for a loop done within QUIET_S seconds (a clock given to the
loop stands in for time)."""

from __future__ import annotations

from mliapdb.cli.progress import LOG_EVERY_S, QUIET_S, progress_line, progress_log


class Clock:
    """Each call advances by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_a_long_loop_logs_about_twenty_lines_with_rate_and_time_left():
    lines: list[str] = []
    items = list(progress_log(range(200), 200, "symmetry", lines.append, Clock(0.5)))
    assert items == list(range(200))
    assert 15 <= len(lines) <= 21
    assert lines[0] == "symmetry: 10/200 (5 %), 2/s, 1:35 left"
    assert lines[-1] == "symmetry: 200/200 (100 %), 2/s, done in 1:40"


def test_a_quick_loop_says_nothing():
    lines: list[str] = []
    assert list(progress_log("abc", 3, "x", lines.append, Clock(QUIET_S / 10))) == list("abc")
    assert lines == []


def test_a_slow_loop_writes_at_least_every_minute():
    lines: list[str] = []
    list(progress_log(range(1000), 1000, "relax", lines.append, Clock(LOG_EVERY_S / 2)))
    # one line per 50 items would be 20 lines; every other item is a minute apart
    assert len(lines) >= 499


def test_line_format():
    assert progress_line("relax", 40, 132, 3.2) == "relax: 40/132 (30 %), 12.5/s, 0:07 left"
    assert progress_line("relax", 0, 10, 0.0) == "relax: 0/10 (0 %), -/s, time left unknown"
    assert progress_line("big", 1, 10_000, 3.0) == "big: 1/10000 (0 %), 0.333/s, 8:19:57 left"
