-- Model-hull coverage with fill-ins, and the per-row Ehull errors stored as a table.
--
-- Fill-ins: an entry whose calculation of this kind gave no usable energy (a failed or
-- unconverged relaxation) enters the model hull with the lowest energy the model reached for
-- it (its single point on the DFT structure, or the last step of an unconverged relaxation):
-- an upper bound of the model's own minimum. `complete` stays strict (no fill-in in the
-- chemical system); `complete_filled` says the system is complete once fill-ins count.
-- Which of the two the statistics count is the setting `model_hull_coverage`
-- ('complete' | 'filled').
--
-- ehull_error_rows holds the rows of the view stg_ehull_errors_live for one
-- (dataset, model, settings hash, calculation kind), written by mliapdb.analysis.model_hull together
-- with the model hulls (no primary key: written only by that code, one build at a time);
-- ehull_error_builds records each build's id and the fingerprint of its inputs. The view
-- ehull_errors_all serves stored rows only while that fingerprint matches, so a stored row is
-- never served stale (a stale build serves nothing until it is stored again).
--
-- Fingerprints use DuckDB's hash(), which differs between DuckDB releases: each build records
-- the release that computed it (duckdb_version), and a file read by another release serves
-- its stored builds as they are (it cannot recompute comparable fingerprints).

ALTER TABLE model_hull ADD COLUMN complete_filled BOOLEAN;
ALTER TABLE model_hull_builds ADD COLUMN n_filled INTEGER;
ALTER TABLE model_hull_builds ADD COLUMN n_complete_filled INTEGER;
ALTER TABLE model_hull_builds ADD COLUMN duckdb_version VARCHAR;

CREATE TABLE ehull_error_rows (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    convention VARCHAR NOT NULL,
    hull_complete BOOLEAN NOT NULL,
    hull_complete_filled BOOLEAN NOT NULL,
    formula VARCHAR NOT NULL,
    chemsys VARCHAR NOT NULL,
    nsites INTEGER NOT NULL,
    nelements INTEGER NOT NULL,
    symprec DOUBLE NOT NULL,
    symmetry_method VARCHAR NOT NULL,
    spacegroup_number INTEGER NOT NULL,
    crystal_system VARCHAR NOT NULL,
    lattice_dof INTEGER NOT NULL,
    wyckoff_dof INTEGER NOT NULL,
    dof INTEGER NOT NULL,
    dof_bin VARCHAR NOT NULL,
    dof_bin_order INTEGER NOT NULL,
    near_hull BOOLEAN NOT NULL,
    dft_e_per_atom DOUBLE NOT NULL,
    model_e_per_atom DOUBLE NOT NULL,
    e_error DOUBLE NOT NULL,
    dft_e_form_per_atom DOUBLE,
    model_e_form_per_atom DOUBLE,
    e_form_error DOUBLE,
    dft_e_above_hull DOUBLE NOT NULL,
    model_e_above_hull DOUBLE NOT NULL,
    e_above_hull_error DOUBLE NOT NULL,
    dft_stable BOOLEAN NOT NULL,
    model_stable BOOLEAN NOT NULL,
    symmetry_change VARCHAR,
    rmsd DOUBLE,
    build_id INTEGER NOT NULL
);

CREATE TABLE ehull_error_builds (
    dataset VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    build_id INTEGER NOT NULL UNIQUE,
    fingerprint VARCHAR NOT NULL,
    n_rows INTEGER NOT NULL,
    built_at TIMESTAMP NOT NULL,
    duckdb_version VARCHAR NOT NULL,
    PRIMARY KEY (dataset, model, settings_hash, calc_kind)
);

INSERT INTO db_settings VALUES ('model_hull_coverage', 'complete');
