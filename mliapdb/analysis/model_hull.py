"""The model-hull conventions: convex hulls rebuilt from one model's own energies.

For each (dataset, model, settings hash, calculation kind) with usable model energies
(``stg_model_energies.e_per_atom_model``: MP2020-corrected footing, eV/atom), two hulls:

* ``refs = "model"``: every entry with a model energy, elements included, so the elemental
  references are the model's lowest elemental energies;
* ``refs = "dft"``: the compounds' model energies against the DFT elemental entries (the
  formation energies use DFT references); elemental materials get no row.

A material's row is ``complete`` when every accepted DFT entry of every subsystem of its
chemical system (elements included for ``"model"``) has a model energy: only then is its hull
the one the model predicts for all competing phases. Missing entries (failed or unconverged
relaxations) can only raise the hull and lower the model's Ehull, so the statistics views
count complete rows only by default.

Fill-ins (``stg_model_fill_energies``): an entry whose relaxation failed or did not converge
enters the hull with the lowest energy the model reached for it (single point on the DFT
structure, or the last step), an upper bound of the model's own minimum; it gets no row of its
own. An entry with no model energy at all (the single point failed) whose DFT Ehull is at
least :data:`FAR_ABOVE_HULL` is assumed to lie off the model's hull. ``complete_filled``
says a material's system is complete once fill-ins count (the
statistics count those rows too when the database setting ``model_hull_coverage`` is
``filled``). A strictly complete material has no fill-in in its system, so its values are the
same with or without them.

Each build records the generation markers it was built from (:mod:`mliapdb.store.generations`)
and the model's signature; the views serve a build only while they are the current ones
(``stg_model_hull_status``), so a hull is never served stale. :func:`rebuild_model_hulls`
rebuilds the stale ones (``mliapdb ingest`` does at the end of every run; ``mliapdb ingest
hulls`` on demand), only for the materials the changed chemical systems reach
(:mod:`mliapdb.materials.chemsys`) where the markers say which. Each build also stores the
hash fingerprint of its inputs (``stg_model_hull_inputs``) for ``ingest hulls --verify``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from mliapdb.store.database import duckdb_version, insert_rows, now, transaction

FAR_ABOVE_HULL = 0.2
"""eV/atom: an entry with no model energy at all (calculation failed before any energy)
whose DFT Ehull is at least this is assumed not to lie on the model's hull, so it does not
make its supersystems incomplete under fill-ins (``complete_filled``). 0.2 eV/atom is several
times the Ehull MAE of any MLIAP measured here."""

REFS = ("model", "dft")
"""Elemental references of the model-hull conventions (``model-hull``, ``model-hull-dft-refs``)."""


@dataclass(frozen=True)
class HullKey:
    dataset: str
    model: str
    settings_hash: str
    calc_kind: str


@dataclass
class BuildReport:
    key: HullKey
    n_entries: int
    n_complete: int
    n_filled: int = 0
    n_complete_filled: int = 0
    n_rebuilt: int | None = None  # materials recomputed (None: the whole hull)


def stale_builds(
    con: duckdb.DuckDBPyConnection, inputs: str, builds: str
) -> tuple[list[tuple[HullKey, str]], list[HullKey]]:
    """By hash fingerprint (``mliapdb ingest hulls --verify``): (keys of view ``inputs``
    whose build in table ``builds`` is missing or has another fingerprint, with the current
    one; keys built whose inputs are gone). ``inputs`` and ``builds`` are names from this
    package, never user text."""
    rows = con.execute(
        "SELECT i.dataset, i.model, i.settings_hash, i.calc_kind, i.fingerprint "
        f"FROM {inputs} i LEFT JOIN {builds} b "
        "USING (dataset, model, settings_hash, calc_kind) "
        "WHERE b.fingerprint IS DISTINCT FROM i.fingerprint "
        "OR b.duckdb_version IS DISTINCT FROM version() ORDER BY ALL"
    ).fetchall()
    gone = con.execute(
        f"SELECT b.dataset, b.model, b.settings_hash, b.calc_kind FROM {builds} b "
        f"ANTI JOIN {inputs} i USING (dataset, model, settings_hash, calc_kind) ORDER BY ALL"
    ).fetchall()
    return [(HullKey(*r[:4]), r[4]) for r in rows], [HullKey(*r) for r in gone]


@dataclass(frozen=True)
class Plan:
    """One build to make: ``touched`` = the chemical systems changed since the stored build
    (None: rebuild whole); the generations it is built from."""

    key: HullKey
    touched: frozenset[str] | None
    dft_generation: int
    calc_generation: int


def plan(con: duckdb.DuckDBPyConnection, status: str) -> tuple[list[Plan], list[HullKey]]:
    """(builds to make, builds whose key has no generation any more) from the status view
    ``status`` (``stg_model_hull_status`` or ``stg_error_row_status``, names from this
    package): the stale keys with what changed since their build (generation markers,
    :mod:`mliapdb.store.generations`)."""
    from mliapdb.store.generations import Scope, touched_since

    rows = con.execute(
        "SELECT dataset, model, settings_hash, calc_kind, dft_generation, calc_generation, "
        "built_dft_generation, built_calc_generation, same_inputs "
        f"FROM {status} WHERE NOT fresh ORDER BY ALL").fetchall()
    plans = []
    for ds, model, shash, kind, dft_g, calc_g, b_dft, b_calc, same in rows:
        key = HullKey(ds, model, shash, kind)
        touched = None
        if same:
            dft = touched_since(con, Scope(ds), b_dft, dft_g)
            calc = touched_since(con, Scope(ds, model, shash, kind), b_calc, calc_g)
            if dft is not None and calc is not None:
                touched = frozenset(dft | calc)
        plans.append(Plan(key, touched, int(dft_g), int(calc_g)))
    builds = "model_hull_builds" if status == "stg_model_hull_status" else "ehull_error_builds"
    gone = con.execute(
        f"SELECT b.dataset, b.model, b.settings_hash, b.calc_kind FROM {builds} b "
        "ANTI JOIN stg_generations g USING (dataset, model, settings_hash, calc_kind) "
        "ORDER BY ALL").fetchall()
    return plans, [HullKey(*r) for r in gone]


def stale_keys(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[HullKey, None]], list[HullKey]]:
    """(model hulls the views cannot serve now, builds whose inputs are gone), by generation
    markers."""
    plans, gone = plan(con, "stg_model_hull_status")
    return [(p.key, None) for p in plans], gone


def stale_keys_by_hash(
    con: duckdb.DuckDBPyConnection,
) -> tuple[list[tuple[HullKey, str]], list[HullKey]]:
    """By hash fingerprint (``--verify``): (model hulls whose stored build differs from its
    inputs, with their current fingerprint; builds whose inputs are gone)."""
    return stale_builds(con, "stg_model_hull_inputs", "model_hull_builds")


def n_stale(con: duckdb.DuckDBPyConnection) -> int:
    """How many model hulls the views cannot serve now (missing or stale builds)."""
    (n,) = con.execute("SELECT count(*) FROM stg_model_hull_status WHERE NOT fresh").fetchone()
    return int(n)


def rebuild_model_hulls(
    con: duckdb.DuckDBPyConnection, keys: Sequence[HullKey] | None = None
) -> list[BuildReport]:
    """Rebuild every stale model hull (or only ``keys`` among them), each in one transaction,
    only the touched chemical systems and their supersystems where the generation markers
    say which; delete builds whose inputs are gone. Returns what was built."""
    return refresh_stale(con, "stg_model_hull_status", "stg_model_hull_inputs", _delete,
                         _build, keys)


def refresh_stale(con: duckdb.DuckDBPyConnection, status: str, inputs_view: str, delete,
                  build, keys: Sequence[HullKey] | None = None) -> list:
    """Plan the stale builds of status view ``status`` (:func:`plan`) and make them with
    ``build(con, plan, fingerprint, inputs)``: the hash fingerprint of view ``inputs_view``
    (recorded for ``--verify``) and the :class:`DatasetInputs` shared by all builds of the
    refresh. Names are from this package, never user text."""
    plans, gone = plan(con, status)
    if not plans and not gone:
        return []
    inputs = DatasetInputs(con)
    fingerprints = {HullKey(*r[:4]): r[4] for r in con.execute(
        "SELECT dataset, model, settings_hash, calc_kind, fingerprint "
        f"FROM {inputs_view}").fetchall()} if plans else {}
    return rebuild_stale(con, (plans, gone), delete,
                         lambda c, p: build(c, p, fingerprints.get(p.key), inputs), keys)


def rebuild_stale(con, stale, delete, build, keys=None) -> list:
    """The refresh shared by the derived tables: ``stale`` = (plans of builds to make, keys
    whose inputs are gone); ``delete(con, key)`` each gone one and ``build(con, plan)`` each
    planned one (or only ``keys`` among them), one transaction each. Returns what ``build``
    returned (None results left out: nothing to build)."""
    to_build, gone = stale
    for key in gone:
        with transaction(con):
            delete(con, key)
    out = []
    for p in to_build:
        if keys is not None and p.key not in keys:
            continue
        with transaction(con):
            built = build(con, p)
        if built is not None:
            out.append(built)
    return out


class DatasetInputs:
    """The DFT side of every model hull of a dataset, read and decoded once per refresh and
    shared by its builds: accepted entries (material id, composition, corrected energy
    eV/atom, DFT Ehull eV/atom, chemsys), element masks, and the reach of touched chemical
    systems (:func:`mliapdb.materials.chemsys.reach`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._rows: dict[str, list[tuple]] = {}
        self._comps: dict[str, list[dict]] = {}
        self._reach: dict[tuple[str, frozenset[str]], object] = {}

    def rows(self, dataset: str) -> list[tuple]:
        if dataset not in self._rows:
            self._rows[dataset] = self.con.execute(
                "SELECT m.material_id, m.composition, e.energy_corrected / e.n_atoms, "
                "h.e_above_hull, m.chemsys "
                "FROM mp_materials m JOIN dft_entries e USING (dataset, material_id) "
                "LEFT JOIN dft_hull h USING (dataset, material_id) "
                "WHERE m.dataset = ? AND e.compat_status = 'ok' ORDER BY m.material_id",
                [dataset],
            ).fetchall()
            self._comps[dataset] = [json.loads(r[1]) for r in self._rows[dataset]]
        return self._rows[dataset]

    def comps(self, dataset: str) -> list[dict]:
        self.rows(dataset)
        return self._comps[dataset]

    def reach(self, dataset: str, touched: frozenset[str]):
        """The :class:`mliapdb.materials.chemsys.Reach` of ``touched`` in ``dataset``; chemical
        systems of every material (rejected entries too: their calculations count)."""
        from mliapdb.materials.chemsys import reach

        if (dataset, touched) not in self._reach:
            chemsys_of = dict(self.con.execute(
                "SELECT material_id, chemsys FROM mp_materials WHERE dataset = ?",
                [dataset]).fetchall())
            self._reach[(dataset, touched)] = reach(chemsys_of, touched)
        return self._reach[(dataset, touched)]


INCREMENTAL_SHARE = 0.5
"""Above this share of a dataset's materials reached by a change, a build is made whole."""


def _delete(con: duckdb.DuckDBPyConnection, key: HullKey) -> None:
    params = [key.dataset, key.model, key.settings_hash, key.calc_kind]
    where = "dataset = ? AND model = ? AND settings_hash = ? AND calc_kind = ?"
    con.execute(f"DELETE FROM model_hull WHERE {where}", params).fetchall()
    con.execute(f"DELETE FROM model_hull_builds WHERE {where}", params).fetchall()


def _masks(compositions: list[dict]) -> tuple[list[int], dict[str, int]]:
    """Element bit masks of compositions (one bit per element)."""
    bits: dict[str, int] = {}
    masks = []
    for comp in compositions:
        mask = 0
        for el, amount in comp.items():
            if amount > 0:
                mask |= 1 << bits.setdefault(el, len(bits))
        masks.append(mask)
    return masks, bits


def _subsets(mask: int) -> list[int]:
    """Non-empty sub-masks of ``mask``."""
    out, sub = [], mask
    while sub:
        out.append(sub)
        sub = (sub - 1) & mask
    return out


def _ids_table(ids) -> object:
    """An Arrow table of material ids (read by name from SQL as ``_mliapdb_ids``)."""
    import pyarrow as pa

    return pa.table({"material_id": pa.array(sorted(ids), pa.string())})


def _build(con: duckdb.DuckDBPyConnection, p: Plan, fingerprint: str | None,
           inputs: DatasetInputs) -> BuildReport | None:
    """Make the build ``p``: whole, or only the rows of the materials its touched chemical
    systems reach (computed from the closure of their subsystems, the same values). None
    when the key has no calculations left (its build is deleted)."""
    from mliapdb.materials.hull import compute_hull

    key = p.key
    params = [key.dataset, key.model, key.settings_hash, key.calc_kind]
    where = "dataset = ? AND model = ? AND settings_hash = ? AND calc_kind = ?"
    signature = con.execute(
        "SELECT model_signature FROM stg_generations WHERE " + where, params).fetchone()
    if fingerprint is None or signature is None:  # no calculations (left)
        _delete(con, key)
        return None
    dft_rows = inputs.rows(key.dataset)
    dft_comps = inputs.comps(key.dataset)
    affected = None
    if p.touched is not None:
        got = inputs.reach(key.dataset, p.touched)
        if len(got.affected) <= INCREMENTAL_SHARE * max(len(dft_rows), 1):
            affected, closure = got.affected, got.closure
            keep = [i for i, r in enumerate(dft_rows) if r[0] in closure]
            dft_rows = [dft_rows[i] for i in keep]
            dft_comps = [dft_comps[i] for i in keep]
    _mliapdb_ids = _ids_table(closure if affected is not None else ())  # noqa: F841
    only = " AND e.material_id IN (SELECT material_id FROM _mliapdb_ids)" if affected is not \
        None else ""
    model_rows = con.execute(
        "SELECT e.material_id, m.composition, e.e_per_atom_model FROM stg_model_energies e "
        "JOIN mp_materials m USING (dataset, material_id) WHERE e.dataset = ? AND e.model = ? "
        "AND e.settings_hash = ? AND e.calc_kind = ? AND e.e_per_atom_model IS NOT NULL"
        + only + " ORDER BY e.material_id", params,
    ).fetchall()
    fill_rows = con.execute(
        "SELECT e.material_id, m.composition, e.e_per_atom_fill FROM stg_model_fill_energies e "
        "JOIN mp_materials m USING (dataset, material_id) WHERE e.dataset = ? AND e.model = ? "
        "AND e.settings_hash = ? AND e.calc_kind = ?" + only + " ORDER BY e.material_id",
        params,
    ).fetchall()
    model_ids = {r[0] for r in model_rows}
    filled_ids = model_ids | {r[0] for r in fill_rows}
    masks, bits = _masks(dft_comps)
    mask_of = {r[0]: m for r, m in zip(dft_rows, masks, strict=True)}
    single = {1 << b for b in bits.values()}
    missing_all = {m for r, m in zip(dft_rows, masks, strict=True) if r[0] not in model_ids}
    missing_compounds = missing_all - single
    # an entry the model gave no energy at all counts as off the hull for complete_filled
    # when DFT puts it far above the hull (a crashed or refused calculation, e.g. CHGNet on a
    # structure with isolated atoms)
    off_hull = {r[0] for r in dft_rows if r[3] is not None and r[3] >= FAR_ABOVE_HULL}
    unfilled_all = {m for r, m in zip(dft_rows, masks, strict=True)
                    if r[0] not in filled_ids and r[0] not in off_hull}
    unfilled_compounds = unfilled_all - single

    def complete(material_id: str, missing: set[int]) -> bool:
        if not missing:
            return True
        return not any(sub in missing for sub in _subsets(mask_of[material_id]))

    rows = []
    if model_rows:
        # the model's entries first, then the fill-ins (which get no row of their own)
        hull_rows = model_rows + fill_rows
        comps = [json.loads(r[1]) for r in hull_rows]
        energies = [r[2] for r in hull_rows]
        own = compute_hull(comps, energies)
        for i, r in enumerate(model_rows):
            if affected is not None and r[0] not in affected:
                continue  # an input only: its row is unchanged
            rows.append(_row(key, "model", r[0], energies[i], own, i,
                             complete(r[0], missing_all), complete(r[0], unfilled_all)))
        # DFT elemental references: compounds' model energies + DFT elemental entries
        compound = [i for i, c in enumerate(comps) if sum(v > 0 for v in c.values()) > 1]
        elements = [i for i, c in enumerate(dft_comps) if sum(v > 0 for v in c.values()) == 1]
        if any(i < len(model_rows) for i in compound):
            mixed = compute_hull(
                [comps[i] for i in compound] + [dft_comps[j] for j in elements],
                [energies[i] for i in compound] + [dft_rows[j][2] for j in elements],
            )
            for k, i in enumerate(compound):
                if i >= len(model_rows):
                    break  # fill-ins come last
                r = model_rows[i]
                if affected is not None and r[0] not in affected:
                    continue
                rows.append(_row(key, "dft", r[0], energies[i], mixed, k,
                                 complete(r[0], missing_compounds),
                                 complete(r[0], unfilled_compounds)))
    if affected is None:
        _delete(con, key)
    else:
        _mliapdb_ids = _ids_table(affected)  # noqa: F841
        con.execute(f"DELETE FROM model_hull WHERE {where} AND material_id IN "
                    "(SELECT material_id FROM _mliapdb_ids)", params).fetchall()
        con.execute(f"DELETE FROM model_hull_builds WHERE {where}", params).fetchall()
    insert_rows(con, "model_hull", rows)
    n_entries, n_complete, n_complete_filled = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE complete), "
        f"count(*) FILTER (WHERE complete_filled) FROM model_hull WHERE {where} "
        "AND refs = 'model'", params).fetchone()
    (n_filled,) = con.execute(
        f"SELECT count(*) FROM stg_model_fill_energies WHERE {where}", params).fetchone()
    insert_rows(con, "model_hull_builds", [{
        "dataset": key.dataset, "model": key.model, "settings_hash": key.settings_hash,
        "calc_kind": key.calc_kind, "fingerprint": fingerprint,
        "n_entries": int(n_entries), "n_complete": int(n_complete), "built_at": now(),
        "n_filled": int(n_filled), "n_complete_filled": int(n_complete_filled),
        "duckdb_version": duckdb_version(con), "dft_generation": p.dft_generation,
        "calc_generation": p.calc_generation, "model_signature": signature[0],
    }])
    return BuildReport(key, int(n_entries), int(n_complete), int(n_filled),
                       int(n_complete_filled), None if affected is None else len(affected))


def _row(key: HullKey, refs: str, material_id: str, e_per_atom: float, result, i: int,
         complete: bool, complete_filled: bool) -> dict:
    def num(x: float) -> float | None:
        return None if x != x else float(x)  # NaN -> NULL (no elemental reference)

    return {
        "dataset": key.dataset, "model": key.model, "settings_hash": key.settings_hash,
        "calc_kind": key.calc_kind, "refs": refs, "material_id": material_id,
        "e_per_atom": float(e_per_atom), "e_ref_per_atom": num(result.e_ref_per_atom[i]),
        "e_form_per_atom": num(result.e_form_per_atom[i]),
        "e_above_hull": num(result.e_above_hull[i]), "complete": bool(complete),
        "complete_filled": bool(complete_filled),
    }
