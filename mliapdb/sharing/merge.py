"""Merge databases of different groups (say the same MP entries relaxed with different models)
into a new one: source tables are unioned on their primary keys (one copy of each material),
derived tables (hulls, stored error rows, builds) are rebuilt, and conflicting DFT data for a
material refuses the whole merge before anything is written."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from mliapdb.errors import MliapdbError
from mliapdb.store import schema, upgrade

SOURCE_TABLES = (  # unioned on their primary key, in this order
    "source_files", "mp_api_fetches", "mp_api_pages", "mp_materials", "dft_entries",
    "symmetry_analyses", "wyckoff_orbits", "models", "calculations",
)
STATIC_TABLES = ("schema_migrations", "space_groups")  # written by the migrations
SETTINGS_TABLE = "db_settings"  # first input's value wins; differences are reported
DERIVED_TABLES = (  # rebuilt after the merge, never copied
    "dft_hull", "model_hull", "model_hull_builds", "ehull_error_rows", "ehull_error_builds",
    "generations", "generation_changes",  # markers of the merged rows: bumped anew
)


def is_derived(table: str) -> bool:
    """Hulls, stored error rows, build records and caches: rebuilt, not copied."""
    return table in DERIVED_TABLES or table.endswith("_builds") or "cache" in table


@dataclass(frozen=True)
class Check:
    """Rows of ``table`` with the same ``key`` must agree on ``columns``."""

    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    what: str


CHECKS = (
    Check("mp_materials", ("dataset", "material_id"), ("fingerprint", "formula", "nsites"),
          "DFT data"),
    Check("dft_entries", ("dataset", "material_id"),
          ("n_atoms", "energy_raw", "correction_mp2020", "energy_corrected", "compat_status"),
          "DFT data"),
    Check("symmetry_analyses", ("dataset", "material_id", "symprec", "method"),
          ("spacegroup_number", "dof"), "symmetry"),
    Check("models", ("name",), ("checkpoint_sha256", "energy_convention", "functional"),
          "model metadata"),
)


@dataclass
class MergeReport:
    inputs: list[Path]
    rows: dict[str, list[int]] = field(default_factory=dict)  # table -> [per input..., merged]
    duplicate_calculations: int = 0
    max_duplicate_diff_meV: float | None = None
    migrated: list[Path] = field(default_factory=list)
    settings_differ: list[str] = field(default_factory=list)


def merge(
    inputs: Sequence[Path],
    into: Path,
    refresh: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    on_status: Callable[[str], None] = lambda s: None,
) -> MergeReport:
    """Merge ``inputs`` into the new database ``into``; ``refresh(con)`` rebuilds the model
    hulls and stored error rows at the end (default
    :func:`mliapdb.analysis.derived.refresh_derived`). Nothing is written on any error."""
    from mliapdb.store import database as db

    if refresh is None:
        from mliapdb.analysis.derived import refresh_derived

        def refresh(con: duckdb.DuckDBPyConnection) -> None:
            refresh_derived(con, on_status)
    inputs = [Path(p) for p in inputs]
    if len(inputs) < 2:
        raise MliapdbError("merge needs at least two databases")
    if len({p.resolve() for p in inputs}) < len(inputs):
        raise MliapdbError("the same database is given twice - merge different files")
    for path in inputs:
        if not path.is_file():
            raise MliapdbError(f"no database at {path}")
    if into.exists() or into.resolve() in {p.resolve() for p in inputs}:
        raise MliapdbError(f"{into} exists - merge into a new file (remove it, or pass another "
                           "--into)")
    report = MergeReport(inputs)
    work = Path(tempfile.mkdtemp(prefix="mliapdb-merge-", dir=into.parent.resolve()
                                 if into.parent.exists() else None))
    out = work / into.name
    try:
        sources = [_current(path, work / f"in{i}.duckdb", report, on_status)
                   for i, path in enumerate(inputs)]
        con = db.connect(out, create=True)
        try:
            for i, path in enumerate(sources):
                con.execute(f"ATTACH ? AS in{i} (READ_ONLY)", [str(path)])
            tables = _classify(con)
            _check_conflicts(con, inputs)
            _union(con, inputs, tables, report)
            for i in range(len(inputs)):
                con.execute(f"DETACH in{i}")
            _rebuild_dft_hulls(con, on_status)
            refresh(con)
            report.rows = {t: [*report.rows.get(t, []), _count(con, t)]
                           for t in sorted(set(tables["source"]) | set(tables["derived"]))}
            con.execute("CHECKPOINT")
        finally:
            con.close()
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(into))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _current(path: Path, copy: Path, report: MergeReport,
             on_status: Callable[[str], None]) -> Path:
    """``path`` if it is at this code's schema version, else a migrated copy of it."""
    from mliapdb.store import database as db
    from mliapdb.store.file import SAFE_CONFIG, check_catalog, check_database_file

    check_database_file(path)
    try:
        with duckdb.connect(str(path), read_only=True, config=SAFE_CONFIG) as con:
            have = upgrade.check_not_newer(con, str(path))
            if have:
                check_catalog(con, schema.current_catalog(con), have, str(path))
    except duckdb.IOException as exc:
        raise MliapdbError(f"cannot open {path}: {str(exc).splitlines()[0]} - is a running "
                           "'mliapdb ingest' using it?") from exc
    if have == schema.code_schema_version():
        return path
    if have == 0:
        raise MliapdbError(f"{path} is not a mliapdb database (no schema_migrations)")
    shutil.copyfile(path, copy)
    db.connect(copy).close()  # migrates
    report.migrated.append(path)
    on_status(f"{path}: schema version {have} migrated to {schema.code_schema_version()} in a "
              "temporary copy (the file itself is unchanged)")
    return copy


def _classify(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every table of the new database as source, static, settings or derived; an unknown one
    is an error (a new migration whose table merge does not know)."""
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' ORDER BY table_name").fetchall()]
    out: dict[str, list[str]] = {"source": [], "derived": [], "static": [], "settings": []}
    for table in tables:
        if table in SOURCE_TABLES:
            out["source"].append(table)
        elif is_derived(table):
            out["derived"].append(table)
        elif table in STATIC_TABLES:
            out["static"].append(table)
        elif table == SETTINGS_TABLE:
            out["settings"].append(table)
        else:
            raise MliapdbError(f"table {table} is unknown to 'mliapdb snapshot merge' (neither "
                               "source data nor derived) - add it to mliapdb.sharing.merge")
    out["source"].sort(key=SOURCE_TABLES.index)
    return out


def _check_conflicts(con: duckdb.DuckDBPyConnection, inputs: Sequence[Path]) -> None:
    """The first disagreement between two inputs on a :data:`CHECKS` row, as one error."""
    for check in CHECKS:
        key = ", ".join(check.key)
        differs = " OR ".join(f"a.{c} IS DISTINCT FROM b.{c}" for c in check.columns)
        select = ", ".join([*(f"a.{k}" for k in check.key), *(f"a.{c}" for c in check.columns),
                            *(f"b.{c}" for c in check.columns)])
        for i in range(len(inputs)):
            for j in range(i + 1, len(inputs)):
                row = con.execute(
                    f"SELECT {select} FROM in{i}.main.{check.table} a "
                    f"JOIN in{j}.main.{check.table} b USING ({key}) WHERE {differs} "
                    f"ORDER BY {', '.join(f'a.{k}' for k in check.key)} LIMIT 1"
                ).fetchone()
                if row is None:
                    continue
                n = len(check.key)
                ident = "/".join(str(v) for v in row[:n])
                a, b = row[n:n + len(check.columns)], row[n + len(check.columns):]
                col, va, vb = next((c, x, y) for c, x, y in zip(check.columns, a, b, strict=True)
                                   if x != y)
                raise MliapdbError(
                    f"conflicting {check.what} for {ident}: {check.table}.{col} is {va!r} in "
                    f"{inputs[i]} but {vb!r} in {inputs[j]} - nothing was written; these files "
                    "hold different data for it (ingest one under another --dataset)"
                )


def _count(con: duckdb.DuckDBPyConnection, table: str, catalog: str | None = None) -> int:
    """Rows of ``table`` (of the attached ``catalog``, else of the merged database)."""
    name = f'{catalog}.main."{table}"' if catalog else f'"{table}"'
    try:
        return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    except duckdb.CatalogException:  # an older input migrated in a copy, or no such table
        return 0


def _union(con: duckdb.DuckDBPyConnection, inputs: Sequence[Path],
           tables: dict[str, list[str]], report: MergeReport) -> None:
    """Insert every input's source rows (first input wins on a primary key) and settings, in
    one transaction."""
    from mliapdb.store.database import transaction

    for table in tables["source"] + tables["derived"]:
        report.rows[table] = [_count(con, table, f"in{i}") for i in range(len(inputs))]
    with transaction(con):
        for table in tables["source"]:
            for i in range(len(inputs)):
                if table == "calculations" and i:
                    _count_duplicates(con, i, report)
                con.execute(f"INSERT OR IGNORE INTO main.{table} BY NAME "
                            f"SELECT * FROM in{i}.main.{table}").fetchall()
        settings: dict[str, str] = {}
        for i, path in enumerate(inputs):
            for key, value in con.execute(
                f"SELECT key, value FROM in{i}.main.{SETTINGS_TABLE} "
                "WHERE key <> 'views_sha256' ORDER BY key"
            ).fetchall():
                if key in settings and settings[key] != value:
                    report.settings_differ.append(
                        f"setting {key}: {settings[key]!r} from {inputs[0]} kept, "
                        f"{value!r} in {path} ignored")
                settings.setdefault(key, value)
        for key, value in settings.items():
            con.execute(f"INSERT OR REPLACE INTO main.{SETTINGS_TABLE} VALUES (?, ?)",
                        [key, value])


def _count_duplicates(con: duckdb.DuckDBPyConnection, i: int, report: MergeReport) -> None:
    """Calculations of input ``i`` already merged (same material, model and settings): kept
    once, the first input's; how many and how far their energies differ."""
    n, diff = con.execute(
        "SELECT count(*), 1000 * max(abs("
        "coalesce(a.energy_relaxed, a.energy_single_point) / a.n_atoms - "
        "coalesce(b.energy_relaxed, b.energy_single_point) / b.n_atoms)) "
        f"FROM main.calculations a JOIN in{i}.main.calculations b "
        "USING (dataset, material_id, model, settings_hash)"
    ).fetchone()
    report.duplicate_calculations += n
    if diff is not None:
        report.max_duplicate_diff_meV = max(diff, report.max_duplicate_diff_meV or 0.0)


def _rebuild_dft_hulls(con: duckdb.DuckDBPyConnection, on_status: Callable[[str], None]) -> None:
    """The DFT hull of every dataset, from the merged entries (one transaction each)."""
    from mliapdb.materials.dft_hull import rebuild_dft_hull
    from mliapdb.store.database import transaction
    from mliapdb.store.generations import bump_all

    with transaction(con):
        bump_all(con)  # every merged scope is new here: built whole
    for (dataset,) in con.execute("SELECT DISTINCT dataset FROM dft_entries ORDER BY 1"
                                  ).fetchall():
        with transaction(con):
            n = rebuild_dft_hull(con, dataset)
        on_status(f"DFT hull of dataset {dataset} rebuilt ({n} entries)")
