"""Memory and time of ``mliapdb ingest mp --all`` (page by page, each page stored at once)
against the obvious alternative, mp-api's own whole search (``thermo.search`` of every
GGA_GGA+U document: all documents in memory, then one ingest), on the same synthetic
documents served by a real HTTP server on 127.0.0.1 in MP's response format (the test
suite's ``WholeMP``: the shared real small-cell entries with ids renamed). Each run is a
fresh process into a new database; wall time, CPU time (user + system) and peak RSS of that
process are measured.

    make bench-mp-all          # python bench/bench_mp_all.py --data ../shared/data --n 5000 20000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY = "0123456789abcdef0123456789abcdef"

WHOLE_SEARCH = """
import sys, warnings
from mliapdb.materials.entries import load_entries
from mliapdb.materials.ingest import ingest_parsed
from mliapdb.materials.mp_api import _AnswerGuard, _open, ApiBounds, entries_sha256, pick_entry
from mliapdb.store import database as db
warnings.simplefilter("ignore")
endpoint, path = sys.argv[1], sys.argv[2]
guard = _AnswerGuard(ApiBounds(max_docs=10**6))
mpr = _open(sys.argv[3], endpoint, 5, 0.5, [], guard)
docs = mpr.materials.thermo.search(thermo_types=["GGA_GGA+U"], all_fields=False,
                                   fields=["material_id", "entries"])
entries = [e for e in (pick_entry(d)[0] for d in docs) if e is not None]
parsed = load_entries([("mp-api:all", entries_sha256(entries), entries)])
with db.opened(path, create=True) as con:
    ingest_parsed(con, parsed, "mp")
"""


def _measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall s, CPU s (user + system) and peak RSS (MiB) of one child process."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} failed:\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 20000],
                        help="documents served, one pair of runs each")
    args = parser.parse_args()
    os.environ["MLIAPDB_DATA"] = str(args.data.resolve())
    sys.path.insert(0, str(REPO / "tests"))
    from test_ingest_mp import serve
    from test_ingest_mp_all import WholeMP, small_entries

    templates = small_entries(args.data / "mp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MP_API_KEY": KEY,
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="mliapdb-bench-mp-all-") as tmp:
        for n in args.n:
            fake = WholeMP(templates, n, r2scan_every=5000)
            with serve(fake) as endpoint:
                paged = _measure(
                    [sys.executable, "-m", "mliapdb", "--db", f"{tmp}/paged-{n}.duckdb",
                     "ingest", "mp", "--all", "--endpoint", endpoint], env)
                whole = _measure([sys.executable, "-c", WHOLE_SEARCH, endpoint,
                                  f"{tmp}/whole-{n}.duckdb", KEY], env)
            rows.append((n, paged, whole))
    print(f"{'documents':>9} | {'method':<28} | {'wall s':>7} | {'CPU s':>7} | "
          f"{'peak RSS MiB':>12}")
    print("-" * 76)
    for n, paged, whole in rows:
        for name, (wall, cpu, rss) in (("ingest mp --all (pages)", paged),
                                       ("mp-api search, one ingest", whole)):
            print(f"{n:>9} | {name:<28} | {wall:>7.1f} | {cpu:>7.1f} | {rss:>12.0f}")


if __name__ == "__main__":
    main()
