"""Reading a database while a run writes it, with real processes: a real ``mliapdb ingest
relax`` (CHGNet 0.3.0 on small real MP structures, one commit per result) read in a loop by
``mliapdb sql``, ``mliapdb query`` and ``mliapdb.open()`` from this process; a reader that
meets a held write lock waits for it and then reads; a writer that meets readers waits for
them; the bounded wait ends in a one-line error; a last batch that cannot be committed is
kept and merged by the next run. No assert looks at a duration: each waiting process is
released by the test once it said it waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli

pytestmark = pytest.mark.slow
MODEL = "chgnet-0.3.0"
N_RELAX = 6  # the smallest Mn-O compounds, two FIRE steps each


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def db_path(tmp_path_factory, mp_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("readwrite") / "db.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    assert result.exit_code == 0, result.output
    return path


class Holder:
    """Another process holding the database (read-write, or read-only) until released."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        how = (f"c = duckdb.connect(); c.execute(\"ATTACH '{path}' AS d (READ_ONLY)\")"
               if read_only else f"c = duckdb.connect({str(path)!r})")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import duckdb, sys; {how}; print('held', flush=True); "
             "sys.stdin.readline(); c.close(); print('released', flush=True)"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "held\n"
        self.pid = self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline() == "released\n"
            self.proc.wait()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def test_reader_waits_for_a_commit_in_progress_then_reads(db_path: Path) -> None:
    """`mliapdb sql` in a process of its own meets the write lock, says so, and reads once it
    is released."""
    with Holder(db_path) as holder:
        reader = subprocess.Popen(
            [sys.executable, "-m", "mliapdb", "--db", str(db_path), "sql",
             "SELECT count(*) AS n FROM materials"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            waiting = reader.stderr.readline()
            holder.release()
            out, err = reader.communicate(timeout=120)
        finally:
            reader.kill()
    assert waiting == (f"waiting for {db_path} (to read): another process (PID {holder.pid}) "
                       "is writing it (a commit in progress) - retrying for up to 60 s\n")
    assert reader.returncode == 0 and err == ""
    assert out.splitlines() == [" n", "--", "90"]


def test_python_api_waits_and_holds_the_file_only_per_call(db_path: Path) -> None:
    """mliapdb.open() waits for a held write lock; between calls it holds nothing, so another
    process can take the file read-write."""
    import mliapdb
    from mliapdb.store.database import LockWait, waiting_for_locks

    said: list[str] = []
    with Holder(db_path) as holder:
        def released(line: str) -> None:
            said.append(line)
            holder.release()

        with waiting_for_locks(LockWait(on_wait=released)):
            db = mliapdb.open(db_path)
    with db:
        assert said == [f"waiting for {db_path} (to read): another process (PID {holder.pid}) "
                        "is writing it (a commit in progress) - retrying for up to 60 s"]
        assert int(db.sql("SELECT count(*) AS n FROM materials").loc[0, "n"]) == 90
        with Holder(db_path) as writer:  # the open Database does not block a writer
            writer.release()
        assert len(db.materials(chemsys="Mn-O")) == 90


def test_writer_waits_for_readers(db_path: Path) -> None:
    """A commit's read-write open meets a reader's shared lock and waits for it."""
    from mliapdb.store.database import Holder as DbHolder
    from mliapdb.store.database import LockWait, waiting_for_locks

    said: list[str] = []
    with Holder(db_path, read_only=True) as reader:
        def released(line: str) -> None:
            said.append(line)
            reader.release()

        with waiting_for_locks(LockWait(on_wait=released)), DbHolder(db_path).held() as con:
            n = con.execute("SELECT count(*) FROM materials").fetchone()[0]
    assert n == 90
    assert said == [f"waiting for {db_path} (to write): another process (PID {reader.pid}) "
                    "is reading it - retrying for up to 60 s"]


def test_bounded_wait_ends_in_a_one_line_error(db_path: Path, monkeypatch) -> None:
    import mliapdb
    from mliapdb.errors import MliapdbError

    with Holder(db_path) as holder:
        result = run("--db", db_path, "--lock-timeout", "0.2", "sql", "SELECT 1")
        monkeypatch.setenv("MLIAPDB_LOCK_TIMEOUT", "0")
        with pytest.raises(MliapdbError) as refused:
            mliapdb.open(db_path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"waiting for {db_path} (to read): another process (PID {holder.pid}) is writing it "
        "(a commit in progress) - retrying for up to 0.2 s",
        f"Error: {db_path} is in use by another process (PID {holder.pid}) (a running "
        "'mliapdb ingest'?), still after 0.2 s - wait for it to finish and run again, wait "
        "longer with --lock-timeout SECONDS (or $MLIAPDB_LOCK_TIMEOUT), or query a copy of "
        "the file",
    ]
    assert str(refused.value).startswith(f"{db_path} is in use by another process (PID "
                                         f"{holder.pid})")
    monkeypatch.setenv("MLIAPDB_LOCK_TIMEOUT", "soon")
    with Holder(db_path), pytest.raises(MliapdbError, match="is not a number of seconds"):
        mliapdb.open(db_path)


def _count(line: str) -> int:
    return int(line.split()[-1])


def test_reads_succeed_while_ingest_relax_runs(db_path: Path, tmp_path: Path) -> None:
    """Two real processes: `mliapdb ingest relax` commits each result in a short hold while
    this process reads in a loop through the CLI and the Python API; every read succeeds,
    counts never go down, and reads see the run part-way (not only before and after)."""
    import shutil

    import mliapdb

    path = tmp_path / "run.duckdb"
    shutil.copy(db_path, path)
    writer = subprocess.Popen(
        [sys.executable, "-m", "mliapdb", "--db", str(path), "ingest", "relax", "--model",
         MODEL, "--chemsys", "Mn-O", "--min-nelements", "2", "--limit", str(N_RELAX),
         "--fmax", "0.001", "--max-steps", "2", "--commit-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[str, int, bool]] = []  # (reader, calculations, writer still running)
    sql = "SELECT count(*) AS n FROM calculations"
    try:
        while True:
            running = writer.poll() is None
            result = run("--db", path, "sql", sql)
            assert result.exit_code == 0, result.output
            seen.append(("sql", _count(result.stdout.splitlines()[-1]), running))
            result = run("--db", path, "query", "calculations", "--format", "csv")
            assert result.exit_code == 0, result.output
            rows = result.stdout.splitlines()[1:]
            n_column = result.stdout.splitlines()[0].split(",").index("n")
            seen.append(("query", sum(int(r.split(",")[n_column]) for r in rows), running))
            with mliapdb.open(path) as db:
                seen.append(("api", int(db.sql(sql).loc[0, "n"]), running))
            if not running:
                break
            time.sleep(0.1)  # pacing only: leave the writer gaps to commit in
        out, err = writer.communicate(timeout=120)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0, err
    counts = [n for _, n, _ in seen]
    assert counts == sorted(counts), seen  # never down, across readers
    assert counts[-1] == N_RELAX
    during = {n for _, n, running in seen if running}
    assert any(0 < n < N_RELAX for n in during), seen
    assert "Error" not in err and "waiting for" not in err.replace(
        f"waiting for {path} (to write)", "")  # the writer may wait for a reader, no more
    assert out.splitlines()[2].split()[2:4] == [str(N_RELAX), "0"]  # selected, already done


def test_last_batch_a_lock_keeps_out_is_merged_by_the_next_run(db_path: Path,
                                                               tmp_path: Path) -> None:
    """The end-of-run commit meets the file held past the lock timeout: the results go to a
    Parquet part beside the database, the error says so, and the next run merges them
    instead of computing them again."""
    import shutil

    from mliapdb.compute.calculations import RunOptions, select_targets
    from mliapdb.compute.cluster import run_dir
    from mliapdb.compute.run import run_calculations
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as db

    path = tmp_path / "spill.duckdb"
    shutil.copy(db_path, path)
    with db.opened(path) as con:
        targets = select_targets(con, chemsys="Mn-O", min_nelements=2, limit=2)
    holders: list[Holder] = []

    def lock_at_the_end(items, total, description):
        yield from items
        holders.append(Holder(path))  # taken after the last result, before the commit

    options = RunOptions(kind="single-point")
    try:
        quiet = db.LockWait(timeout_s=0.1, on_wait=lambda line: None)
        with db.waiting_for_locks(quiet), pytest.raises(MliapdbError) as refused:
            run_calculations(path, MODEL, targets, options, progress=lock_at_the_end)
    finally:
        for holder in holders:
            holder.__exit__()
    (part,) = run_dir(path, MODEL, "x").parent.glob("*/*.parquet")
    assert str(refused.value).endswith(
        f"the results not committed are kept in {part}, and the next 'mliapdb ingest relax "
        f"--model {MODEL}' with these settings merges them")
    report = run_calculations(path, MODEL, targets, options)
    assert (report.n_leftover_parts, report.n_skipped, report.status_counts) == (1, 2, {})
    assert not part.exists()
    with db.opened(path, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT material_id) FROM calculations"
                           ).fetchone() == (2, 2)
