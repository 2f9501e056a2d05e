-- Generation markers (O(1) freshness) and cheap replacement of derived rows.
--
-- generations: one counter per scope, bumped by every mliapdb write in the transaction of the
-- write (mliapdb.store.generations): the DFT inputs of a dataset (model = settings_hash =
-- calc_kind = ''; mp_materials, dft_entries, symmetry_analyses and its dft_hull) and the
-- calculations of one (dataset, model, settings_hash, calc_kind). A build of a derived table
-- records the generations it was built from; the views serve it while they are the current
-- ones (a comparison of a few integers instead of hashing the base tables).
-- generation_changes: the chemical systems each generation touched (NULL: any), so that a
-- refresh rebuilds only those systems and their supersystems; rows every build has passed
-- are pruned.
-- Builds stored before this migration have NULL generations (unknown): the upgrade adopts
-- those whose stored fingerprint still equals the live one, the others are rebuilt.
-- model_hull and dft_hull lose their primary key (replacing 288k rows of one model hull cost
-- ~8 s with it, 0.2 s without); their rows stay unique by construction (one writer each,
-- delete-then-insert of whole material sets in one transaction; tests/test_incremental.py).

CREATE TABLE generations (
    dataset VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    generation BIGINT NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, model, settings_hash, calc_kind)
);

CREATE TABLE generation_changes (
    dataset VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    calc_kind VARCHAR NOT NULL,
    generation BIGINT NOT NULL,
    chemsys VARCHAR
);

ALTER TABLE model_hull_builds ADD COLUMN dft_generation BIGINT;
ALTER TABLE model_hull_builds ADD COLUMN calc_generation BIGINT;
ALTER TABLE model_hull_builds ADD COLUMN model_signature VARCHAR;
ALTER TABLE ehull_error_builds ADD COLUMN dft_generation BIGINT;
ALTER TABLE ehull_error_builds ADD COLUMN calc_generation BIGINT;
ALTER TABLE ehull_error_builds ADD COLUMN settings VARCHAR;
ALTER TABLE ehull_error_builds ADD COLUMN on_fresh_hull BOOLEAN;

CREATE TABLE model_hull_new (
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
    complete_filled BOOLEAN
);
INSERT INTO model_hull_new SELECT * FROM model_hull
    ORDER BY dataset, model, settings_hash, calc_kind, refs, material_id;
DROP TABLE model_hull;
ALTER TABLE model_hull_new RENAME TO model_hull;

CREATE TABLE dft_hull_new (
    dataset VARCHAR NOT NULL,
    material_id VARCHAR NOT NULL,
    e_per_atom DOUBLE NOT NULL,
    e_ref_per_atom DOUBLE,
    e_form_per_atom DOUBLE,
    e_above_hull DOUBLE,
    computed_at TIMESTAMP NOT NULL
);
INSERT INTO dft_hull_new SELECT * FROM dft_hull ORDER BY dataset, material_id;
DROP TABLE dft_hull;
ALTER TABLE dft_hull_new RENAME TO dft_hull;
