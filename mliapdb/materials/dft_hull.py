"""The DFT convex hull of a dataset (table ``dft_hull``): formation energy and Ehull (eV/atom)
of every accepted entry from the MP2020-corrected energies (:mod:`mliapdb.materials.hull`),
rebuilt whole or only for the chemical systems a change touched and their supersystems
(:mod:`mliapdb.materials.chemsys`), with the same values bit for bit."""

from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb

from mliapdb.store.database import insert_rows, now

INCREMENTAL_SHARE = 0.5
"""Above this share of the dataset's entries reached by a change, one whole rebuild is
cheaper than selecting the reached ones."""


def _entries(con: duckdb.DuckDBPyConnection, dataset: str) -> list[tuple]:
    """(material_id, composition JSON, corrected energy eV/atom, chemsys) of every accepted
    entry, by material id."""
    return con.execute(
        "SELECT m.material_id, m.composition, e.energy_corrected / e.n_atoms, m.chemsys "
        "FROM mp_materials m JOIN dft_entries e USING (dataset, material_id) "
        "WHERE m.dataset = ? AND e.compat_status = 'ok' ORDER BY m.material_id",
        [dataset],
    ).fetchall()


def rebuild_dft_hull(con: duckdb.DuckDBPyConnection, dataset: str) -> int:
    """Recompute formation energies and Ehull (eV/atom) of every accepted entry of a dataset
    from the MP2020-corrected energies; replaces the dataset's ``dft_hull`` rows. Returns
    the number of rows written."""
    rows = _entries(con, dataset)
    con.execute("DELETE FROM dft_hull WHERE dataset = ?", [dataset]).fetchall()
    return _write(con, dataset, rows, None)


def update_dft_hull(con: duckdb.DuckDBPyConnection, dataset: str,
                    touched: Iterable[str] | None) -> int:
    """Recompute the ``dft_hull`` rows of the entries a change of the ``touched`` chemical
    systems reaches (None: all of them, :func:`rebuild_dft_hull`). Returns the number of
    rows written."""
    from mliapdb.materials.chemsys import reach

    if touched is None:
        return rebuild_dft_hull(con, dataset)
    rows = _entries(con, dataset)
    got = reach({r[0]: r[3] for r in rows}, touched)
    if len(got.affected) > INCREMENTAL_SHARE * max(len(rows), 1):
        return rebuild_dft_hull(con, dataset)
    import pyarrow as pa

    _mliapdb_ids = pa.table({"material_id": sorted(got.affected)})  # noqa: F841
    con.execute("DELETE FROM dft_hull WHERE dataset = ? AND material_id IN "
                "(SELECT material_id FROM _mliapdb_ids)", [dataset]).fetchall()
    return _write(con, dataset, [r for r in rows if r[0] in got.closure], got.affected)


def _write(con: duckdb.DuckDBPyConnection, dataset: str, rows: list[tuple],
           keep: frozenset[str] | None) -> int:
    """Hull rows of ``rows`` (only the ``keep`` ones, when given) inserted for ``dataset``."""
    from mliapdb.materials.hull import compute_hull

    if not rows:
        return 0
    result = compute_hull([json.loads(r[1]) for r in rows], [r[2] for r in rows])
    stamp = now()

    def num(x: float) -> float | None:
        return None if x != x else float(x)  # NaN -> NULL (no elemental reference)

    out = [
        {"dataset": dataset, "material_id": r[0], "e_per_atom": r[2],
         "e_ref_per_atom": num(result.e_ref_per_atom[i]),
         "e_form_per_atom": num(result.e_form_per_atom[i]),
         "e_above_hull": num(result.e_above_hull[i]), "computed_at": stamp}
        for i, r in enumerate(rows) if keep is None or r[0] in keep
    ]
    return insert_rows(con, "dft_hull", out)


def verify_dft_hull(con: duckdb.DuckDBPyConnection, dataset: str) -> bool:
    """Recompute the dataset's whole DFT hull and compare it with the stored rows (values
    exactly, eV/atom); rebuild them when they differ (a write by another client). Returns
    whether they differed."""
    from mliapdb.materials.hull import compute_hull

    rows = _entries(con, dataset)
    stored = {r[0]: tuple(r[1:]) for r in con.execute(
        "SELECT material_id, e_per_atom, e_ref_per_atom, e_form_per_atom, e_above_hull "
        "FROM dft_hull WHERE dataset = ?", [dataset]).fetchall()}
    (n_stored,) = con.execute("SELECT count(*) FROM dft_hull WHERE dataset = ?",
                              [dataset]).fetchone()
    same = n_stored == len(stored) == len(rows)
    if same and rows:
        result = compute_hull([json.loads(r[1]) for r in rows], [r[2] for r in rows])

        def num(x: float) -> float | None:
            return None if x != x else float(x)

        same = all(stored.get(r[0]) == (
            r[2], num(result.e_ref_per_atom[i]), num(result.e_form_per_atom[i]),
            num(result.e_above_hull[i])) for i, r in enumerate(rows))
    if not same:
        rebuild_dft_hull(con, dataset)
    return not same
