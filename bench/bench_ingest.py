"""``make bench-ingest``: streaming parallel ``ingest entries`` at MP scale against the bare
library calls on the same entries, and against the previous in-memory path.

Input: a synthetic MP dump (:mod:`synthetic_entries`, Matbench Discovery's layout, built from
the shared real entries) of ``--n`` entries, generated once into ``bench/.synthetic/``.

Rows (each a separate process, so peak RSS is its own; RSS of a process tree is sampled
every 0.2 s with psutil and summed over the tree):

- ``mliapdb ingest entries --jobs J`` into a new database: wall, CPU (user + sys of the tree),
  peak RSS (tree sum, and the largest single process);
- the same command again (a no-op re-ingest: the file is known by its sha256);
- the bare library cost of the same entries in one process: JSON decoding (the standard
  library's, entry by entry), ``ComputedStructureEntry.from_dict``, MP2020
  ``get_adjustments`` and ``moyopy.MoyoDataset`` (nothing stored);
- ``--old-n`` entries through the previous path (``load_entry_files`` + ``ingest_parsed``:
  the whole file in memory, one process), and the pipeline on the same entries.

    python bench/bench_ingest.py --data ../shared/data [--n 150000] [--jobs 2] [--old-n 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BARE = r"""
import logging, sys, time, warnings
from pathlib import Path
import moyopy
from moyopy.interface import MoyoAdapter
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry
from mliapdb.materials.entry_stream import iter_entry_dicts
logging.getLogger("moyo").setLevel(logging.ERROR)
compat = MaterialsProject2020Compatibility(check_potcar=False)
n = 0
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for raw in iter_entry_dicts(Path(sys.argv[1])):
        entry = ComputedStructureEntry.from_dict({**raw, "correction": 0.0})
        entry.energy_adjustments = []
        try:
            compat.get_adjustments(entry)
        except Exception:
            pass
        moyopy.MoyoDataset(MoyoAdapter.from_structure(entry.structure), symprec=0.1)
        n += 1
print(n)
"""

OLD = r"""
import sys
from pathlib import Path
from mliapdb.materials.entries import load_entry_files
from mliapdb.materials.ingest import ingest_parsed
from mliapdb.store import database as db
parsed = load_entry_files([Path(sys.argv[2])])
with db.opened(sys.argv[1], create=True) as con:
    print(ingest_parsed(con, parsed).n_new)
"""


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall s, CPU s of the tree, peak RSS (MB) summed over the tree and of the
    largest process."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    top = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
            rss = []
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    rss.append(p.memory_info().rss)
            peak_sum = max(peak_sum, sum(rss))
            peak_one = max(peak_one, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed:\n{err[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss_sum": peak_sum / 1e6,
            "rss_one": peak_one / 1e6, "out": out, "err": err}


def subset(path: Path, n: int, out: Path) -> None:
    """The first ``n`` entries of ``path`` as a JSON list (gzip)."""
    import gzip
    import json
    from itertools import islice

    from mliapdb.materials.entry_stream import iter_entry_dicts

    with gzip.open(out, "wt", compresslevel=1) as fh:
        fh.write("[")
        for i, raw in enumerate(islice(iter_entry_dicts(path), n)):
            fh.write(("," if i else "") + json.dumps(raw))
        fh.write("]")


def main(argv: list[str] | None = None) -> int:
    import synthetic_entries

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent / ".." / "shared" / "data")
    ap.add_argument("--n", type=int, default=150_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--old-n", type=int, default=10_000)
    ap.add_argument("--skip-bare", action="store_true")
    args = ap.parse_args(argv)

    src = HERE / ".synthetic" / f"mp-entries-{args.n}.json.gz"
    if not src.exists():
        t = time.perf_counter()
        synthetic_entries.main(["--out", str(src), "--n", str(args.n), "--data", str(args.data)])
        print(f"generated {src} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    rows = []
    with tempfile.TemporaryDirectory(dir=HERE / ".synthetic") as tmp:
        dbp = Path(tmp) / "db.duckdb"
        cli = [py, "-m", "mliapdb", "--db", str(dbp), "ingest", "entries", str(src),
               "--jobs", str(args.jobs)]
        print(f"uptime before: {os.getloadavg()}", file=sys.stderr)
        first = measured(cli, env)
        print(first["err"].splitlines()[-1], file=sys.stderr)
        rows.append((f"ingest entries --jobs {args.jobs} ({args.n} entries, new db)", first))
        rows.append(("same command again (no-op re-ingest)", measured(cli, env)))
        if not args.skip_bare:
            rows.append((f"bare library calls, 1 process ({args.n} entries)",
                         measured([py, "-c", BARE, str(src)], env)))
        if args.old_n:
            small = Path(tmp) / "subset.json.gz"
            subset(src, args.old_n, small)
            rows.append((f"previous path: in memory, 1 process ({args.old_n} entries)",
                         measured([py, "-c", OLD, str(Path(tmp) / "old.duckdb"), str(small)],
                                  env)))
            rows.append((f"ingest entries --jobs {args.jobs} ({args.old_n} entries)",
                         measured([py, "-m", "mliapdb", "--db", str(Path(tmp) / "new.duckdb"),
                                   "ingest", "entries", str(small), "--jobs", str(args.jobs)],
                                  env)))
        size = dbp.stat().st_size / 1e6
    print(f"load average after: {os.getloadavg()}; database {size:.0f} MB", file=sys.stderr)
    print("| run | wall s | CPU s | peak RSS, tree (MB) | peak RSS, largest process (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_sum']:.0f} | "
              f"{r['rss_one']:.0f} |")
    if not args.skip_bare:
        pipe, bare = rows[0][1], rows[2][1]
        print(f"\npipeline / bare library: CPU {pipe['cpu'] / bare['cpu']:.2f}x, wall "
              f"{pipe['wall'] / bare['wall']:.2f}x (bare in 1 process, pipeline in "
              f"{args.jobs} workers + 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
