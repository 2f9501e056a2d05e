"""Generation markers: O(1) freshness of the derived tables.

Every mliapdb write bumps, in its own transaction, the counter of each scope it changes
(table ``generations``, migration 0009):

* the DFT inputs of a dataset (``model = settings_hash = calc_kind = ''``: ``mp_materials``,
  ``dft_entries``, ``symmetry_analyses`` and the dataset's ``dft_hull``);
* the calculations of one (dataset, model, settings hash, calculation kind).

and records the chemical systems the write touched (``generation_changes``; NULL: any). A
build of a derived table records the generations it was built from; the views serve it while
those are the current ones, so a query compares a few integers instead of hashing the base
tables, and a refresh rebuilds only the touched chemical systems and their supersystems.

A write through another DuckDB client that does not call :func:`bump` is not seen by the
markers: ``mliapdb ingest hulls --verify`` re-hashes the inputs and rebuilds what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

DFT = ""
"""``model`` (and settings hash, kind) of a dataset's DFT scope."""

_KEY = ("dataset", "model", "settings_hash", "calc_kind")


@dataclass(frozen=True)
class Scope:
    """One counter: a dataset's DFT inputs (``model == ''``) or one calculation set."""

    dataset: str
    model: str = DFT
    settings_hash: str = DFT
    calc_kind: str = DFT

    def params(self) -> list[str]:
        return [self.dataset, self.model, self.settings_hash, self.calc_kind]


def bump(con: duckdb.DuckDBPyConnection, scope: Scope,
         chemsys: Iterable[str | None] | None = None) -> int:
    """Advance ``scope``'s generation by one and record the chemical systems (``"Fe-Li-O"``)
    the write touched (``None``: any, the next refresh rebuilds the scope whole). Call it in
    the transaction of the write. Returns the new generation."""
    (generation,) = con.execute(
        "INSERT INTO generations VALUES (?, ?, ?, ?, 1, now()::TIMESTAMP) "
        "ON CONFLICT DO UPDATE SET generation = generation + 1, changed_at = now()::TIMESTAMP "
        "RETURNING generation", scope.params()).fetchone()
    systems = [None] if chemsys is None else sorted({c for c in chemsys}, key=str)
    if any(c is None for c in systems):
        systems = [None]
    if systems:
        import pyarrow as pa

        _mliapdb_changes = pa.table({"chemsys": pa.array(systems, pa.string())})  # noqa: F841
        con.execute(
            "INSERT INTO generation_changes SELECT ?, ?, ?, ?, ?, chemsys "
            "FROM _mliapdb_changes", [*scope.params(), int(generation)]).fetchall()
    return int(generation)


def bump_calculations(con: duckdb.DuckDBPyConnection,
                      rows: Iterable[Mapping[str, object]] | Any) -> list[Scope]:
    """Bump the calculation scope of every written row (dicts, or an Arrow table, with
    ``dataset``, ``material_id``, ``model``, ``settings_hash`` and ``calc_kind``), recording
    the rows' chemical systems. Call it in the transaction of the write. Returns the
    scopes."""
    import pyarrow as pa

    columns = ["dataset", "material_id", *_KEY[1:]]
    if isinstance(rows, pa.Table):
        _mliapdb_written = rows.select(columns)  # noqa: F841
    else:
        rows = [{k: r[k] for k in columns} for r in rows]
        if not rows:
            return []
        _mliapdb_written = pa.Table.from_pylist(rows)  # noqa: F841
    relation = "_mliapdb_written"
    found = con.execute(
        "SELECT DISTINCT w.dataset, w.model, w.settings_hash, w.calc_kind, m.chemsys "
        f"FROM {relation} AS w LEFT JOIN mp_materials AS m "
        "ON m.dataset = w.dataset AND m.material_id = w.material_id ORDER BY ALL").fetchall()
    touched: dict[Scope, list[str | None]] = {}
    for dataset, model, settings_hash, calc_kind, chemsys in found:
        touched.setdefault(Scope(dataset, model, settings_hash, calc_kind), []).append(chemsys)
    for scope, systems in touched.items():
        bump(con, scope, systems)
    return list(touched)


def bump_all(con: duckdb.DuckDBPyConnection) -> list[Scope]:
    """Bump every scope with data (each dataset's DFT inputs and every calculation set) as
    touching any chemical system: what a write the markers did not see needs (a merge, a
    verification that found a difference)."""
    scopes = [Scope(r[0]) for r in con.execute(
        "SELECT DISTINCT dataset FROM dft_entries ORDER BY 1").fetchall()]
    scopes += [Scope(*r) for r in con.execute(
        "SELECT DISTINCT dataset, model, settings_hash, calc_kind FROM calculations "
        "ORDER BY ALL").fetchall()]
    for scope in scopes:
        bump(con, scope)
    return scopes


def current(con: duckdb.DuckDBPyConnection) -> dict[Scope, int]:
    """Every scope's generation (a scope never written through mliapdb is absent: 0)."""
    return {Scope(*r[:4]): int(r[4]) for r in con.execute(
        "SELECT dataset, model, settings_hash, calc_kind, generation FROM generations")}


def touched_since(con: duckdb.DuckDBPyConnection, scope: Scope, since: int | None,
                  now: int) -> set[str] | None:
    """The chemical systems the generations of ``scope`` after ``since`` up to ``now``
    touched; None when any system may have changed (``since`` unknown, a write that did not
    say, or a log pruned too far)."""
    if since is None or since > now:
        return None
    if since == now:
        return set()
    rows = con.execute(
        "SELECT generation, chemsys FROM generation_changes WHERE dataset = ? AND model = ? "
        "AND settings_hash = ? AND calc_kind = ? AND generation > ? AND generation <= ?",
        [*scope.params(), since, now]).fetchall()
    if len({r[0] for r in rows}) != now - since or any(r[1] is None for r in rows):
        return None
    return {r[1] for r in rows}


_BUILT = (
    "SELECT dataset, model, settings_hash, calc_kind, min(g) AS g FROM ("
    " SELECT dataset, model, settings_hash, calc_kind, calc_generation AS g "
    " FROM model_hull_builds UNION ALL "
    " SELECT dataset, model, settings_hash, calc_kind, calc_generation FROM ehull_error_builds "
    " UNION ALL SELECT dataset, '', '', '', dft_generation FROM model_hull_builds "
    " UNION ALL SELECT dataset, '', '', '', dft_generation FROM ehull_error_builds) "
    "GROUP BY ALL"
)
"""The oldest generation each scope's builds record (NULL: no build records one)."""


def prune(con: duckdb.DuckDBPyConnection) -> int:
    """Delete the change rows no build needs: a scope's rows up to the oldest generation its
    builds (or, for a dataset's DFT scope, the builds of the dataset) record, every row of a
    scope no build records a generation of (its next build is whole anyway). Returns how
    many were deleted."""
    return len(con.execute(
        f"DELETE FROM generation_changes AS c USING generations AS s LEFT JOIN ({_BUILT}) AS b "
        "USING (dataset, model, settings_hash, calc_kind) "
        "WHERE c.dataset = s.dataset AND c.model = s.model "
        "AND c.settings_hash = s.settings_hash AND c.calc_kind = s.calc_kind "
        "AND (b.g IS NULL OR c.generation <= b.g) RETURNING c.generation").fetchall())


ADOPTED_AT = 9
"""The migration that brought the markers: builds stored before it are adopted or rebuilt."""


def adopt_builds(con: duckdb.DuckDBPyConnection) -> None:
    """After migration 0009, in one transaction: give every scope with data a first
    generation (touching any chemical system) and adopt the stored builds whose hash
    fingerprint still equals the live one (recorded by this DuckDB release): they record
    the current generations and stay served; the others stay unknown and are rebuilt by the
    next refresh."""
    con.begin()
    try:
        bump_all(con)
        con.execute(
            "UPDATE model_hull_builds AS b SET dft_generation = g.dft_generation, "
            "calc_generation = g.calc_generation, model_signature = g.model_signature "
            "FROM stg_generations AS g, stg_model_hull_inputs AS i "
            "WHERE g.dataset = b.dataset AND g.model = b.model "
            "AND g.settings_hash = b.settings_hash AND g.calc_kind = b.calc_kind "
            "AND i.dataset = b.dataset AND i.model = b.model "
            "AND i.settings_hash = b.settings_hash AND i.calc_kind = b.calc_kind "
            "AND b.fingerprint = i.fingerprint AND b.duckdb_version = version()").fetchall()
        con.execute(
            "UPDATE ehull_error_builds AS b SET dft_generation = s.dft_generation, "
            "calc_generation = s.calc_generation, settings = s.settings, on_fresh_hull = TRUE "
            "FROM stg_error_row_status AS s, stg_error_row_inputs AS i "
            "WHERE s.dataset = b.dataset AND s.model = b.model "
            "AND s.settings_hash = b.settings_hash AND s.calc_kind = b.calc_kind AND s.hull_fresh "
            "AND i.dataset = b.dataset AND i.model = b.model "
            "AND i.settings_hash = b.settings_hash AND i.calc_kind = b.calc_kind "
            "AND b.fingerprint = i.fingerprint AND b.duckdb_version = version()").fetchall()
        con.commit()
    except BaseException:
        con.rollback()
        raise
