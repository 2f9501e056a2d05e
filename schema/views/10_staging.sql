-- Staging views: one source table each, per-atom units, defaults resolved.
-- No catalog-qualified names, so these work in an ATTACHed snapshot.

CREATE OR REPLACE VIEW stg_defaults AS
SELECT
    (SELECT CAST(value AS DOUBLE) FROM db_settings WHERE key = 'default_symprec') AS symprec,
    (SELECT value FROM db_settings WHERE key = 'default_symmetry_method') AS method;

-- DFT entries accepted by MP2020 compatibility, energies in eV/atom (MP2020-corrected).
CREATE OR REPLACE VIEW stg_dft_entries AS
SELECT
    e.dataset,
    e.material_id,
    e.n_atoms,
    e.energy_raw / e.n_atoms AS e_raw_per_atom,
    e.correction_mp2020 / e.n_atoms AS correction_per_atom,
    e.energy_corrected / e.n_atoms AS e_per_atom,
    e.run_type
FROM dft_entries AS e
WHERE e.compat_status = 'ok';

-- Every symmetry analysis (all tolerances and methods).
CREATE OR REPLACE VIEW stg_symmetry AS
SELECT
    s.dataset, s.material_id, s.symprec, s.method AS symmetry_method,
    s.spacegroup_number, s.spacegroup_symbol, s.crystal_system, s.pearson_symbol,
    s.protostructure_label, s.lattice_dof, s.wyckoff_dof, s.dof
FROM symmetry_analyses AS s;

-- Model energies in eV/atom on the MP2020-corrected footing: a model trained on raw
-- GGA/GGA+U energies gets the MP2020 correction of the DFT entry's own run; a model trained
-- on corrected energies gets none.
CREATE OR REPLACE VIEW stg_model_energies AS
SELECT
    c.dataset,
    c.material_id,
    c.model,
    c.settings_hash,
    c.calc_kind,
    c.engine,
    c.status,
    c.converged,
    m.energy_convention,
    CASE m.energy_convention WHEN 'raw' THEN d.correction_per_atom ELSE 0.0 END
        AS correction_per_atom,
    c.energy_single_point / c.n_atoms
        + CASE m.energy_convention WHEN 'raw' THEN d.correction_per_atom ELSE 0.0 END
        AS e_per_atom_single_point,
    CASE WHEN c.status = 'ok' AND c.calc_kind <> 'single_point' THEN
        c.energy_relaxed / c.n_atoms
        + CASE m.energy_convention WHEN 'raw' THEN d.correction_per_atom ELSE 0.0 END
    END AS e_per_atom_relaxed,
    -- the energy this calculation kind stands for: the single point or the relaxed energy
    CASE
        WHEN c.calc_kind = 'single_point' THEN c.energy_single_point / c.n_atoms
        WHEN c.status = 'ok' THEN c.energy_relaxed / c.n_atoms
    END + CASE m.energy_convention WHEN 'raw' THEN d.correction_per_atom ELSE 0.0 END
        AS e_per_atom_model,
    c.n_steps,
    c.max_force,
    c.spacegroup_before,
    c.spacegroup_after,
    CASE
        WHEN c.calc_kind = 'single_point' OR c.spacegroup_after IS NULL
            OR c.spacegroup_before IS NULL THEN NULL
        WHEN c.spacegroup_after = c.spacegroup_before THEN 'kept'
        WHEN ga.point_group_order < gb.point_group_order THEN 'lowered'
        WHEN ga.point_group_order > gb.point_group_order THEN 'raised'
        ELSE 'changed'
    END AS symmetry_change,
    c.rmsd,
    c.volume_ratio,
    c.wall_time_s
FROM calculations AS c
JOIN models AS m ON m.name = c.model
JOIN stg_dft_entries AS d ON d.dataset = c.dataset AND d.material_id = c.material_id
LEFT JOIN space_groups AS gb ON gb.number = c.spacegroup_before
LEFT JOIN space_groups AS ga ON ga.number = c.spacegroup_after
WHERE c.status IN ('ok', 'not_converged');

-- Statistics settings: near-hull threshold (eV/atom) and DOF bin lower edges.
CREATE OR REPLACE VIEW stg_stats_settings AS
SELECT
    (SELECT CAST(value AS DOUBLE) FROM db_settings WHERE key = 'near_hull_threshold')
        AS near_hull_threshold,
    (SELECT list_transform(string_split(value, ','), lambda x: CAST(trim(x) AS INTEGER))
        FROM db_settings WHERE key = 'dof_bins') AS dof_bins;

-- Fingerprint of a dataset's DFT entries (count and an order-free hash).
CREATE OR REPLACE VIEW stg_dft_fingerprints AS
SELECT
    dataset,
    count(*)::VARCHAR || ':'
        || bit_xor(hash(material_id, energy_corrected, n_atoms, compat_status))::VARCHAR
        AS dft_fingerprint
FROM dft_entries
GROUP BY dataset;

-- The inputs of each model hull and their fingerprint: a build is fresh while it matches.
CREATE OR REPLACE VIEW stg_model_hull_inputs AS
SELECT
    e.dataset,
    e.model,
    e.settings_hash,
    e.calc_kind,
    count(*) AS n_entries,
    count(*)::VARCHAR || ':' || bit_xor(hash(e.material_id, e.e_per_atom_model))::VARCHAR
        || '|' || any_value(f.dft_fingerprint) AS fingerprint
FROM stg_model_energies AS e
JOIN stg_dft_fingerprints AS f ON f.dataset = e.dataset
WHERE e.e_per_atom_model IS NOT NULL
GROUP BY e.dataset, e.model, e.settings_hash, e.calc_kind;

-- Model-hull rows of fresh builds only (a stale or missing build serves nothing).
CREATE OR REPLACE VIEW stg_model_hull AS
SELECT h.*
FROM model_hull AS h
JOIN model_hull_builds AS b USING (dataset, model, settings_hash, calc_kind)
JOIN stg_model_hull_inputs AS i USING (dataset, model, settings_hash, calc_kind)
WHERE b.fingerprint = i.fingerprint;
