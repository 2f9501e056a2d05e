-- The model-hull conventions: convex hulls rebuilt per dataset from one model's own energies
-- (MP2020-corrected footing) for one settings hash and calculation kind, with the model's
-- elemental references ('model') or the DFT ones ('dft'). Filled by mliapdb.analysis.model_hull; the
-- views serve a build only while its fingerprint equals the current inputs' (never stale).
-- Statistics settings: the near-hull threshold (eV/atom) and the DOF bin lower edges.

CREATE TABLE model_hull (
    dataset VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    refs VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    e_per_atom DOUBLE NOT NULL,
    e_ref_per_atom DOUBLE,
    e_form_per_atom DOUBLE,
    e_above_hull DOUBLE,
    complete BOOLEAN NOT NULL,
    PRIMARY KEY (dataset, model, settings_hash, calc_kind, refs, material_id)
);

CREATE TABLE model_hull_builds (
    dataset VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    n_entries INTEGER NOT NULL,
    n_complete INTEGER NOT NULL,
    built_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, model, settings_hash, calc_kind)
);

INSERT INTO db_settings VALUES
    ('near_hull_threshold', '0.05'),
    ('dof_bins', '1,2,4,8,16,32');
