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
    e.run_type,
    -- GGA+U run (parameters.is_hubbard; the run type where that is missing)
    coalesce(e.is_hubbard, e.run_type = 'GGA+U') AS is_hubbard
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
WHERE c.status IN ('ok', 'not_converged')
    -- a model trained without +U (models.trained_with_u false) only on entries without U
    AND (coalesce(m.trained_with_u, true) OR d.is_hubbard IS FALSE);

-- Statistics settings: near-hull threshold (eV/atom), DOF bin lower edges, and which
-- model-hull rows the statistics count ('complete': strictly; 'filled': fill-ins count).
CREATE OR REPLACE VIEW stg_stats_settings AS
SELECT
    (SELECT CAST(value AS DOUBLE) FROM db_settings WHERE key = 'near_hull_threshold')
        AS near_hull_threshold,
    (SELECT list_transform(string_split(value, ','), lambda x: CAST(trim(x) AS INTEGER))
        FROM db_settings WHERE key = 'dof_bins') AS dof_bins,
    coalesce((SELECT value FROM db_settings WHERE key = 'model_hull_coverage'), 'complete')
        AS model_hull_coverage,
    -- thresholds of a suspicious relaxation (stg_suspicious; docs/conventions.md)
    coalesce((SELECT CAST(value AS DOUBLE) FROM db_settings
        WHERE key = 'suspicious_volume_change'), 0.2) AS suspicious_volume_change,
    coalesce((SELECT CAST(value AS DOUBLE) FROM db_settings
        WHERE key = 'suspicious_rmsd'), 0.5) AS suspicious_rmsd,
    coalesce((SELECT CAST(value AS DOUBLE) FROM db_settings
        WHERE key = 'suspicious_energy_drop'), 0.3) AS suspicious_energy_drop;

-- Converged relaxations flagged as suspicious (one row each, flagged ones only): the volume
-- changed by more than suspicious_volume_change (|volume_ratio - 1|), the atoms moved by an
-- RMSD above suspicious_rmsd (A), or the relaxed energy lies more than
-- suspicious_energy_drop (eV/atom) below the single point on the DFT structure.
-- suspicious_reason lists which (comma-separated: volume, rmsd, energy_drop).
CREATE OR REPLACE VIEW stg_suspicious AS
WITH flags AS (
    SELECT
        c.dataset, c.material_id, c.model, c.settings_hash, c.calc_kind, c.volume_ratio,
        c.rmsd, (c.energy_relaxed - c.energy_single_point) / c.n_atoms AS relaxation_energy,
        concat_ws(',',
            CASE WHEN abs(c.volume_ratio - 1) > ss.suspicious_volume_change THEN 'volume' END,
            CASE WHEN c.rmsd > ss.suspicious_rmsd THEN 'rmsd' END,
            CASE WHEN (c.energy_relaxed - c.energy_single_point) / c.n_atoms
                < -ss.suspicious_energy_drop THEN 'energy_drop' END) AS suspicious_reason
    FROM calculations AS c
    CROSS JOIN stg_stats_settings AS ss
    WHERE c.calc_kind <> 'single_point' AND c.status = 'ok'
)
SELECT * FROM flags WHERE suspicious_reason <> '';

-- Fingerprints: a count and an order-free hash of the columns a derived table was built from
-- (bit_xor over rows of hash(hash(columns...)): DuckDB combines a multi-argument hash
-- linearly, so without the outer hash a value moved between rows, or a change of a column
-- that is constant over an even number of rows, would cancel out).
-- Each build records them; queries do not read them (they compare generation markers,
-- stg_model_hull_status): 'mliapdb ingest hulls --verify' compares them with the live ones
-- and rebuilds what differs (writes of other DuckDB clients, which bump no marker). Each is
-- one scan of one table, no join (0.1 s over 1.8 M calculations).

-- A dataset's DFT entries (energies, MP2020 corrections, acceptance).
CREATE OR REPLACE VIEW stg_dft_fingerprints AS
SELECT
    dataset,
    count(*)::VARCHAR || ':'
        || bit_xor(hash(hash(material_id, energy_raw, correction_mp2020, energy_corrected, n_atoms,
            compat_status)))::VARCHAR AS dft_fingerprint
FROM dft_entries
GROUP BY dataset;

-- A dataset's materials, DFT hull and symmetry analyses (what the error rows read besides
-- the calculations and the model hull).
CREATE OR REPLACE VIEW stg_dataset_fingerprints AS
WITH
    m AS (
        SELECT dataset, count(*)::VARCHAR || ':' || bit_xor(hash(hash(material_id, fingerprint,
            formula, chemsys, nsites, nelements)))::VARCHAR AS fp
        FROM mp_materials GROUP BY dataset
    ),
    h AS (
        SELECT dataset, count(*)::VARCHAR || ':' || bit_xor(hash(hash(material_id, e_per_atom,
            e_ref_per_atom, e_form_per_atom, e_above_hull)))::VARCHAR AS fp
        FROM dft_hull GROUP BY dataset
    ),
    s AS (
        SELECT dataset, count(*)::VARCHAR || ':' || bit_xor(hash(hash(material_id, symprec, method,
            spacegroup_number, crystal_system, lattice_dof, wyckoff_dof, dof)))::VARCHAR AS fp
        FROM symmetry_analyses GROUP BY dataset
    )
SELECT
    f.dataset,
    f.dft_fingerprint || '|' || coalesce(m.fp, '-') || '|' || coalesce(h.fp, '-') || '|'
        || coalesce(s.fp, '-') AS fingerprint
FROM stg_dft_fingerprints AS f
LEFT JOIN m ON m.dataset = f.dataset
LEFT JOIN h ON h.dataset = f.dataset
LEFT JOIN s ON s.dataset = f.dataset;

-- Each model x settings x kind's calculations: the energy columns (what its model hull reads)
-- and the symmetry columns (what the error rows read besides).
CREATE OR REPLACE VIEW stg_calc_fingerprints AS
SELECT
    dataset,
    model,
    settings_hash,
    calc_kind,
    count(*) AS n_calculations,
    count(*)::VARCHAR || ':' || bit_xor(hash(hash(material_id, status, n_atoms, energy_single_point,
        energy_relaxed)))::VARCHAR AS energy_fingerprint,
    bit_xor(hash(hash(material_id, spacegroup_before, spacegroup_after, rmsd)))::VARCHAR
        AS symmetry_fingerprint
FROM calculations
GROUP BY dataset, model, settings_hash, calc_kind;

-- The inputs of each model hull and their fingerprint: a build is fresh while it matches.
CREATE OR REPLACE VIEW stg_model_hull_inputs AS
SELECT
    c.dataset,
    c.model,
    c.settings_hash,
    c.calc_kind,
    c.n_calculations,
    c.symmetry_fingerprint,
    c.energy_fingerprint || '|' || m.energy_convention || '|' || f.dft_fingerprint
        AS fingerprint
FROM stg_calc_fingerprints AS c
JOIN models AS m ON m.name = c.model
JOIN stg_dft_fingerprints AS f ON f.dataset = c.dataset;

-- Fill-in energies of the model hulls (eV/atom, MP2020-corrected footing) for relaxations
-- without a usable energy (failed or not converged): the lowest energy the model reached,
-- the single point on the DFT structure or the last step (an upper bound of its minimum).
CREATE OR REPLACE VIEW stg_model_fill_energies AS
SELECT
    c.dataset,
    c.material_id,
    c.model,
    c.settings_hash,
    c.calc_kind,
    c.status,
    least(c.energy_single_point, c.energy_relaxed) / c.n_atoms
        + CASE m.energy_convention WHEN 'raw' THEN d.correction_per_atom ELSE 0.0 END
        AS e_per_atom_fill
FROM calculations AS c
JOIN models AS m ON m.name = c.model
JOIN stg_dft_entries AS d ON d.dataset = c.dataset AND d.material_id = c.material_id
WHERE c.calc_kind <> 'single_point' AND c.status <> 'ok'
    AND least(c.energy_single_point, c.energy_relaxed) IS NOT NULL
    AND (coalesce(m.trained_with_u, true) OR d.is_hubbard IS FALSE);

-- Generation markers (mliapdb.store.generations): each calculation set's generation, its
-- dataset's DFT generation (0 when never bumped) and its model's signature (energy
-- convention and trained_with_u: what the model energies' footing depends on).
CREATE OR REPLACE VIEW stg_generations AS
SELECT
    c.dataset,
    c.model,
    c.settings_hash,
    c.calc_kind,
    coalesce(d.generation, 0) AS dft_generation,
    c.generation AS calc_generation,
    m.energy_convention || '|' || coalesce(CAST(m.trained_with_u AS VARCHAR), '')
        AS model_signature
FROM generations AS c
LEFT JOIN generations AS d
    ON d.dataset = c.dataset AND d.model = '' AND d.settings_hash = '' AND d.calc_kind = ''
LEFT JOIN models AS m ON m.name = c.model
WHERE c.model <> '';

-- Each calculation set's model hull build and whether it is fresh: built from the current
-- generations and model signature (a comparison of a few integers: no base table is read).
-- same_inputs: the stored build's model signature is the current one (a refresh may then
-- rebuild only the chemical systems changed since).
CREATE OR REPLACE VIEW stg_model_hull_status AS
SELECT
    g.dataset,
    g.model,
    g.settings_hash,
    g.calc_kind,
    g.dft_generation,
    g.calc_generation,
    b.dft_generation AS built_dft_generation,
    b.calc_generation AS built_calc_generation,
    coalesce(b.model_signature = g.model_signature, FALSE) AS same_inputs,
    coalesce(b.dft_generation = g.dft_generation AND b.calc_generation = g.calc_generation
        AND b.model_signature = g.model_signature, FALSE) AS fresh
FROM stg_generations AS g
LEFT JOIN model_hull_builds AS b
    ON b.dataset = g.dataset AND b.model = g.model AND b.settings_hash = g.settings_hash
    AND b.calc_kind = g.calc_kind;

-- Model-hull rows of fresh builds only (a stale or missing build serves nothing).
CREATE OR REPLACE VIEW stg_model_hull AS
SELECT h.*
FROM model_hull AS h
JOIN stg_model_hull_status AS s USING (dataset, model, settings_hash, calc_kind)
WHERE s.fresh;
