-- 0001_initial: MP entries, DFT energies, symmetry (one row per Wyckoff orbit), DFT hull,
-- models and calculations. Energies are eV per cell unless the column says per_atom.

CREATE TABLE db_settings (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

INSERT INTO db_settings VALUES
    ('default_symprec', '0.1'),
    ('default_symmetry_method', 'moyopy');

CREATE TABLE source_files (
    sha256 VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    n_entries INTEGER NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    PRIMARY KEY (sha256, dataset)
);

CREATE TABLE mp_materials (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    formula VARCHAR NOT NULL,
    formula_full VARCHAR NOT NULL,
    chemsys VARCHAR NOT NULL,
    nelements INTEGER NOT NULL,
    nsites INTEGER NOT NULL,
    composition JSON NOT NULL,
    structure JSON NOT NULL,
    fingerprint VARCHAR NOT NULL,
    PRIMARY KEY (dataset, material_id)
);

CREATE TABLE dft_entries (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    entry_id VARCHAR,
    task_id VARCHAR,
    n_atoms INTEGER NOT NULL,
    energy_raw DOUBLE NOT NULL,
    correction_mp2020 DOUBLE,
    energy_corrected DOUBLE,
    correction_in_source DOUBLE,
    compat_status VARCHAR NOT NULL,
    compat_message VARCHAR,
    run_type VARCHAR,
    is_hubbard BOOLEAN,
    hubbards JSON,
    potcar_spec JSON,
    oxide_type VARCHAR,
    mp_last_updated VARCHAR,
    source_file VARCHAR NOT NULL,
    source_sha256 VARCHAR NOT NULL,
    PRIMARY KEY (dataset, material_id)
);

CREATE TABLE symmetry_analyses (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    symprec DOUBLE NOT NULL,
    method VARCHAR NOT NULL,
    angle_tolerance DOUBLE,
    library_version VARCHAR NOT NULL,
    spacegroup_number INTEGER NOT NULL,
    spacegroup_symbol VARCHAR NOT NULL,
    crystal_system VARCHAR NOT NULL,
    pearson_symbol VARCHAR NOT NULL,
    protostructure_label VARCHAR NOT NULL,
    lattice_dof INTEGER NOT NULL,
    wyckoff_dof INTEGER NOT NULL,
    dof INTEGER NOT NULL,
    PRIMARY KEY (dataset, material_id, symprec, method)
);

CREATE TABLE wyckoff_orbits (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    symprec DOUBLE NOT NULL,
    method VARCHAR NOT NULL,
    orbit_index INTEGER NOT NULL,
    element VARCHAR NOT NULL,
    wyckoff_letter VARCHAR NOT NULL,
    multiplicity INTEGER NOT NULL,
    site_symmetry VARCHAR NOT NULL,
    n_free INTEGER NOT NULL,
    PRIMARY KEY (dataset, material_id, symprec, method, orbit_index)
);

CREATE TABLE dft_hull (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    e_per_atom DOUBLE NOT NULL,
    e_ref_per_atom DOUBLE,
    e_form_per_atom DOUBLE,
    e_above_hull DOUBLE,
    computed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, material_id)
);

CREATE TABLE models (
    name VARCHAR PRIMARY KEY,
    family VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    checkpoint_sha256 VARCHAR,
    training_set VARCHAR,
    functional VARCHAR,
    energy_convention VARCHAR NOT NULL,
    package_versions JSON,
    license VARCHAR,
    citation VARCHAR,
    registered_at TIMESTAMP NOT NULL
);

CREATE TABLE calculations (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    settings JSON NOT NULL,
    status VARCHAR NOT NULL,
    error VARCHAR,
    n_atoms INTEGER NOT NULL,
    energy_single_point DOUBLE,
    energy_relaxed DOUBLE,
    n_steps INTEGER,
    converged BOOLEAN NOT NULL,
    max_force DOUBLE,
    stress JSON,
    relaxed_structure JSON,
    spacegroup_after INTEGER,
    wall_time_s DOUBLE,
    device VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, material_id, model, settings_hash)
);
