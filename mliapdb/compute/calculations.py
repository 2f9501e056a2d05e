"""Run one model over stored materials: a single point on the DFT structure, a relaxation or
a symmetry-constrained relaxation, one row per (material, model, settings), committed in
batches (:mod:`mliapdb.compute.commits`) so that a killed run resumes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from mliapdb.compute.commits import CommitClock, CommitOptions, commit_options
from mliapdb.errors import MliapdbError
from mliapdb.store.database import (
    DatabaseLocked,
    Holder,
    insert_rows,
    lock_wait,
    now,
    transaction,
)
from mliapdb.store.tables import Calculation, ModelRow


@dataclass(frozen=True)
class Target:
    """A stored material to calculate."""

    dataset: str
    material_id: str
    formula: str
    nsites: int
    structure: str  # JSON


@dataclass(frozen=True)
class RunOptions:
    """How a run calculates (the ``mliapdb ingest relax`` options), for the serial path and the
    cluster alike.

    ``kind``: ``single_point``, ``relax`` or ``relax_fixsym`` (``single-point`` and
    ``relax-fixsym``, the CLI's spelling, are accepted too); ``settings_overrides``: relaxation
    settings (``fmax`` in eV/Angstrom, ``max_steps``, ...) over the model's defaults;
    ``threads``: torch CPU threads (None leaves torch's setting alone); ``engine``: ``ase`` or
    ``torch-sim`` (at most ``max_atoms`` atoms per batch); ``force``: run a model trained on
    another functional than PBE; ``checkpoint``/``as_name``: other weights, filed as a model of
    their own."""

    kind: str = "relax"
    device: str = "cpu"
    checkpoint: str | None = None
    as_name: str | None = None
    settings_overrides: dict | None = None
    retry_failed: bool = False
    threads: int | None = 1
    force: bool = False
    engine: str = "ase"
    max_atoms: int | None = None

    def __post_init__(self) -> None:
        from mliapdb.compute.relaxation import calc_kind

        object.__setattr__(self, "kind", calc_kind(self.kind))


@dataclass
class RunReport:
    model: str
    settings_hash: str
    n_selected: int = 0
    n_skipped: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    n_leftover_parts: int = 0
    """Parquet parts of an interrupted distributed run merged at the start."""


def select_targets(
    con: duckdb.DuckDBPyConnection,
    dataset: str | None = None,
    chemsys: str | None = None,
    material_ids: Sequence[str] = (),
    max_sites: int | None = None,
    limit: int | None = None,
    min_nelements: int | None = None,
) -> list[Target]:
    """Materials with an accepted DFT entry, smallest cells first (then by id).

    ``chemsys`` ("Mn-O-Y") selects every material whose elements are a subset of it, i.e.
    the whole chemical system with its subsystems, so that its hull is complete; an element
    the database holds no accepted entry of is refused (:func:`chemsys_elements`), as are
    limits and sizes below 1.
    """
    for option, value in (("--max-sites", max_sites), ("--limit", limit),
                          ("--min-nelements", min_nelements)):
        if value is not None and value < 1:
            raise MliapdbError(f"{option} must be 1 or more, got {value}")
    where = ["e.compat_status = 'ok'"]
    params: list = []
    if dataset:
        where.append("m.dataset = ?")
        params.append(dataset)
    if chemsys is not None:
        where.append("list_has_all(?, string_split(m.chemsys, '-'))")
        params.append(chemsys_elements(con, chemsys, dataset))
    if material_ids:
        where.append("m.material_id IN (SELECT unnest(?))")
        params.append(list(material_ids))
    if max_sites is not None:
        where.append("m.nsites <= ?")
        params.append(max_sites)
    if min_nelements is not None:
        where.append("m.nelements >= ?")
        params.append(min_nelements)
    sql = (
        "SELECT m.dataset, m.material_id, m.formula, m.nsites, m.structure FROM mp_materials m "
        "JOIN dft_entries e USING (dataset, material_id) WHERE " + " AND ".join(where) +
        " ORDER BY m.nsites, m.material_id, m.dataset"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = [Target(*r) for r in con.execute(sql, params).fetchall()]
    if material_ids:
        missing = sorted(set(material_ids) - {t.material_id for t in rows})
        if missing:
            raise MliapdbError(
                f"material id(s) not in the database: {', '.join(missing)} - "
                "ingest their entries first ('mliapdb ingest entries FILE')"
            )
    return rows


def chemsys_elements(con: duckdb.DuckDBPyConnection, chemsys: str,
                     dataset: str | None = None) -> list[str]:
    """The sorted element symbols of ``chemsys`` ("Mn-O-Y"); :class:`MliapdbError` for a
    malformed system, an unknown element symbol, or elements of which the database (or
    ``dataset``) holds no accepted entry: relaxing the rest would silently measure a
    different, smaller system."""
    from pymatgen.core.periodic_table import Element

    parts = [el.strip() for el in chemsys.split("-")]
    if not all(parts):
        raise MliapdbError(f"bad --chemsys {chemsys!r} - write it like Mn-O-Y")
    unknown = [el for el in parts if not Element.is_valid_symbol(el)]
    if unknown:
        raise MliapdbError(
            f"--chemsys {chemsys}: unknown element symbol(s) {', '.join(unknown)} - write it "
            "like Mn-O-Y (symbols as in the periodic table, e.g. Fe, not fe)"
        )
    elements = sorted(set(parts))
    sql = (
        "SELECT DISTINCT unnest(string_split(m.chemsys, '-')) FROM mp_materials m "
        "JOIN dft_entries e USING (dataset, material_id) WHERE e.compat_status = 'ok'"
    )
    held = {r[0] for r in con.execute(sql + (" AND m.dataset = ?" if dataset else ""),
                                      [dataset] if dataset else []).fetchall()}
    missing = [el for el in elements if el not in held]
    if missing:
        system = "-".join(elements)
        where = f"dataset '{dataset}'" if dataset else "the database"
        rest = "" if len(missing) == len(elements) else (
            f", or leave {', '.join(missing)} out of --chemsys"
        )
        raise MliapdbError(
            f"--chemsys {chemsys}: {where} holds no material with {', '.join(missing)} "
            f"(of {system}) - ingest the entries of {system} first ('mliapdb ingest entries "
            f"FILE' or 'mliapdb ingest mp --chemsys {system}'){rest}"
        )
    return elements


@dataclass(frozen=True)
class ModelIdentity:
    """What the rows of a run are filed under: ``spec`` (its name is the rows' ``model``;
    a derived spec for ``--as``), the ``checkpoint`` argument to load it with, and the
    checkpoint's sha256 (None where this process cannot read the checkpoint: a remote
    cluster's workers hash it, and each part is checked as it is merged)."""

    spec: Any
    checkpoint: str | None
    checkpoint_sha256: str | None


def model_identity(con: duckdb.DuckDBPyConnection, spec, checkpoint: str | None = None,
                   as_name: str | None = None, need_packages: bool = True,
                   unresolved_ok: bool = False) -> ModelIdentity:
    """Hash the checkpoint of a run and check, before anything is written, that its results
    may be filed under the model's name (:func:`check_identity`).

    The model's registered checkpoint (its metadata file's sha256, or, for a model whose
    weights the user gives and whose sha256 is not published, the one its ``models`` row
    recorded first) files under the model's name. Any other checkpoint needs ``as_name``:
    its results are stored as model ``as_name``, derived from ``spec``
    (:func:`mliapdb.compute.models.registry.derive_spec`). ``need_packages``: check that the model's
    packages are installed here (not for a remote cluster). ``unresolved_ok``: a checkpoint
    that cannot be found here gives a sha256 of None instead of an error."""
    from mliapdb.compute.models.registry import (
        CheckpointError,
        ModelSpecError,
        ModelUnavailableError,
        check_packages,
        checkpoint_sha256,
        derive_spec,
        given_checkpoint_sha256,
        resolve_checkpoint,
    )

    if as_name is not None and checkpoint is None:
        raise MliapdbError(
            f"--as {as_name} needs --checkpoint PATH: the checkpoint file whose results are "
            f"stored as model {as_name}"
        )
    try:
        if need_packages:
            check_packages(spec)
        try:
            if checkpoint is None:
                path, sha = resolve_checkpoint(spec), checkpoint_sha256(spec)
            else:
                path = resolve_checkpoint(spec, checkpoint)
                sha = given_checkpoint_sha256(spec, path)
        except CheckpointError:
            if unresolved_ok and as_name is None:
                return ModelIdentity(spec, checkpoint, None)
            raise
    except ModelUnavailableError as exc:
        raise MliapdbError(f"cannot load model {spec.name}: {exc}") from exc
    except OSError as exc:
        raise MliapdbError(
            f"cannot load model {spec.name}: cannot read checkpoint {checkpoint} "
            f"({exc.strerror or exc})"
        ) from exc
    if as_name is not None:
        try:
            spec = derive_spec(spec, as_name, path.resolve(), sha)
        except ModelSpecError as exc:
            raise MliapdbError(str(exc)) from exc
        checkpoint = None  # the derived spec's own file, whose sha256 loading checks
    check_identity(con, spec, sha, path)
    return ModelIdentity(spec, checkpoint, sha)


def _db_file(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return row[0] if row and row[0] else "the database"


def _short(sha: str | None) -> str:
    return f"{sha[:12]}..." if sha else "unknown"


def check_identity(con: duckdb.DuckDBPyConnection, spec, sha: str | None,
                   path: Any = None) -> None:
    """Refuse results of checkpoint ``path`` (sha256 ``sha``) under ``spec.name`` unless it
    is the model's checkpoint: the one its metadata records (where it records one) and the
    one of its ``models`` row, whose energy convention, functional, family and base model
    must match too. A refusal says to pass ``--as NAME``; nothing is written."""
    if sha is not None and spec.checkpoint_sha256 and sha != spec.checkpoint_sha256:
        raise MliapdbError(
            f"checkpoint {path} (sha256 {_short(sha)}) is not the checkpoint of model "
            f"{spec.name} ({spec.source} records sha256 {_short(spec.checkpoint_sha256)}): "
            f"its results are never filed under {spec.name} - pass --as NAME to store them "
            "as a model of their own"
        )
    row = con.execute(
        "SELECT checkpoint, checkpoint_sha256, energy_convention, functional, family, "
        "base_model FROM models WHERE name = ?", [spec.name]
    ).fetchone()
    if row is None:
        return
    reg_path, reg_sha, *fields = row
    new_name = "another --as NAME" if spec.base_model else "--as NAME"
    if sha is not None and reg_sha != sha:
        raise MliapdbError(
            f"model {spec.name} is registered in {_db_file(con)} with checkpoint {reg_path} "
            f"(sha256 {_short(reg_sha)}), not {path} (sha256 {_short(sha)}): results of "
            f"another checkpoint are never pooled with its rows - pass {new_name} to store "
            "them as a model of their own"
        )
    if (fields[3] or "") != spec.base_model:
        was = f"derived from {fields[3]}" if fields[3] else "a model of a metadata file"
        now_ = f"from {spec.base_model}" if spec.base_model else "without --as"
        raise MliapdbError(
            f"model {spec.name} in {_db_file(con)} is {was}, not {now_} - give the --model "
            f"it was made with, or pass {new_name}"
        )
    names = ("energy convention", "functional", "family")
    wanted = (spec.energy_convention, spec.functional, spec.family)
    for name, have, want in zip(names, fields[:3], wanted, strict=True):
        if (have or None) != (want or None):
            raise MliapdbError(
                f"model {spec.name} is registered in {_db_file(con)} with {name} {have!r}, "
                f"but {spec.source} gives {want!r}: its stored rows were made under the "
                f"other metadata - restore it, or store this run as another model with "
                f"{new_name}"
            )


def register_model(con: duckdb.DuckDBPyConnection, spec, calculator) -> None:
    """Insert the ``models`` row of ``spec`` (checkpoint path and sha256, packages, base
    model) unless it is there. A row is never rewritten: one of another checkpoint or
    metadata is refused (:func:`check_identity`), an equal one stays as first registered."""
    info = getattr(calculator, "mliapdb_info", {})
    sha = info.get("checkpoint_sha256", spec.checkpoint_sha256)
    check_identity(con, spec, sha, info.get("checkpoint", spec.checkpoint))
    if con.execute("SELECT 1 FROM models WHERE name = ?", [spec.name]).fetchone():
        return
    row = ModelRow(
        name=spec.name,
        family=spec.family,
        version=spec.version,
        checkpoint=str(info.get("checkpoint", spec.checkpoint)),
        checkpoint_sha256=sha,
        training_set=spec.training_set,
        functional=spec.functional,
        energy_convention=spec.energy_convention,
        package_versions=json.dumps(info.get("packages", {}), sort_keys=True),
        license=spec.license,
        citation=spec.citation,
        registered_at=now(),
        base_model=spec.base_model or None,
        trained_with_u=spec.trained_with_u,
    ).model_dump()
    with transaction(con):
        insert_rows(con, "models", [row])


def done_keys(con, model: str, settings_hash: str, retry_failed: bool) -> set[tuple[str, str]]:
    statuses = ("ok", "not_converged") if retry_failed else ("ok", "not_converged", "failed")
    rows = con.execute(
        "SELECT dataset, material_id FROM calculations WHERE model = ? AND settings_hash = ? "
        "AND status IN (SELECT unnest(?))",
        [model, settings_hash, list(statuses)],
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def calculation_row(target: Target, model: str, result, device: str,
                    checkpoint_sha256: str | None = None) -> dict:
    """A ``calculations`` row from a :class:`mliapdb.compute.relaxation.RelaxResult` (made with the
    checkpoint of sha256 ``checkpoint_sha256``)."""
    relaxed = result.relaxed_structure
    return Calculation(
        dataset=target.dataset,
        material_id=target.material_id,
        model=model,
        settings_hash=result.settings_hash,
        settings=json.dumps(result.settings, sort_keys=True),
        status=result.status,
        error=result.error,
        n_atoms=result.n_atoms,
        energy_single_point=result.energy_single_point,
        energy_relaxed=result.energy_relaxed,
        n_steps=result.n_steps,
        converged=bool(result.converged),
        max_force=result.max_force,
        stress=json.dumps(result.stress) if result.stress is not None else None,
        relaxed_structure=json.dumps(relaxed.as_dict()) if relaxed is not None else None,
        spacegroup_after=result.spacegroup_after,
        wall_time_s=result.wall_time_s,
        device=result.device or device,
        created_at=now(),
        calc_kind=result.calc_kind,
        engine=result.engine,
        spacegroup_before=result.spacegroup_before,
        rmsd=result.rmsd,
        volume_ratio=result.volume_ratio,
        checkpoint_sha256=checkpoint_sha256,
    ).model_dump()


def check_batched(spec, settings) -> None:
    """Refuse, before any work, a model or settings the batched path cannot run."""
    from mliapdb.compute.batched import BatchedUnsupported, check_batched_settings
    from mliapdb.compute.models.batched_factories import batched_support

    supported, reason = batched_support(spec)
    if not supported:
        raise MliapdbError(reason)
    try:
        check_batched_settings(settings)
    except BatchedUnsupported as exc:
        raise MliapdbError(f"model {spec.name}: {exc}") from exc


def model_settings(model: str, kind: str = "relax", overrides: dict | None = None):
    """(spec, settings) of ``model`` for calculation ``kind`` with ``overrides``; one-line
    :class:`MliapdbError` for an unknown model or bad settings."""
    from mliapdb.compute.models.registry import UnknownModelError, get_model_spec

    try:
        spec = get_model_spec(model)
    except UnknownModelError as exc:
        raise MliapdbError(str(exc)) from exc
    try:
        return spec, resolve_settings(spec, kind, overrides)
    except ValueError as exc:
        raise MliapdbError(f"model {model}: bad relaxation settings: {exc}") from exc


def prepare_run(model: str, kind: str, overrides: dict | None, engine: str, force: bool,
                targets: Sequence[Target]):
    """The checks every run makes before any work (functional, engine, something to do);
    returns (spec, settings)."""
    from mliapdb.compute.batched import ENGINES

    spec, settings = model_settings(model, kind, overrides)
    check_functional(spec, force)
    if engine not in ENGINES:
        raise MliapdbError(f"unknown engine {engine!r} - use one of {', '.join(ENGINES)}")
    if engine == "torch-sim":
        check_batched(spec, settings)
    if not targets:
        raise MliapdbError(
            "no stored materials match the selection - ingest their entries first "
            "('mliapdb ingest entries FILE') or widen --chemsys/--max-sites/--dataset"
        )
    return spec, settings


DFT_FUNCTIONAL = "PBE"
"""MP's GGA/GGA+U entries are PBE (+U): a model's ``functional`` must name it to be compared."""


def check_functional(spec, force: bool = False) -> None:
    """Refuse a model trained on another functional than the DFT data (e.g. r2SCAN)."""
    if force or spec.functional.upper().startswith(DFT_FUNCTIONAL):
        return
    raise MliapdbError(
        f"model {spec.name} predicts {spec.functional} energies, but the stored DFT entries "
        f"and hulls are GGA/GGA+U ({DFT_FUNCTIONAL}): its errors would measure the functional, "
        "not the model - use a PBE model, or pass --force to store it anyway"
    )


def resolve_settings(spec, kind: str = "relax", overrides: dict | None = None):
    """The model's default :class:`~mliapdb.compute.relaxation.RelaxSettings` with
    ``overrides``, made calculation ``kind``. Raises ``ValueError`` for bad settings."""
    from mliapdb.compute.relaxation import RelaxSettings

    return RelaxSettings.for_kind(kind, {**spec.relax, **(overrides or {})})


def check_device(device: str) -> None:
    """Refuse a torch device that this machine does not have, before loading any model."""
    import torch

    if device == "cpu":
        return
    try:
        torch.empty(1, device=device)
    except (AssertionError, RuntimeError) as exc:
        raise MliapdbError(
            f"device '{device}' is not available here ({str(exc).splitlines()[0]}) - "
            "use --device cpu"
        ) from exc


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op CPU threads for the block (restored afterwards)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_model(spec, engine: str = "ase", device: str = "cpu", checkpoint: str | None = None):
    """The model of ``spec`` for ``engine``: an ASE calculator, or a torch-sim model; either
    carries ``mliapdb_info`` (checkpoint sha256, package versions). One-line
    :class:`MliapdbError` when it cannot be loaded."""
    from mliapdb.compute.models.registry import (
        ModelSpecError,
        ModelUnavailableError,
        make_calculator,
    )

    try:
        if engine == "torch-sim":
            from mliapdb.compute.models.batched_factories import make_batched_model

            return make_batched_model(spec, device=device, checkpoint=checkpoint)
        return make_calculator(spec, device=device, checkpoint=checkpoint)
    except (ModelUnavailableError, ModelSpecError, FileNotFoundError, ValueError) as exc:
        raise MliapdbError(f"cannot load model {spec.name}: {exc}") from exc


def calculate(
    model: Any,
    targets: Sequence[Target],
    settings,
    engine: str = "ase",
    max_atoms: int | None = None,
) -> Iterator[tuple[Target, Any]]:
    """``(target, RelaxResult)`` for each target, with a model from :func:`load_model`: one
    at a time in order (ASE), or as each leaves the batch (torch-sim)."""
    from pymatgen.core import Structure

    structures = (Structure.from_dict(json.loads(t.structure)) for t in targets)
    if engine == "torch-sim":
        from mliapdb.compute.batched import relax_batched

        results = relax_batched(list(structures), model, settings, max_atoms)
        for index, result in results:
            yield targets[index], result
        return
    from mliapdb.compute.relaxation import relax_structure

    for target, structure in zip(targets, structures, strict=True):
        yield target, relax_structure(structure, model, settings)


def _run(holder, spec, todo, device, identity, settings, report, progress, on_result, engine,
         max_atoms, commit=None, spill=None) -> None:
    """Calculate ``todo`` with the database closed, committing the results in batches of
    ``commit`` (:func:`mliapdb.compute.commits.commit_options`) in short holds of ``holder``
    (:class:`mliapdb.store.database.Holder`); on an exception (Ctrl-C included) the batch
    computed so far is committed before it propagates."""
    import time

    start = time.perf_counter()
    model = load_model(spec, engine, device, identity.checkpoint)
    sha = getattr(model, "mliapdb_info", {}).get("checkpoint_sha256", identity.checkpoint_sha256)
    if identity.checkpoint_sha256 is not None and sha != identity.checkpoint_sha256:
        raise MliapdbError(
            f"checkpoint of model {spec.name} changed while it was loaded (sha256 "
            f"{_short(identity.checkpoint_sha256)}, now {_short(sha)}) - run again"
        )

    def committed(items) -> None:
        for target, result in items:
            report.status_counts[result.status] = report.status_counts.get(result.status, 0) + 1
            if on_result is not None:
                on_result(target, result)

    batches = ResultBatches(holder, spec, model, commit_options(commit, holder.short), committed,
                            spill=None if spill is None else lambda rows: spill(rows, model))
    label = spec.name if engine == "ase" else f"{spec.name} ({engine})"
    results = calculate(model, todo, settings, engine, max_atoms)
    try:
        for target, result in progress(results, len(todo), label):
            batches.add(target, result, calculation_row(target, spec.name, result, device, sha))
    except BaseException as exc:
        try:
            if not batches.failed:
                batches.commit()
        except MliapdbError as failed:  # the run's own error goes on; this one is said
            lock_wait().on_wait(f"not committed: {failed}")
        report.wall_time_s = time.perf_counter() - start
        raise exc
    batches.commit()
    report.wall_time_s = time.perf_counter() - start


def replace_calculations(con, rows) -> int:
    """Write ``calculations`` rows (dicts from :func:`calculation_row`, or an Arrow table of
    some of its columns) in one transaction, replacing stored rows of the same primary key
    (dataset, material id, model, settings hash) and bumping their generation markers;
    returns how many."""
    import pyarrow as pa

    from mliapdb.store.generations import bump_calculations

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    if table.num_rows == 0:
        return 0
    cols = ", ".join(table.column_names)
    key = [column.name for column in Calculation.__table__.primary_key.columns]
    match = " AND ".join(f"c.{k} = p.{k}" for k in key)
    _mliapdb_rows = table  # noqa: F841  (read by DuckDB's replacement scan, by name)
    with transaction(con):
        con.execute(f"DELETE FROM calculations AS c USING _mliapdb_rows AS p WHERE {match}"
                    ).fetchall()
        con.execute(f"INSERT INTO calculations ({cols}) SELECT {cols} FROM _mliapdb_rows"
                    ).fetchall()
        bump_calculations(con, table)
    return table.num_rows


class ResultBatches:
    """The result rows of a serial run (``calculations`` dicts), committed in batches in short
    holds of ``holder``; the model's ``models`` row goes in with the first batch
    (:func:`mliapdb.compute.calculations.register_model`). ``on_committed(items)`` gets the
    ``(target, result)`` pairs of each batch after its hold ended. ``spill(rows)`` writes rows
    no commit could store (the file stayed locked) where the next run finds them and returns
    that path."""

    def __init__(self, holder: Holder, spec, model: Any, options: CommitOptions,
                 on_committed: Callable[[list[tuple[Any, Any]]], None],
                 spill: Callable[[list[dict]], Path] | None = None,
                 on_status: Callable[[str], None] | None = None) -> None:
        self.holder = holder
        self.spec = spec
        self.model = model
        self.clock = CommitClock(options)
        self.on_committed = on_committed
        self.spill = spill
        self.on_status = on_status
        self.registered = False
        self.failed = False
        """True when the last commit raised (the run stops; its batch is not tried again)."""
        self.rows: list[dict] = []
        self.items: list[tuple[Any, Any]] = []

    def add(self, target: Any, result: Any, row: dict) -> None:
        """One more result; commits the batch when it is due."""
        self.rows.append(row)
        self.items.append((target, result))
        self.clock.add()
        if self.clock.due():
            self.commit(final=False)

    def commit(self, final: bool = True) -> None:
        """Commit the uncommitted rows in one hold. Not ``final``: a file that stays locked
        keeps them for the next batch. ``final``: it spills them (:attr:`spill`) and raises."""
        if not self.rows:
            return
        self.failed = True  # until this commit ends: an error here is not retried
        try:
            with self.holder.held() as con:
                if not self.registered:
                    register_model(con, self.spec, self.model)
                    self.registered = True
                replace_calculations(con, self.rows)
        except DatabaseLocked as exc:
            if not final:
                self.failed = False
                (self.on_status or lock_wait().on_wait)(
                    f"{exc.path}: could not commit {len(self.rows)} result(s) yet (the file "
                    "stayed locked); keeping them for the next commit")
                return
            if self.spill is None:
                raise
            where = self.spill(self.rows)
            self.rows, self.items = [], []
            self.clock.reset()
            raise MliapdbError(
                f"{exc} - the results not committed are kept in {where}, and the next "
                f"'mliapdb ingest relax --model {self.spec.name}' with these settings merges "
                "them") from exc
        self.failed = False
        items, self.rows, self.items = self.items, [], []
        self.clock.reset()
        self.on_committed(items)
