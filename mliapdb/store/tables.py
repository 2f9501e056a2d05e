"""SQLModel classes for the tables of ``schema/migrations`` (the SQL files are the source of
truth; ``tests/test_db.py`` checks that these classes match the migrated database).

Energies are eV per cell; JSON columns hold JSON text.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class SourceFile(SQLModel, table=True):
    __tablename__ = "source_files"
    sha256: str = Field(primary_key=True)
    path: str
    dataset: str = Field(primary_key=True)
    n_entries: int
    ingested_at: datetime


class MpApiFetch(SQLModel, table=True):
    """One chemical system (with its subsystems) fetched from the MP API into a dataset."""

    __tablename__ = "mp_api_fetches"
    sha256: str = Field(primary_key=True)  # of the canonical JSON of the fetched entries
    dataset: str = Field(primary_key=True)
    chemsys: str
    db_version: str | None = None  # MP database version the API served (its /heartbeat)
    endpoint: str
    thermo_type: str
    client: str  # "mp-api 0.46.5"
    n_entries: int
    n_skipped: int  # entries left out: no structure, or not GGA/GGA+U
    fetched_at: datetime


class MpApiPage(SQLModel, table=True):
    """One committed page of ``ingest mp --all`` (documents ``page_skip`` to ``page_skip +
    n_docs - 1`` of the ``total_doc`` the whole-MP query claimed) in a dataset."""

    __tablename__ = "mp_api_pages"
    dataset: str = Field(primary_key=True)
    page_skip: int = Field(primary_key=True)  # _skip of the page's request
    page_limit: int  # _limit of the page's request
    n_docs: int  # documents served (n_entries + n_skipped)
    total_doc: int  # documents the query claimed (meta.total_doc)
    n_entries: int
    n_skipped: int  # documents left out: no structure, or not GGA/GGA+U
    sha256: str  # of the canonical JSON of the page's entries (its source_files row)
    material_ids: str  # JSON list of the served document ids, in order
    db_version: str | None = None  # MP database version the API served (its /heartbeat)
    endpoint: str
    thermo_type: str
    client: str
    fetched_at: datetime


class MpMaterial(SQLModel, table=True):
    """A Materials Project material of a dataset, with its DFT-relaxed structure."""

    __tablename__ = "mp_materials"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    formula: str
    formula_full: str
    chemsys: str
    nelements: int
    nsites: int
    composition: str  # JSON {element: amount}
    structure: str  # JSON, pymatgen Structure.as_dict()
    fingerprint: str  # sha256 of raw energy + structure, to detect conflicting re-ingests


class DftEntry(SQLModel, table=True):
    """DFT energies of a material (eV per cell): raw, MP2020 correction, corrected."""

    __tablename__ = "dft_entries"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    entry_id: str | None = None
    task_id: str | None = None
    n_atoms: int
    energy_raw: float
    correction_mp2020: float | None = None
    energy_corrected: float | None = None
    correction_in_source: float | None = None
    compat_status: str  # "ok" or "rejected"
    compat_message: str | None = None
    run_type: str | None = None
    is_hubbard: bool | None = None
    hubbards: str | None = None  # JSON
    potcar_spec: str | None = None  # JSON
    oxide_type: str | None = None
    mp_last_updated: str | None = None
    source_file: str
    source_sha256: str


class SymmetryAnalysisRow(SQLModel, table=True):
    __tablename__ = "symmetry_analyses"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    symprec: float = Field(primary_key=True)
    method: str = Field(primary_key=True)
    angle_tolerance: float | None = None
    library_version: str
    spacegroup_number: int
    spacegroup_symbol: str
    crystal_system: str
    pearson_symbol: str
    protostructure_label: str
    lattice_dof: int
    wyckoff_dof: int
    dof: int


class WyckoffOrbitRow(SQLModel, table=True):
    __tablename__ = "wyckoff_orbits"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    symprec: float = Field(primary_key=True)
    method: str = Field(primary_key=True)
    orbit_index: int = Field(primary_key=True)
    element: str
    wyckoff_letter: str
    multiplicity: int
    site_symmetry: str
    n_free: int


class DftHullRow(SQLModel, table=True):
    """Formation energy and energy above hull (eV/atom), MP2020-corrected."""

    __tablename__ = "dft_hull"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    e_per_atom: float
    e_ref_per_atom: float | None = None
    e_form_per_atom: float | None = None
    e_above_hull: float | None = None
    computed_at: datetime


class ModelRow(SQLModel, table=True):
    __tablename__ = "models"
    name: str = Field(primary_key=True)
    family: str
    version: str
    checkpoint: str
    checkpoint_sha256: str | None = None
    training_set: str | None = None
    functional: str | None = None
    energy_convention: str  # "raw" or "mp2020_corrected"
    package_versions: str | None = None  # JSON
    license: str | None = None
    citation: str | None = None
    registered_at: datetime
    base_model: str | None = None  # the model a derived model (--as) came from
    trained_with_u: bool | None = None  # False: trained without +U (compared on GGA only)


class Calculation(SQLModel, table=True):
    """One model calculation of one material (raw model eV per cell): a single point on the
    DFT structure, a relaxation, or a symmetry-constrained relaxation (``calc_kind``)."""

    __tablename__ = "calculations"
    dataset: str = Field(primary_key=True)
    material_id: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    settings_hash: str = Field(primary_key=True)
    settings: str  # JSON
    status: str  # "ok" | "not_converged" | "failed"
    error: str | None = None
    n_atoms: int
    energy_single_point: float | None = None
    energy_relaxed: float | None = None
    n_steps: int | None = None
    converged: bool
    max_force: float | None = None
    stress: str | None = None  # JSON, Voigt, eV/A^3
    relaxed_structure: str | None = None  # JSON
    spacegroup_after: int | None = None
    wall_time_s: float | None = None
    device: str | None = None
    created_at: datetime
    calc_kind: str = "relax"  # "single_point" | "relax" | "relax_fixsym" (migration 0002)
    engine: str = "ase"  # "ase" | "torch-sim"
    spacegroup_before: int | None = None  # moyopy, 0.1 A, of the input (DFT) structure
    rmsd: float | None = None  # A, internal coordinates, input -> relaxed
    volume_ratio: float | None = None  # relaxed / input cell volume
    checkpoint_sha256: str | None = None  # of the checkpoint that made the row


class SpaceGroupRow(SQLModel, table=True):
    """Static reference: the 230 space groups and their point-group order."""

    __tablename__ = "space_groups"
    number: int = Field(primary_key=True)
    symbol: str
    point_group: str
    point_group_order: int
    crystal_system: str


class ModelHullRow(SQLModel, table=True):
    """Formation energy and Ehull (eV/atom) of one material on one model's own hull."""

    __tablename__ = "model_hull"
    dataset: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    settings_hash: str = Field(primary_key=True)
    calc_kind: str = Field(primary_key=True)
    refs: str = Field(primary_key=True)  # "model" | "dft": elemental references
    material_id: str = Field(primary_key=True)
    e_per_atom: float  # model, MP2020-corrected footing
    e_ref_per_atom: float | None = None
    e_form_per_atom: float | None = None
    e_above_hull: float | None = None
    complete: bool  # every entry of every subsystem has a model energy
    complete_filled: bool | None = None  # ... once fill-ins count (NULL: built before 0004)


class ModelHullBuild(SQLModel, table=True):
    """One build of a model hull and the fingerprint of the inputs it was built from."""

    __tablename__ = "model_hull_builds"
    dataset: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    settings_hash: str = Field(primary_key=True)
    calc_kind: str = Field(primary_key=True)
    fingerprint: str
    n_entries: int
    n_complete: int
    built_at: datetime
    n_filled: int | None = None  # fill-in entries (failed / unconverged relaxations)
    n_complete_filled: int | None = None
    duckdb_version: str | None = None  # release that computed the fingerprint
    dft_generation: int | None = None  # generations built from (NULL: unknown, before 0009)
    calc_generation: int | None = None
    model_signature: str | None = None  # energy convention | trained_with_u built with


class EhullErrorBuild(SQLModel, table=True):
    """One build of the stored error rows (``ehull_error_rows``, a table of
    ``stg_ehull_errors_live`` rows with this ``build_id``; written by SQL, so it has no class)
    and the fingerprint of its inputs."""

    __tablename__ = "ehull_error_builds"
    dataset: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    settings_hash: str = Field(primary_key=True)
    calc_kind: str = Field(primary_key=True)
    build_id: int
    fingerprint: str
    n_rows: int
    built_at: datetime
    duckdb_version: str  # release that computed the fingerprint (hash() differs)
    dft_generation: int | None = None  # generations built from (NULL: unknown or not fresh)
    calc_generation: int | None = None
    settings: str | None = None  # statistics settings built with (db_settings)
    on_fresh_hull: bool | None = None  # its model hull was fresh (its rows included)


class GenerationRow(SQLModel, table=True):
    """A generation marker (:mod:`mliapdb.store.generations`): the counter of one scope,
    bumped by every mliapdb write to it (``model = settings_hash = calc_kind = ''``: a
    dataset's DFT inputs). The chemical systems each generation touched are in
    ``generation_changes`` (written by SQL, no class)."""

    __tablename__ = "generations"
    dataset: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    settings_hash: str = Field(primary_key=True)
    calc_kind: str = Field(primary_key=True)
    generation: int
    changed_at: datetime


NO_PRIMARY_KEY = ("dft_hull", "model_hull")
"""Tables whose class names a key the database does not index (migration 0009: replacing
rows is ~40x cheaper without the index); their rows are unique by construction (one writer,
delete-then-insert of whole material sets in one transaction; tests/test_incremental.py)."""


ALL_TABLES: tuple[type[SQLModel], ...] = (
    SourceFile,
    MpApiFetch,
    MpMaterial,
    DftEntry,
    SymmetryAnalysisRow,
    WyckoffOrbitRow,
    DftHullRow,
    ModelRow,
    Calculation,
    SpaceGroupRow,
    ModelHullRow,
    ModelHullBuild,
    EhullErrorBuild,
    GenerationRow,
)
