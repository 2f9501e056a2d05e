"""Streaming, parallel ingest of entry files in bounded memory.

Each file is hashed first: a file already ingested into the dataset (its sha256 in
``source_files``) is skipped before parsing. The others are read entry by entry
(:mod:`mliapdb.materials.entry_stream`), in chunks that worker processes validate, correct
(MP2020) and analyse (symmetry) into columnar rows (Arrow tables, no object per row). Each
chunk is committed to a staging file beside the database (``<db>.ingest.duckdb``) as it
comes back: an interrupted ingest, rerun, resumes after the last committed chunk, without
loss or duplicates. When every file is staged, one transaction checks conflicts, publishes
the new rows into the database, records the files and rebuilds the dataset's DFT hull; the
staging file is then removed. A bad file or entry raises a one-line ``MliapdbError``, and the
database is left as it was (and the staged chunks of that file are dropped).

Structures are stored as read (the file's own structure dict, not a pymatgen round trip).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mliapdb.config import DEFAULT_SYMPREC
from mliapdb.errors import MliapdbError
from mliapdb.materials.ingest import IngestReport
from mliapdb.progress import Progress, no_progress

STAGE_SUFFIX = ".ingest.duckdb"
"""Suffix of the staging file beside a database (``mliapdb.duckdb.ingest.duckdb``)."""

DUCKDB_MEMORY = "512MB"
"""DuckDB's memory limit on the staging and the publishing connections: their buffer pools
would otherwise grow with the input (to 80 % of the machine by default); DuckDB spills to
disk beyond it."""

STAGED = ("mp_materials", "dft_entries", "symmetry_analyses", "wyckoff_orbits")
"""Tables whose rows a chunk stages (as ``stage_<table>``, plus ``_sha``, ``_idx``)."""


@dataclass(frozen=True)
class StreamOptions:
    """How ``ingest entries`` reads and analyses: dataset, symmetry tolerances (Angstrom) and
    library, worker processes (0: one per core) and entries per chunk."""

    dataset: str = "mp"
    symprecs: tuple[float, ...] = (DEFAULT_SYMPREC,)
    method: str = "moyopy"
    jobs: int = 0
    chunk_size: int = 1000

    def workers(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    def key(self) -> str:
        """What staged rows depend on besides the file (a resume needs the same)."""
        return json.dumps([self.dataset, list(self.symprecs), self.method, self.chunk_size])


@dataclass
class StreamReport(IngestReport):
    """What a streaming ingest did: :class:`IngestReport`'s counts, plus files (read or
    skipped as already ingested, by sha256) and chunks taken from an interrupted run."""

    n_files: int = 0
    n_skipped_files: int = 0
    n_resumed_chunks: int = 0


@dataclass(frozen=True)
class ChunkTask:
    """Entries ``start .. start + len(raws) - 1`` of one source."""

    source: str
    sha: str
    start: int
    raws: list
    dataset: str
    symprecs: tuple[float, ...]
    method: str


# ---------------------------------------------------------------------------------------
# Worker side: one chunk of raw entry dicts -> Arrow tables of rows


def _warm() -> None:
    """Worker initialiser: import what every chunk needs once."""
    import moyopy  # noqa: F401
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility  # noqa: F401

    from mliapdb.materials import symmetry  # noqa: F401


_FACTS: dict[tuple, tuple[Any, dict]] = {}
"""Composition -> (pymatgen Composition, its mp_materials columns), per worker process."""


def composition_facts(structure: Any) -> tuple[Any, dict]:
    """The structure's Composition and its ``mp_materials`` columns (formula, formula_full,
    chemsys, nelements, composition JSON), computed once per composition in a process
    (polymorphs share them)."""
    from collections import Counter

    key = tuple(sorted(Counter(map(str, structure.species)).items()))
    hit = _FACTS.get(key)
    if hit is None:
        comp = structure.composition
        hit = comp, {"formula": comp.reduced_formula,
                     "formula_full": comp.formula.replace(" ", ""),
                     "chemsys": comp.chemical_system, "nelements": len(comp.elements),
                     "composition": json.dumps(comp.get_el_amt_dict(), sort_keys=True)}
        if len(_FACTS) > 200_000:
            _FACTS.clear()
        _FACTS[key] = hit
    return hit


def chunk_rows(task: ChunkTask) -> dict[str, Any] | str:
    """The staged rows of one chunk (table -> Arrow table), or the one-line error of its
    first bad entry."""
    try:
        return _chunk_rows(task)
    except MliapdbError as exc:
        return str(exc)


def _chunk_rows(task: ChunkTask) -> dict[str, Any]:
    import pyarrow as pa

    from mliapdb.materials.entries import apply_mp2020, parse_entry
    from mliapdb.materials.symmetry import analyze_symmetry
    from mliapdb.store.arrow import arrow_schema

    parsed = [parse_entry(raw, task.start + i, task.source, task.sha)
              for i, raw in enumerate(task.raws)]
    apply_mp2020(parsed)
    cols: dict[str, dict[str, list]] = {t: {} for t in STAGED}

    def add(table: str, **values: Any) -> None:
        for name, value in values.items():
            cols[table].setdefault(name, []).append(value)

    for raw, p in zip(task.raws, parsed, strict=True):
        s = p.entry.structure
        comp, facts = composition_facts(s)
        key = {"dataset": task.dataset, "material_id": p.material_id}
        add("mp_materials", **key, **facts, nsites=len(s),
            structure=json.dumps(raw["structure"]), fingerprint=p.fingerprint,
            _sha=task.sha, _idx=p.index)
        params = p.entry.parameters or {}
        potcar = params.get("potcar_spec") or params.get("potcar_symbols")
        corrected = (p.energy_raw + p.correction_mp2020
                     if p.correction_mp2020 is not None else None)
        add("dft_entries", **key, entry_id=p.entry_id, task_id=p.task_id, n_atoms=len(s),
            energy_raw=p.energy_raw, correction_mp2020=p.correction_mp2020,
            energy_corrected=corrected, correction_in_source=p.correction_in_source,
            compat_status=p.compat_status, compat_message=p.compat_message,
            run_type=params.get("run_type"), is_hubbard=params.get("is_hubbard"),
            hubbards=json.dumps(params.get("hubbards") or {}, sort_keys=True),
            potcar_spec=json.dumps(potcar) if potcar is not None else None,
            oxide_type=(p.entry.data or {}).get("oxide_type"),
            mp_last_updated=p.mp_last_updated, source_file=p.source_file,
            source_sha256=p.source_sha256, _sha=task.sha, _idx=p.index)
        for sp in task.symprecs:
            try:
                sym = analyze_symmetry(s, symprec=sp, method=task.method, composition=comp)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # also a Rust panic of moyopy (PanicException)
                raise MliapdbError(
                    f"{task.dataset}/{p.material_id}: symmetry analysis failed at symprec "
                    f"{sp} ({exc}) - try another --symprec") from exc
            skey = {**key, "symprec": sp, "method": task.method}
            add("symmetry_analyses", **skey, angle_tolerance=sym.angle_tolerance,
                library_version=sym.library_version, spacegroup_number=sym.spacegroup_number,
                spacegroup_symbol=sym.spacegroup_symbol, crystal_system=sym.crystal_system,
                pearson_symbol=sym.pearson_symbol,
                protostructure_label=sym.protostructure_label, lattice_dof=sym.lattice_dof,
                wyckoff_dof=sym.wyckoff_dof, dof=sym.dof, _sha=task.sha, _idx=p.index)
            for o in sym.orbits:
                add("wyckoff_orbits", **skey, orbit_index=o.orbit_index, element=o.element,
                    wyckoff_letter=o.wyckoff_letter, multiplicity=o.multiplicity,
                    site_symmetry=o.site_symmetry, n_free=o.n_free, _sha=task.sha,
                    _idx=p.index)
    return {t: pa.Table.from_pydict(c, schema=arrow_schema(t, staged=True))
            for t, c in cols.items() if c}


# ---------------------------------------------------------------------------------------
# Main side: hash, skip, stream, stage, publish


def staging_path(db_path: str | Path) -> Path:
    """The staging file of the database at ``db_path``."""
    return Path(f"{db_path}{STAGE_SUFFIX}")


class _Stage:
    """The staging file: staged chunks of each (file sha256, dataset)."""

    def __init__(self, path: Path) -> None:
        import duckdb

        self.path = path
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise MliapdbError(
                f"{path}: cannot open the staging file of an interrupted ingest "
                f"({str(exc).splitlines()[0]}) - delete it and rerun the ingest") from exc
        self.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        code = self.con.execute(
            "SELECT (SELECT count(*) FROM duckdb_views() WHERE NOT internal) + (SELECT "
            "count(*) FROM duckdb_functions() WHERE NOT internal)").fetchone()[0]
        if code:  # the staging file holds rows only; anything else is not ours
            self.con.close()
            raise MliapdbError(f"{path}: the staging file of an interrupted ingest holds views "
                               "or macros, which mliapdb never writes - delete it and rerun "
                               "the ingest")
        self.con.execute("CREATE TABLE IF NOT EXISTS stage_files (sha VARCHAR, dataset "
                         "VARCHAR, options VARCHAR, path VARCHAR, n_entries INTEGER, "
                         "complete BOOLEAN)")
        self.con.execute("CREATE TABLE IF NOT EXISTS stage_chunks (sha VARCHAR, dataset "
                         "VARCHAR, chunk INTEGER, n_entries INTEGER)")

    def start(self, sha: str, dataset: str, options: str, path: str) -> set[int]:
        """Begin staging a file; the chunks an earlier run of the same options staged."""
        row = self.con.execute("SELECT options, complete FROM stage_files WHERE sha = ? AND "
                               "dataset = ?", [sha, dataset]).fetchone()
        if row is not None and row[0] == options:
            return {r[0] for r in self.con.execute(
                "SELECT chunk FROM stage_chunks WHERE sha = ? AND dataset = ?",
                [sha, dataset]).fetchall()}
        self.drop(sha, dataset)
        self.con.execute("INSERT INTO stage_files VALUES (?, ?, ?, ?, 0, false)",
                         [sha, dataset, options, path])
        return set()

    def add(self, sha: str, dataset: str, chunk: int, n: int, tables: dict) -> None:
        """Commit one chunk's rows."""
        con = self.con
        con.begin()
        try:
            for table, rows in tables.items():  # noqa: B007 - read by the replacement scan
                con.execute(f"CREATE TABLE IF NOT EXISTS stage_{table} AS "
                            "SELECT * FROM rows LIMIT 0")
                con.execute(f"INSERT INTO stage_{table} SELECT * FROM rows")
            con.execute("INSERT INTO stage_chunks VALUES (?, ?, ?, ?)", [sha, dataset, chunk, n])
        except BaseException:
            con.rollback()
            raise
        con.commit()

    def finish(self, sha: str, dataset: str, n_entries: int) -> None:
        self.con.execute("UPDATE stage_files SET n_entries = ?, complete = true WHERE sha = ? "
                         "AND dataset = ?", [n_entries, sha, dataset])

    def tables(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT table_name FROM duckdb_tables()")
                .fetchall()}

    def drop(self, sha: str, dataset: str) -> None:
        """Forget everything staged of one file."""
        for table in self.tables():
            if table.startswith("stage_") and table not in ("stage_files", "stage_chunks"):
                self.con.execute(f"DELETE FROM {table} WHERE _sha = ? AND dataset = ?",
                                 [sha, dataset])
        for table in ("stage_files", "stage_chunks"):
            self.con.execute(f"DELETE FROM {table} WHERE sha = ? AND dataset = ?",
                             [sha, dataset])

    def close(self) -> None:
        """Close; remove the file when nothing is staged any more."""
        (n,) = self.con.execute("SELECT count(*) FROM stage_files").fetchone()
        self.con.close()
        if n == 0:
            for leftover in (self.path, Path(f"{self.path}.wal")):
                leftover.unlink(missing_ok=True)


def _known_files(db_path: Path, dataset: str) -> dict[str, int]:
    """sha256 -> entries of the files already ingested into ``dataset`` (none when the
    database does not exist yet)."""
    from mliapdb.store import database as db

    if not db_path.exists():
        return {}
    with db.opened(db_path, read_only=True) as con:
        return dict(con.execute("SELECT sha256, n_entries FROM source_files WHERE dataset = ?",
                                [dataset]).fetchall())


def _chunks(path: Path, where: str, sha: str, size: int) -> Iterator[tuple[int, list, int]]:
    """(chunk index, raw entry dicts, compressed bytes read so far) of one file; the same
    material id twice in the file is an error."""
    from mliapdb.materials.entries import material_id_of
    from mliapdb.materials.entry_stream import iter_entry_dicts

    seen: dict[str, int] = {}
    raws: list = []
    chunk = 0
    position = [0]
    stream = iter_entry_dicts(path, where, position)
    for index, raw in enumerate(stream):
        mid = material_id_of(raw) if isinstance(raw, dict) else None
        if mid is not None:
            if mid in seen:
                raise MliapdbError(
                    f"{where}: entry {index} ({mid}): material id repeats entry {seen[mid]} - "
                    "keep one entry per material")
            seen[mid] = index
        raws.append(raw)
        if len(raws) == size:
            yield chunk, raws, position[0]
            chunk += 1
            raws = []
    if raws:
        yield chunk, raws, position[0]
    elif chunk == 0:
        raise MliapdbError(f"{where}: no entries - the file holds an empty list")


class _Runner:
    """Chunks to rows: in this process (one job) or a window of worker processes."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, tasks: Iterator[tuple[int, ChunkTask | None]]) -> Iterator[tuple[int, Any]]:
        """(chunk, rows or error text) in task order; a None task (an already staged chunk)
        yields None."""
        import multiprocessing

        if self.jobs <= 1:
            for chunk, task in tasks:
                yield chunk, None if task is None else chunk_rows(task)
            return
        window: list[tuple[int, Future | ChunkTask | None]] = []
        for chunk, task in tasks:
            window.append((chunk, task))
            if self.pool is None and sum(t is not None for _, t in window) < 2:
                continue  # one chunk in all is done here: no worker start-up to pay
            if self.pool is None:
                self.pool = ProcessPoolExecutor(
                    self.jobs, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_warm)
            window = [(c, self.pool.submit(chunk_rows, t) if isinstance(t, ChunkTask) else t)
                      for c, t in window]
            while len(window) > 2 * self.jobs or (window and window[0][1] is None):
                done, future = window.pop(0)
                yield done, None if future is None else future.result()
        for done, item in window:
            if isinstance(item, ChunkTask):
                yield done, chunk_rows(item)
            else:
                yield done, None if item is None else item.result()


def stream_ingest(db_path: str | Path, paths: Sequence[Path],
                  options: StreamOptions = StreamOptions(),
                  progress: Progress = no_progress) -> StreamReport:
    """Ingest entry files into the database at ``db_path`` (created if new): see the module
    doc. ``progress`` wraps a loop over each file's kB read."""
    from mliapdb.materials.entries import display_path
    from mliapdb.materials.entry_stream import file_sha256
    from mliapdb.materials.ingest import check_dataset_name, check_symprecs

    check_dataset_name(options.dataset)
    check_symprecs(options.symprecs)
    db_path = Path(db_path)
    report = StreamReport(dataset=options.dataset)
    known = _known_files(db_path, options.dataset)
    stage = _Stage(staging_path(db_path))
    staged: list[tuple[str, str]] = []  # (sha, display name) in order
    try:
        with _Runner(options.workers()) as runner:
            for path in paths:
                where = display_path(path)
                sha = file_sha256(path)
                report.n_files += 1
                if sha in known or any(sha == s for s, _ in staged):
                    report.n_skipped_files += 1
                    continue
                _stage_file(stage, runner, path, where, sha, options, report, progress)
                staged.append((sha, where))
        stage.con.close()  # the publishing connection attaches it
        try:
            _publish(db_path, stage.path, staged, options, report)
        finally:
            stage = _Stage(stage.path)
        for sha, _ in staged:
            stage.drop(sha, options.dataset)
    except MliapdbError:
        stage.close()
        raise
    stage.close()
    return report


def _stage_file(stage: _Stage, runner: _Runner, path: Path, where: str, sha: str,
                options: StreamOptions, report: StreamReport, progress: Progress) -> None:
    """Stream one file into the staging file (chunks staged earlier are not redone)."""
    done = stage.start(sha, options.dataset, options.key(), where)
    report.n_resumed_chunks += len(done)
    size = max(1, path.stat().st_size // 1024)
    position = [0]  # compressed bytes read so far

    def tasks() -> Iterator[tuple[int, ChunkTask | None]]:
        for chunk, raws, at in _chunks(path, where, sha, options.chunk_size):
            position[0] = at
            yield chunk, None if chunk in done else ChunkTask(
                where, sha, chunk * options.chunk_size, raws, options.dataset,
                options.symprecs, options.method)

    def results() -> Iterator[None]:
        kb = 0
        try:
            for chunk, rows in runner.map(tasks()):
                if isinstance(rows, str):
                    raise MliapdbError(rows)
                if rows is not None:
                    stage.add(sha, options.dataset, chunk, rows["dft_entries"].num_rows, rows)
                now_kb = min(size, position[0] // 1024)
                yield from range(kb, now_kb)
                kb = max(kb, now_kb)
        except MliapdbError:
            stage.drop(sha, options.dataset)
            raise
        yield from range(kb, size)

    for _ in progress(results(), size, f"{where}: kB read"):
        pass
    (n,) = stage.con.execute("SELECT coalesce(sum(n_entries), 0) FROM stage_chunks WHERE "
                             "sha = ? AND dataset = ?", [sha, options.dataset]).fetchone()
    stage.finish(sha, options.dataset, int(n))
    report.n_read += int(n)


def _publish(db_path: Path, stage_path: Path, staged: list[tuple[str, str]],
             options: StreamOptions, report: StreamReport) -> None:
    """Check conflicts, then move the staged rows of ``staged`` files into the database and
    rebuild the DFT hull, in one transaction."""
    from mliapdb.materials.publish import publish_staged
    from mliapdb.store import database as db

    with db.opened(db_path, create=True) as con:
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        publish_staged(con, str(stage_path), staged, options, report)
