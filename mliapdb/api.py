"""mliapdb as a library: open a database (a file, or a published snapshot by URL), run the CLI's
queries as pandas DataFrames, and get pymatgen objects back.

>>> import mliapdb
>>> with mliapdb.open("mliapdb.duckdb") as db:          # doctest: +SKIP
...     db.ehull_mae(by="dof", kind="single-point")

Every query method takes the options of its ``mliapdb query`` command under the same names
(``--settings`` is ``settings``, ``--near-hull`` is ``near_hull``) and the same values
(``kind="single-point"``, ``by="dof-bin"``, ``convention="model-hull"``); the underscored
spelling of the database columns (``single_point``, ``dof_bin``, ``model_hull``) is accepted
too. Numbers are at full
precision (the CLI's table output rounds); energies in meV/atom where the column says
``_meV``, eV/atom elsewhere. The description of a result (units, conventions) is in
``frame.attrs["description"]``, and for an empty one the reason in ``frame.attrs["hint"]``.

A local file is opened for each call and closed after it, so that a running ``mliapdb ingest
relax`` commits between calls (a call that meets a commit in progress waits for it,
:class:`mliapdb.store.database.LockWait`); :attr:`Database.connection` keeps one connection,
and the file, until :meth:`Database.close`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mliapdb.config import DEFAULT_DB
from mliapdb.errors import MliapdbError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from mliapdb.analysis.inventory import Inventory
    from mliapdb.analysis.queries import QueryResult


def open(path_or_url: str | Path = DEFAULT_DB, read_only: bool = True) -> Database:  # noqa: A001
    """The database at ``path_or_url`` (a ``.duckdb`` file, or an ``http(s)://`` snapshot URL,
    read in ranges without downloading it). Read-only by default: nothing is written, not even
    a migration (an older file is migrated in memory where it cannot be written). With
    ``read_only=False`` an older schema is migrated in the file and a missing file is created.

    The file is checked (and migrated or created) here, then closed: each call opens it again
    for its length, so the :class:`Database` never keeps another process (a running ``mliapdb
    ingest relax``) from committing between calls. A remote snapshot keeps its connection.
    """
    from mliapdb.store.remote import is_remote

    location = path_or_url if is_remote(path_or_url) else Path(path_or_url)
    database = Database(str(path_or_url), read_only, where=location)
    con = database._open()
    if is_remote(path_or_url):
        database._con = con
    else:
        con.close()
    return database


class Database:
    """An open mliapdb database. Close it (or use ``with``) when done. A local file is held
    only during each call (opened and closed again); :attr:`connection` keeps it open."""

    def __init__(self, location: str, read_only: bool,
                 con: duckdb.DuckDBPyConnection | None = None, *,
                 where: str | Path | None = None) -> None:
        self.location = location
        self.read_only = read_only
        self._con = con
        self._where = location if where is None else where
        self._closed = False

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<mliapdb.Database {self.location} ({mode})>"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept connection (a remote snapshot's, or :attr:`connection`'s); later
        calls are refused."""
        if self._con is not None:
            self._con.close()
            self._con = None
        self._closed = True

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the database (read-only ones locked down)."""
        from mliapdb.store import database as db

        con = db.connect(self._where, read_only=self.read_only, create=not self.read_only)
        if self.read_only:
            db.lock_down(con)
        return con

    @contextmanager
    def _connected(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The kept connection, else a new one for the block, closed afterwards."""
        if self._closed:
            raise MliapdbError(f"{self.location} is closed - open it again with "
                               "mliapdb.open()")
        if self._con is not None:
            yield self._con
            return
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection itself (read-only and locked when the database is), kept
        open until :meth:`close`: while it is open, no other process can write the file (a
        running ``mliapdb ingest relax`` waits, then fails with a message), so close it
        when done; the other methods open the file for each call."""
        if self._closed:
            raise MliapdbError(f"{self.location} is closed - open it again with "
                               "mliapdb.open()")
        if self._con is None:
            self._con = self._open()
        return self._con

    # --- rows -------------------------------------------------------------------------------

    def sql(self, statement: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """The rows of one reading statement (SELECT, WITH, VALUES, SHOW, DESCRIBE, SUMMARIZE,
        EXPLAIN) with ``?`` placeholders bound to ``params``; anything else is refused."""
        from mliapdb.store.database import reading_statement

        parsed = reading_statement(statement, "Database.sql")
        with self._connected() as con:
            return _frame(con.execute(parsed, list(params)))

    def materials(self, dataset: str | None = None, chemsys: str | None = None) -> pd.DataFrame:
        """One row per material (view ``materials``): formula, chemical system, sites, space
        group and DOF at the database's default symmetry tolerance, with its DFT energy,
        formation energy and Ehull (eV/atom, view ``dft_stability``). ``chemsys`` keeps the
        system and its subsystems (``"Mn-O"``: Mn, O and Mn-O materials)."""
        where, params = _filters({"m.dataset": dataset, "m.chemsys": _chemsys(chemsys)})
        with self._connected() as con:
            return _frame(con.execute(
                "SELECT m.*, d.e_per_atom, d.e_form_per_atom, d.e_above_hull "
                "FROM materials AS m LEFT JOIN dft_stability AS d USING (dataset, material_id) "
                f"WHERE {where} ORDER BY m.dataset, m.material_id", params))

    def calculations(self, model: str | None = None, kind: str | None = None,
                     dataset: str | None = None, status: str | None = None) -> pd.DataFrame:
        """The stored calculations (table ``calculations``: energies in eV per cell, status,
        steps, space group before/after, RMSD, ...), filtered; ``mliapdb query calculations``
        is :meth:`calculation_summary`."""
        from mliapdb.compute.relaxation import calc_kind

        where, params = _filters({"model": model, "dataset": dataset, "status": status,
                                  "calc_kind": calc_kind(kind) if kind else None})
        with self._connected() as con:
            return _frame(con.execute(
                f"SELECT * FROM calculations WHERE {where} "
                "ORDER BY dataset, material_id, model, calc_kind, settings_hash", params))

    def entries(self, dataset: str | None = None, chemsys: str | None = None,
                material_ids: Sequence[str] | None = None) -> list[ComputedStructureEntry]:
        """The accepted DFT entries as pymatgen ``ComputedStructureEntry`` objects: the stored
        structure, the raw energy (eV) and the MP2020 correction as stored (one
        ``ConstantEnergyAdjustment``), so ``entry.energy`` is the corrected energy the hull
        uses; run type, +U values and POTCARs in ``parameters``. ``chemsys`` keeps the system
        and its subsystems, so the entries of ``"Mn-O"`` make a whole phase diagram."""
        from pymatgen.core import Structure
        from pymatgen.entries.computed_entries import (
            ComputedStructureEntry,
            ConstantEnergyAdjustment,
        )

        where, params = _filters({"m.dataset": dataset, "m.chemsys": _chemsys(chemsys)})
        if material_ids is not None:
            where += " AND m.material_id IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(material_ids))
        with self._connected() as con:
            rows = con.execute(
                "SELECT m.dataset, m.material_id, m.structure, e.entry_id, e.energy_raw, "
                "e.correction_mp2020, e.run_type, e.is_hubbard, e.hubbards, e.potcar_spec, "
                "e.oxide_type FROM mp_materials AS m JOIN dft_entries AS e "
                "USING (dataset, material_id) "
                f"WHERE e.compat_status = 'ok' AND {where} ORDER BY m.dataset, m.material_id",
                params).fetchall()
        out = []
        for (ds, mid, structure, entry_id, energy, correction, run_type, is_hubbard, hubbards,
             potcar, oxide_type) in rows:
            adjustments = [ConstantEnergyAdjustment(
                correction, name="MP2020 correction (as stored)",
                cls={"@module": "pymatgen.entry_compatibility",
                     "@class": "MaterialsProject2020Compatibility"},
                description="MP2020 correction computed at ingest")] if correction else []
            out.append(ComputedStructureEntry(
                Structure.from_dict(json.loads(structure)), energy,
                energy_adjustments=adjustments, entry_id=entry_id or mid,
                parameters={"run_type": run_type, "is_hubbard": is_hubbard,
                            "hubbards": json.loads(hubbards) if hubbards else {},
                            "potcar_spec": json.loads(potcar) if potcar else []},
                data={"dataset": ds, "material_id": mid, "oxide_type": oxide_type}))
        return out

    def structures(self, model: str | None = None, kind: str = "relax",
                   dataset: str | None = None, settings: str | None = None,
                   material_ids: Sequence[str] | None = None) -> dict[str, Structure]:
        """Structures by material id: the DFT (MP) ones without ``model``, else the model's
        relaxed ones (``kind`` ``relax`` or ``relax-fixsym``, status ok). A database holding
        several datasets, or the model under several settings, needs ``dataset`` /
        ``settings`` to say which."""
        from pymatgen.core import Structure

        from mliapdb.compute.relaxation import calc_kind

        ds = dataset or self._one("dataset", "mp_materials", {}, "dataset")
        if model is None:
            where, params = _filters({"dataset": ds})
            sql = f"SELECT material_id, structure FROM mp_materials WHERE {where}"
        else:
            kind = calc_kind(kind)
            if kind == "single_point":
                raise MliapdbError("a single point keeps the DFT structure - call "
                                   "structures() without model, or pass kind='relax'")
            filters = {"model": model, "calc_kind": kind, "dataset": ds}
            shash = settings or self._one("settings_hash", "calculations", filters, "settings")
            where, params = _filters({**filters, "settings_hash": shash, "status": "ok"})
            sql = f"SELECT material_id, relaxed_structure FROM calculations WHERE {where}"
        if material_ids is not None:
            sql += " AND material_id IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(material_ids))
        with self._connected() as con:
            rows = con.execute(sql + " ORDER BY material_id", params).fetchall()
        return {mid: Structure.from_dict(json.loads(s)) for mid, s in rows if s}

    def _one(self, column: str, table: str, filters: dict, option: str) -> str | None:
        """The single value of ``column`` in ``table`` under ``filters``; an error naming
        ``option`` when there are several."""
        where, params = _filters(filters)
        with self._connected() as con:
            values = [r[0] for r in con.execute(
                f"SELECT DISTINCT {column} FROM {table} WHERE {where} ORDER BY 1", params
            ).fetchall()]
        if len(values) > 1:
            raise MliapdbError(f"several {column} values ({', '.join(values)}) - pass "
                               f"{option}= to pick one")
        return values[0] if values else None

    # --- what the database holds --------------------------------------------------------------

    def info(self) -> Inventory:
        """What the database holds (``mliapdb info``): datasets, materials, models,
        calculations by kind and status, freshness of the derived tables, file size and
        schema version."""
        from mliapdb.analysis.inventory import inventory

        with self._connected() as con:
            return inventory(con, self.location)

    # --- the queries of ``mliapdb query`` ---------------------------------------------------------

    def ehull_mae(self, by: str | Sequence[str] = "dof", model: str | None = None,
                  kind: str = "relax", convention: str = "dft-hull",
                  near_hull: float | None = None, bins: str | Sequence[int] | None = None,
                  dataset: str | None = None, settings: str | None = None,
                  symprec: float | None = None, symmetry_method: str | None = None,
                  hull_coverage: str | None = None, common: bool = False,
                  ci: float | None = None, seed: int | None = None,
                  exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query ehull-mae``: count, MAE, RMSE, mean and median signed Ehull error
        (meV/atom) and fraction underpredicted, per model and ``by`` group."""
        from mliapdb.analysis import queries

        edges = queries.parse_bins(bins) if isinstance(bins, str) else (
            list(bins) if bins is not None else None)
        return self._query(queries.ehull_mae, by=_by(by), model=model, kind=kind,
                           convention=convention, near_hull=near_hull, bins=edges,
                           dataset=dataset, settings_hash=settings, symprec=symprec,
                           symmetry_method=symmetry_method, hull_coverage=hull_coverage,
                           common=common, ci=ci, seed=seed,
                           exclude_suspicious=exclude_suspicious)

    def near_hull(self, threshold: float | None = None, by: str | Sequence[str] = "model",
                  model: str | None = None, kind: str = "relax",
                  convention: str = "dft-hull", hull_coverage: str | None = None,
                  common: bool = False, ci: float | None = None, seed: int | None = None,
                  exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query near-hull``: Ehull errors of the materials with DFT Ehull below
        ``threshold`` (eV/atom; default: the database's, 0.05)."""
        from mliapdb.analysis import queries

        return self._query(queries.near_hull, threshold=threshold, by=_by(by), model=model,
                           kind=kind, convention=convention, hull_coverage=hull_coverage,
                           common=common, ci=ci, seed=seed,
                           exclude_suspicious=exclude_suspicious)

    def energy_error(self, by: str | Sequence[str] = "model", model: str | None = None,
                     kind: str = "relax", convention: str = "dft-hull", common: bool = False,
                     ci: float | None = None, seed: int | None = None,
                     exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query energy-error``: total and formation energy errors (meV/atom)."""
        from mliapdb.analysis import queries

        return self._query(queries.energy_error, by=_by(by), model=model, kind=kind,
                           convention=convention, common=common, ci=ci, seed=seed,
                           exclude_suspicious=exclude_suspicious)

    def stability(self, by: str | Sequence[str] = "model", model: str | None = None,
                  kind: str = "relax", convention: str = "dft-hull", common: bool = False,
                  exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query stability``: TP/FP/TN/FN, precision, recall, F1, accuracy, DAF."""
        from mliapdb.analysis import queries

        return self._query(queries.stability, by=_by(by), model=model, kind=kind,
                           convention=convention, common=common,
                           exclude_suspicious=exclude_suspicious)

    def relax_effect(self, by: str | Sequence[str] = "model", model: str | None = None,
                     kind: str = "relax", convention: str = "dft-hull", common: bool = False,
                     ci: float | None = None, seed: int | None = None,
                     exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query relax-effect``: Ehull errors after the single point and after the
        relaxation of the same materials, and the relaxation energy (meV/atom)."""
        from mliapdb.analysis import queries

        return self._query(queries.relaxation_effect, by=_by(by), model=model, kind=kind,
                           convention=convention, common=common, ci=ci, seed=seed,
                           exclude_suspicious=exclude_suspicious)

    def symmetry(self, by: str | Sequence[str] = "model", model: str | None = None,
                 common: bool = False, exclude_suspicious: bool = False) -> pd.DataFrame:
        """``mliapdb query symmetry``: space group kept / lowered / raised, RMSD (Angstrom)."""
        from mliapdb.analysis import queries

        return self._query(queries.symmetry, by=_by(by), model=model, common=common,
                           exclude_suspicious=exclude_suspicious)

    def calculation_summary(self, model: str | None = None,
                            dataset: str | None = None) -> pd.DataFrame:
        """``mliapdb query calculations``: how many calculations per model, kind, settings
        and dataset ended ok, not converged or failed."""
        from mliapdb.analysis import queries

        return self._query(queries.calculation_summary, model=model, dataset=dataset)

    def _query(self, function, **options) -> pd.DataFrame:
        import pandas as pd

        from mliapdb.compute.relaxation import calc_kind

        if "kind" in options:
            options["kind"] = calc_kind(options["kind"])
        if "convention" in options:  # dft_hull is dft-hull
            options["convention"] = options["convention"].replace("_", "-")
        with self._connected() as con:
            result: QueryResult = function(con, **options)
        frame = pd.DataFrame(result.rows, columns=result.columns)
        frame.attrs["description"] = result.description
        frame.attrs["hint"] = result.hint
        return frame


def _frame(cursor) -> pd.DataFrame:
    """The rows of ``cursor`` as a DataFrame, JSON columns decoded (lists and dicts)."""
    import pandas as pd

    from mliapdb.store.database import fetch_decoded

    columns, rows = fetch_decoded(cursor)
    return pd.DataFrame(rows, columns=columns)


def _filters(values: dict[str, Any]) -> tuple[str, list]:
    """``col = ?`` for every given value (a list: ``col IN (...)``; None: no filter), and the
    parameters."""
    given = {k: v for k, v in values.items() if v is not None}
    where = [f"{k} IN (SELECT unnest(?::VARCHAR[]))" if isinstance(v, list) else f"{k} = ?"
             for k, v in given.items()]
    return " AND ".join(where or ["TRUE"]), list(given.values())


def _chemsys(chemsys: str | None) -> list[str] | None:
    """``"O-Mn"`` -> ``["Mn", "Mn-O", "O"]``: the chemical system and all its subsystems, as
    stored (elements sorted), so that a system's entries make a complete hull."""
    from itertools import combinations

    if not chemsys:
        return None
    elements = sorted({e.strip() for e in chemsys.split("-") if e.strip()})
    return ["-".join(c) for n in range(1, len(elements) + 1)
            for c in combinations(elements, n)]


def _by(by: str | Sequence[str]) -> str | tuple[str, ...]:
    """``--by`` value(s) as the queries take them (``dof_bin`` is ``dof-bin``)."""
    names = [by] if isinstance(by, str) else list(by)
    names = [b.replace("_", "-") for b in names]
    return names[0] if len(names) == 1 else tuple(names)
