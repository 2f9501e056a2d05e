"""What the file checks cost: opening a database read-only with ``mliapdb.store.database.connect``
(header,
catalog and view-definition checks; an overlay where the file's views differ) against a plain
``duckdb.connect(path, read_only=True)``, on a real database built from the shared MP
entries. Each open is followed by one ``count(*)`` of the ``materials`` view.

    make bench-open            # python bench/bench_open.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPEATS = 15


def _median_ms(open_fn, path: Path) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        con = open_fn(path)
        con.execute("SELECT count(*) FROM materials").fetchall()
        con.close()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _cold_cli_ms(path: Path) -> float:
    """One whole process: import mliapdb, build the reference catalog, open, count."""
    code = ("import sys, mliapdb.store.database as db; "
            "c = db.connect(sys.argv[1], read_only=True); "
            "c.execute('SELECT count(*) FROM materials').fetchall()")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    from mliapdb.materials.ingest import ingest_entry_files
    from mliapdb.store import database as db
    from mliapdb.store.file import reference_catalog

    folder = Path(tempfile.mkdtemp(prefix="mliapdb-bench-open-"))
    try:
        path = folder / "mno.duckdb"
        con = db.connect(path, create=True)
        ingest_entry_files(con, [args.data / "mp" / "Mn_O_Y_entries.json.gz"])
        con.close()
        stale = folder / "stale.duckdb"
        shutil.copyfile(path, stale)
        with duckdb.connect(str(stale)) as con:  # another definition: the overlay path
            con.execute("CREATE OR REPLACE VIEW dft_stability AS SELECT 1 AS x")

        start = time.perf_counter()
        reference_catalog.cache_clear()
        reference_catalog()
        reference_ms = 1000 * (time.perf_counter() - start)
        rows = [
            ("plain duckdb.connect(read_only=True)",
             _median_ms(lambda p: duckdb.connect(str(p), read_only=True), path)),
            ("db.connect(read_only=True), views current",
             _median_ms(lambda p: db.connect(p, read_only=True), path)),
            ("db.connect(read_only=True), views differ (overlay)",
             _median_ms(lambda p: db.connect(p, read_only=True), stale)),
            ("reference catalog, once per process", reference_ms),
            ("whole process: python -c 'db.connect(...)' (cold)", _cold_cli_ms(path)),
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Mn-O-Y (132 entries), median of {REPEATS} opens + count(*); load {load}")
    print("| open | ms |")
    print("|---|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} |")


if __name__ == "__main__":
    main()
