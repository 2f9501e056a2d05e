"""Derived tables and freshness at MP scale: incremental refresh and generation markers
against full rebuilds and hash checks, on the 150k materials x 9 models synthetic database
(``bench/synthetic_db.py``, built once into ``bench/.synthetic/``).

Measured, each against the obvious alternative in the same run:

1. adding 100 entries (clones of random stored materials, new ids, other energies), written as
   ``ingest_parsed`` writes them (rows, DFT hull update and marker in one transaction), then
   every derived table brought up to date: incremental refresh vs a full rebuild of the DFT
   hull and of every model hull and error-row build;
2. 1,000 results of one model (replacing stored relaxations, one transaction, marker bumped),
   then the refresh: incremental vs rebuilding that model's hull and error rows whole;
3. the latency of every ``mliapdb query`` aggregate: with the generation check (now) vs the
   same query preceded by the hash fingerprint check the views ran before (``stg_*_inputs``);
4. the bytes a remote ``query ehull-mae --by dof`` reads from the database served by a local
   HTTP server (Range requests), with and without the hash check.

    make bench-scale     # python bench/bench_scale.py --db bench/.synthetic/mliapdb-150k.duckdb
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _add_entries(con, n: int, rng: random.Random) -> list[str]:
    """Write ``n`` new materials (clones of random stored ones, 20-80 meV/atom higher) as
    ``ingest_parsed`` writes them: rows, DFT hull update, marker, one transaction."""
    from mliapdb.materials.dft_hull import update_dft_hull
    from mliapdb.store.database import transaction
    from mliapdb.store.generations import Scope, bump

    ids = [r[0] for r in con.execute("SELECT material_id FROM mp_materials WHERE dataset = 'mp' "
                                     "ORDER BY material_id").fetchall()]
    picked = rng.sample(ids, n)
    shift = {m: rng.uniform(0.02, 0.08) for m in picked}
    with transaction(con):
        con.execute("CREATE TEMP TABLE picked (material_id VARCHAR, new_id VARCHAR, "
                    "shift DOUBLE)")
        con.executemany("INSERT INTO picked VALUES (?, ?, ?)",
                        [[m, f"new-{i}", shift[m]] for i, m in enumerate(picked)])
        con.execute("INSERT INTO mp_materials SELECT m.* REPLACE (p.new_id AS material_id) "
                    "FROM mp_materials m JOIN picked p USING (material_id) "
                    "WHERE m.dataset = 'mp'")
        con.execute("INSERT INTO dft_entries SELECT e.* REPLACE (p.new_id AS material_id, "
                    "p.new_id AS entry_id, e.energy_raw + p.shift * e.n_atoms AS energy_raw, "
                    "e.energy_corrected + p.shift * e.n_atoms AS energy_corrected) "
                    "FROM dft_entries e JOIN picked p USING (material_id) WHERE e.dataset = 'mp'")
        con.execute("INSERT INTO symmetry_analyses SELECT s.* REPLACE (p.new_id AS material_id) "
                    "FROM symmetry_analyses s JOIN picked p USING (material_id) "
                    "WHERE s.dataset = 'mp'")
        systems = {r[0] for r in con.execute(
            "SELECT chemsys FROM mp_materials JOIN picked USING (material_id)").fetchall()}
        bump(con, Scope("mp"), systems)
        update_dft_hull(con, "mp", systems)
        con.execute("DROP TABLE picked")
    return sorted(systems)


def _add_results(con, n: int, rng: random.Random) -> tuple[str, list[str]]:
    """Replace ``n`` stored relaxations of the first model (energies 10 meV/atom lower) in one
    transaction, as a merged cluster part is written (delete, insert, marker)."""
    from mliapdb.store.database import transaction
    from mliapdb.store.generations import bump_calculations

    model = con.execute("SELECT min(model) FROM calculations WHERE calc_kind = 'relax'"
                        ).fetchone()[0]
    ids = [r[0] for r in con.execute(
        "SELECT material_id FROM calculations WHERE model = ? AND calc_kind = 'relax' "
        "AND status = 'ok' ORDER BY 1", [model]).fetchall()]
    picked = rng.sample(ids, n)
    with transaction(con):
        con.execute("CREATE TEMP TABLE picked (material_id VARCHAR)")
        con.executemany("INSERT INTO picked VALUES (?)", [[m] for m in picked])
        part = con.sql(
            "SELECT * REPLACE (energy_relaxed - 0.01 * n_atoms AS energy_relaxed) "
            "FROM calculations WHERE model = $model AND calc_kind = 'relax' "
            "AND material_id IN (SELECT material_id FROM picked)",
            params={"model": model}).to_arrow_table()
        con.execute("DELETE FROM calculations WHERE model = ? AND calc_kind = 'relax' AND "
                    "material_id IN (SELECT material_id FROM picked)", [model])
        con.execute("INSERT INTO calculations SELECT * FROM part")
        bump_calculations(con, part)
        systems = [r[0] for r in con.execute(
            "SELECT DISTINCT chemsys FROM mp_materials JOIN picked USING (material_id)"
        ).fetchall()]
        con.execute("DROP TABLE picked")
    return model, systems


def _forget_builds(con, model: str | None) -> None:
    """Make the builds (of ``model``, or all) unknown: the next refresh rebuilds them whole."""
    where = "" if model is None else f" WHERE model = '{model}'"
    con.execute(f"UPDATE model_hull_builds SET calc_generation = NULL{where}")
    con.execute(f"UPDATE ehull_error_builds SET calc_generation = NULL{where}")


def _refresh(con) -> tuple[int, int, int]:
    """Refresh; (builds made, of which partial, materials recomputed in partial ones)."""
    from mliapdb.analysis.derived import refresh_derived

    out = refresh_derived(con)
    built = out.hulls + out.rows
    partial = [b.n_rebuilt for b in built if b.n_rebuilt is not None]
    return len(built), len(partial), sum(partial)


def _reach(con, systems: list[str]) -> float:
    from mliapdb.materials.chemsys import reach

    chemsys_of = dict(con.execute(
        "SELECT material_id, chemsys FROM mp_materials WHERE dataset = 'mp'").fetchall())
    return len(reach(chemsys_of, systems).affected) / len(chemsys_of)


def bench_writes(db: Path, work: Path, rng: random.Random) -> list[tuple]:
    """Cases 1 and 2, each on a fresh copy of ``db``: incremental, then the full rebuild."""
    from mliapdb.materials.dft_hull import rebuild_dft_hull
    from mliapdb.store import database as dbm
    from mliapdb.store.database import transaction

    rows = []
    for case in ("100 entries", "1,000 results of one model"):
        times = {}
        case_seed = rng.random()  # the same change for both modes
        for mode in ("incremental", "full rebuild"):
            copy = work / "writes.duckdb"
            shutil.copy(db, copy)
            con = dbm.connect(copy)
            seed = random.Random(case_seed)
            start = time.perf_counter()
            if case == "100 entries":
                systems = _add_entries(con, 100, seed)
                reached = _reach(con, systems)
                if mode == "full rebuild":
                    with transaction(con):
                        rebuild_dft_hull(con, "mp")
                        _forget_builds(con, None)
            else:
                model, systems = _add_results(con, 1000, seed)
                reached = _reach(con, systems)
                if mode == "full rebuild":
                    with transaction(con):
                        _forget_builds(con, model)
            write = time.perf_counter() - start
            built, partial, n_materials = _refresh(con)
            total = time.perf_counter() - start
            stale = con.execute("SELECT count(*) FROM stg_error_row_status WHERE NOT fresh"
                                ).fetchone()[0]
            assert stale == 0
            con.close()
            copy.unlink()
            times[mode] = total
            rows.append((case, mode, f"{write:.2f}", f"{total - write:.2f}", f"{total:.2f}",
                         f"{built} ({partial} partial, {n_materials} materials)",
                         f"{100 * reached:.1f} %"))
            print("  ", *rows[-1], flush=True)
        ratio = times["full rebuild"] / times["incremental"]
        rows.append((case, "speed-up", "", "", f"{ratio:.1f}x", "", ""))
    return rows


HASH_CHECK = ("SELECT count(*) FROM stg_error_row_inputs i LEFT JOIN ehull_error_builds b "
              "USING (dataset, model, settings_hash, calc_kind) "
              "WHERE b.fingerprint IS DISTINCT FROM i.fingerprint")
"""What the views computed before the generation markers, on every query: the fingerprint of
every error-row build's inputs (which includes the model hulls')."""


def bench_queries(db: Path, repeat: int) -> list[tuple]:
    """Case 3: every query aggregate, median of ``repeat`` runs after a warm-up."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_stats import cli_queries

    from mliapdb.analysis.model_hull import REFS  # noqa: F401  (the conventions exist)
    from mliapdb.store import database as dbm

    con = dbm.connect(db, read_only=True)
    conventions = ["dft-hull", "model-hull", "model-hull-dft-refs"]
    out = []
    for label, fn in cli_queries(con, conventions, 0.05):
        fn()
        new = [_timed(fn) for _ in range(repeat)]
        old = [_timed(lambda fn=fn: (con.execute(HASH_CHECK).fetchall(), fn()))
               for _ in range(repeat)]
        out.append((label, f"{1000 * statistics.median(new):.0f}",
                    f"{1000 * statistics.median(old):.0f}"))
    con.close()
    return out


class _CountingHandler(BaseHTTPRequestHandler):
    """GET with Range on one file; counts the bytes sent."""

    def do_GET(self) -> None:  # noqa: N802
        path = self.server.file  # type: ignore[attr-defined]
        size = path.stat().st_size
        byte_range = self.headers.get("Range")
        start, end = 0, size - 1
        if byte_range:
            a, _, b = byte_range.removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b) if b else size - 1, size - 1)
        self.send_response(206 if byte_range else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left:
                chunk = fh.read(min(left, 1 << 20))
                self.wfile.write(chunk)
                self.server.sent += len(chunk)  # type: ignore[attr-defined]
                left -= len(chunk)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        size = self.server.file.stat().st_size  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def bench_remote(db: Path) -> list[tuple]:
    """Case 4: bytes a remote ``ehull-mae --by dof`` reads, each in a fresh process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.file, server.sent = db, 0  # type: ignore[attr-defined]
    server.handle_error = lambda *_: None  # a client closing a range early is no error
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{db.name}"
    code = ("import sys, time; from mliapdb.store import database as db; "
            "from mliapdb.analysis import queries; t = time.perf_counter(); "
            "c = db.connect(sys.argv[1], read_only=True); "
            "c.execute(sys.argv[2]).fetchall() if sys.argv[2] else None; "
            "r = queries.ehull_mae(c, by='dof'); "
            "print('RESULT', len(r.rows), time.perf_counter() - t)")
    out = []
    for label, extra in (("generation check (now)", ""), ("hash check (before)", HASH_CHECK)):
        server.sent = 0  # type: ignore[attr-defined]
        done = subprocess.run([sys.executable, "-c", code, url, extra], check=True,
                              capture_output=True, text=True, env=os.environ)
        got = [w for line in done.stdout.splitlines() if "RESULT " in line
               for w in line.split("RESULT ")[-1].split()]
        if not got:
            raise SystemExit(f"remote query printed no result: {done.stderr[-2000:]}")
        out.append((label, f"{server.sent / 2**20:.1f}", got[0],  # type: ignore[attr-defined]
                    f"{float(got[1]):.1f}"))
    server.shutdown()
    return out


def _table(head: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("bench/.synthetic/mliapdb-150k.duckdb"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["writes", "queries", "remote"])
    args = parser.parse_args(argv)
    if not args.db.exists():
        print(f"no database at {args.db} - build it with 'make {args.db}'", file=sys.stderr)
        return 2
    from mliapdb.store import database as dbm

    dbm.connect(args.db).close()  # migrated once (builds of older code adopted by hash)
    print(f"database {args.db} ({args.db.stat().st_size / 2**30:.2f} GiB); "
          f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{os.cpu_count()} cores")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mliapdb-bench-scale-", dir=args.db.parent))
    try:
        if "writes" not in args.skip:
            print("\nWrite, then every derived table up to date (seconds)")
            print(_table(("change", "refresh", "write", "refresh", "total", "builds",
                          "materials reached"), bench_writes(args.db, work, rng)))
        if "queries" not in args.skip:
            print(f"\nQuery latency, ms (median of {args.repeat}, warm)")
            print(_table(("query", "generation check", "hash check + query"),
                         bench_queries(args.db, args.repeat)))
        if "remote" not in args.skip:
            print("\nRemote 'query ehull-mae --by dof' over HTTP (local server, Range requests)")
            print(_table(("freshness", "MiB read", "rows", "seconds"), bench_remote(args.db)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
