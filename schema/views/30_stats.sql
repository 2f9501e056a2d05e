-- The study's statistics. Energies in eV/atom; errors are model - DFT.
--
-- Conventions (column `convention`):
--   dft-hull             the fixed DFT hull (Matbench Discovery): model Ehull = DFT Ehull +
--                        model formation-energy error, DFT elemental references;
--   model-hull           the hull rebuilt from the model's own energies for every entry of the
--                        dataset, model elemental references (mliapdb.analysis.model_hull);
--   model-hull-dft-refs  the same hull with the DFT elemental references (compounds only:
--                        elemental materials have no row, so its n is smaller).
-- Statistics are per dataset (one MP snapshot): never mixed across datasets.

-- One row per usable calculation (converged relaxation, or single point) x convention x
-- symmetry analysis (every tolerance), computed from the base tables (1 s per aggregate at
-- 150k materials x 9 models: the statistics read the stored copy, ehull_errors_all). Model-hull rows carry
-- hull_complete (every entry of every subsystem has a usable model energy) and
-- hull_complete_filled (complete once fill-ins count); dft-hull rows are complete.
CREATE OR REPLACE VIEW stg_ehull_errors_live AS
WITH base AS (
    SELECT
        e.dataset, e.material_id, e.model, e.settings_hash, e.calc_kind, e.e_per_atom_model,
        e.e_form_per_atom, e.e_above_hull, e.symmetry_change, e.rmsd
    FROM model_energies AS e
    WHERE e.status = 'ok' AND e.e_per_atom_model IS NOT NULL
),
conv AS (
    SELECT
        b.dataset, b.material_id, b.model, b.settings_hash, b.calc_kind,
        'dft-hull' AS convention, TRUE AS hull_complete, TRUE AS hull_complete_filled,
        b.e_per_atom_model AS model_e_per_atom,
        b.e_form_per_atom AS model_e_form_per_atom,
        b.e_above_hull AS model_e_above_hull,
        b.symmetry_change, b.rmsd
    FROM base AS b
    UNION ALL
    SELECT
        b.dataset, b.material_id, b.model, b.settings_hash, b.calc_kind,
        'model-hull', h.complete, h.complete_filled, h.e_per_atom, h.e_form_per_atom, h.e_above_hull,
        b.symmetry_change, b.rmsd
    FROM base AS b
    JOIN stg_model_hull AS h
        ON h.dataset = b.dataset AND h.material_id = b.material_id AND h.model = b.model
        AND h.settings_hash = b.settings_hash AND h.calc_kind = b.calc_kind
    WHERE h.refs = 'model'
    UNION ALL
    SELECT
        b.dataset, b.material_id, b.model, b.settings_hash, b.calc_kind,
        'model-hull-dft-refs', h.complete, h.complete_filled, h.e_per_atom, h.e_form_per_atom, h.e_above_hull,
        b.symmetry_change, b.rmsd
    FROM base AS b
    JOIN stg_model_hull AS h
        ON h.dataset = b.dataset AND h.material_id = b.material_id AND h.model = b.model
        AND h.settings_hash = b.settings_hash AND h.calc_kind = b.calc_kind
    WHERE h.refs = 'dft'
),
binned AS (
    SELECT
        c.*,
        s.symprec, s.symmetry_method, s.spacegroup_number, s.crystal_system, s.lattice_dof,
        s.wyckoff_dof, s.dof,
        len(list_filter(ss.dof_bins, lambda x: x <= s.dof)) AS dof_bin_order,
        ss.dof_bins,
        ss.near_hull_threshold
    FROM conv AS c
    JOIN stg_symmetry AS s ON s.dataset = c.dataset AND s.material_id = c.material_id
    CROSS JOIN stg_stats_settings AS ss
)
SELECT
    b.dataset,
    b.material_id,
    b.model,
    b.settings_hash,
    b.calc_kind,
    b.convention,
    b.hull_complete,
    b.hull_complete_filled,
    m.formula,
    m.chemsys,
    m.nsites,
    m.nelements,
    b.symprec,
    b.symmetry_method,
    b.spacegroup_number,
    b.crystal_system,
    b.lattice_dof,
    b.wyckoff_dof,
    b.dof,
    CASE
        WHEN b.dof_bin_order = 0 THEN '<' || b.dof_bins[1]
        WHEN b.dof_bin_order = len(b.dof_bins) THEN b.dof_bins[b.dof_bin_order] || '+'
        WHEN b.dof_bins[b.dof_bin_order + 1] - 1 = b.dof_bins[b.dof_bin_order]
            THEN CAST(b.dof_bins[b.dof_bin_order] AS VARCHAR)
        ELSE b.dof_bins[b.dof_bin_order] || '-' || (b.dof_bins[b.dof_bin_order + 1] - 1)
    END AS dof_bin,
    b.dof_bin_order,
    d.e_above_hull < b.near_hull_threshold AS near_hull,
    d.e_per_atom AS dft_e_per_atom,
    b.model_e_per_atom,
    b.model_e_per_atom - d.e_per_atom AS e_error,
    d.e_form_per_atom AS dft_e_form_per_atom,
    b.model_e_form_per_atom,
    b.model_e_form_per_atom - d.e_form_per_atom AS e_form_error,
    d.e_above_hull AS dft_e_above_hull,
    b.model_e_above_hull,
    b.model_e_above_hull - d.e_above_hull AS e_above_hull_error,
    d.e_above_hull <= 0 AS dft_stable,
    b.model_e_above_hull <= 0 AS model_stable,
    b.symmetry_change,
    b.rmsd
FROM binned AS b
JOIN dft_stability AS d ON d.dataset = b.dataset AND d.material_id = b.material_id
JOIN mp_materials AS m ON m.dataset = b.dataset AND m.material_id = b.material_id
WHERE d.e_above_hull IS NOT NULL AND b.model_e_above_hull IS NOT NULL;

-- Each model x settings x kind's error-row inputs and their fingerprint: the model hull's
-- inputs, the calculations' symmetry columns, the dataset's materials, DFT hull and symmetry,
-- the statistics settings, and the model hull build when it is fresh.
CREATE OR REPLACE VIEW stg_error_row_inputs AS
SELECT
    i.dataset,
    i.model,
    i.settings_hash,
    i.calc_kind,
    i.fingerprint || '|' || i.symmetry_fingerprint || '|' || d.fingerprint || '|'
        || (SELECT string_agg(key || '=' || value, ';' ORDER BY key) FROM db_settings
            WHERE key IN ('near_hull_threshold', 'dof_bins')) || '|'
        || CASE WHEN b.fingerprint = i.fingerprint THEN CAST(b.built_at AS VARCHAR)
            ELSE 'no fresh hull' END AS fingerprint
FROM stg_model_hull_inputs AS i
JOIN stg_dataset_fingerprints AS d ON d.dataset = i.dataset
LEFT JOIN model_hull_builds AS b
    ON b.dataset = i.dataset AND b.model = i.model AND b.settings_hash = i.settings_hash
    AND b.calc_kind = i.calc_kind;

-- Each calculation set's stored error-row build and whether it is fresh: built from the
-- current generations, with the current statistics settings (db_settings
-- near_hull_threshold and dof_bins, compared as text: a tiny table), on a model hull that was
-- fresh as it is now (built without one: no model-hull rows, until the hull is built).
-- same_inputs: the stored build's settings are the current ones and its model hull is fresh
-- (a refresh may then store only the rows of the chemical systems changed since).
CREATE OR REPLACE VIEW stg_error_row_status AS
WITH settings AS (
    SELECT string_agg(key || '=' || value, ';' ORDER BY key) AS settings FROM db_settings
    WHERE key IN ('near_hull_threshold', 'dof_bins')
)
SELECT
    h.dataset,
    h.model,
    h.settings_hash,
    h.calc_kind,
    h.dft_generation,
    h.calc_generation,
    b.dft_generation AS built_dft_generation,
    b.calc_generation AS built_calc_generation,
    b.build_id,
    h.fresh AS hull_fresh,
    s.settings,
    coalesce(h.fresh AND b.on_fresh_hull AND b.settings = s.settings, FALSE) AS same_inputs,
    coalesce(b.on_fresh_hull = h.fresh AND b.settings = s.settings
        AND b.dft_generation = h.dft_generation AND b.calc_generation = h.calc_generation,
        FALSE) AS fresh
FROM stg_model_hull_status AS h
CROSS JOIN settings AS s
LEFT JOIN ehull_error_builds AS b
    ON b.dataset = h.dataset AND b.model = h.model AND b.settings_hash = h.settings_hash
    AND b.calc_kind = h.calc_kind;

-- Stored error-row builds and whether each is fresh (stg_error_row_status).
CREATE OR REPLACE VIEW stg_error_row_builds AS
SELECT dataset, model, settings_hash, calc_kind, build_id, fresh
FROM stg_error_row_status;

-- One row per usable calculation x convention x symmetry analysis: the stored rows of fresh
-- builds (mliapdb.analysis.error_rows, refreshed at the end of every ingest and by 'mliapdb ingest
-- hulls'). A build whose inputs changed serves nothing until it is stored again (never stale);
-- stg_ehull_errors_live computes the same rows from the base tables.
CREATE OR REPLACE VIEW ehull_errors_all AS
SELECT r.* EXCLUDE (build_id)
FROM ehull_error_rows AS r
WHERE r.build_id IN (SELECT build_id FROM stg_error_row_builds WHERE fresh);

-- ehull_errors_all at the default symmetry tolerance and method; hull_counted says whether
-- the statistics count the row (model_hull_coverage: complete systems only, or also
-- systems completed by fill-ins); suspicious / suspicious_reason flag the relaxation
-- (stg_suspicious, joined at read time: the thresholds are db_settings, not stored rows).
CREATE OR REPLACE VIEW ehull_errors AS
SELECT
    e.*,
    e.hull_complete OR (e.hull_complete_filled AND ss.model_hull_coverage = 'filled')
        AS hull_counted,
    s.suspicious_reason IS NOT NULL AS suspicious,
    s.suspicious_reason
FROM ehull_errors_all AS e
CROSS JOIN stg_stats_settings AS ss
LEFT JOIN stg_suspicious AS s
    ON s.dataset = e.dataset AND s.material_id = e.material_id AND s.model = e.model
    AND s.settings_hash = e.settings_hash AND s.calc_kind = e.calc_kind
WHERE e.symprec = (SELECT symprec FROM stg_defaults)
    AND e.symmetry_method = (SELECT method FROM stg_defaults);

-- Signed Ehull error statistics of counted rows (hull_counted), over all materials ('all') and the
-- near-hull ones ('near_hull'), by model x settings x kind x convention and each grouping.
CREATE OR REPLACE VIEW stg_error_stats AS
WITH rows AS (
    SELECT 'all' AS subset, * FROM ehull_errors WHERE hull_counted
    UNION ALL
    SELECT 'near_hull' AS subset, * FROM ehull_errors WHERE hull_counted AND near_hull
)
SELECT
    subset,
    dataset,
    model,
    settings_hash,
    calc_kind,
    convention,
    CASE
        WHEN grouping(dof) = 0 THEN 'dof'
        WHEN grouping(dof_bin) = 0 THEN 'dof_bin'
        WHEN grouping(crystal_system) = 0 THEN 'crystal_system'
        WHEN grouping(spacegroup_number) = 0 THEN 'spacegroup'
        WHEN grouping(nelements) = 0 THEN 'nelements'
        ELSE 'all'
    END AS grouping,
    COALESCE(
        CAST(dof AS VARCHAR), dof_bin, crystal_system, CAST(spacegroup_number AS VARCHAR),
        CAST(nelements AS VARCHAR), 'all'
    ) AS group_value,
    COALESCE(dof, dof_bin_order, spacegroup_number, nelements, CASE crystal_system
        WHEN 'triclinic' THEN 1 WHEN 'monoclinic' THEN 2 WHEN 'orthorhombic' THEN 3
        WHEN 'tetragonal' THEN 4 WHEN 'trigonal' THEN 5 WHEN 'hexagonal' THEN 6
        WHEN 'cubic' THEN 7 END, 0) AS group_order,
    count(*) AS n,
    avg(abs(e_above_hull_error)) AS mae,
    sqrt(avg(e_above_hull_error * e_above_hull_error)) AS rmse,
    avg(e_above_hull_error) AS mean_signed_error,
    median(e_above_hull_error) AS median_signed_error,
    avg(CASE WHEN e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END) AS frac_underpredicted,
    -- least-squares slope of model Ehull on DFT Ehull through the origin: < 1 when the model
    -- compresses the energy scale above the hull (a softened energy surface)
    sum(model_e_above_hull * dft_e_above_hull)
        / nullif(sum(dft_e_above_hull * dft_e_above_hull), 0) AS ehull_scale
FROM rows
GROUP BY GROUPING SETS (
    (subset, dataset, model, settings_hash, calc_kind, convention),
    (subset, dataset, model, settings_hash, calc_kind, convention, dof),
    (subset, dataset, model, settings_hash, calc_kind, convention, dof_bin, dof_bin_order),
    (subset, dataset, model, settings_hash, calc_kind, convention, crystal_system),
    (subset, dataset, model, settings_hash, calc_kind, convention, spacegroup_number),
    (subset, dataset, model, settings_hash, calc_kind, convention, nelements)
);

-- Ehull error statistics over all (complete) materials.
CREATE OR REPLACE VIEW ehull_error_stats AS
SELECT * EXCLUDE (subset) FROM stg_error_stats WHERE subset = 'all';

-- Ehull error statistics over the near-hull materials (DFT Ehull below the threshold).
CREATE OR REPLACE VIEW near_hull_stats AS
SELECT * EXCLUDE (subset) FROM stg_error_stats WHERE subset = 'near_hull';

-- Total and formation energy errors per model x settings x kind x convention.
CREATE OR REPLACE VIEW energy_error_stats AS
SELECT
    dataset,
    model,
    settings_hash,
    calc_kind,
    convention,
    count(*) AS n,
    avg(abs(e_error)) AS e_mae,
    avg(e_error) AS e_mean_signed_error,
    avg(CASE WHEN e_error < 0 THEN 1.0 ELSE 0.0 END) AS e_frac_underpredicted,
    avg(abs(e_form_error)) AS e_form_mae,
    avg(e_form_error) AS e_form_mean_signed_error,
    avg(CASE WHEN e_form_error < 0 THEN 1.0 ELSE 0.0 END) AS e_form_frac_underpredicted
FROM ehull_errors
WHERE hull_counted
GROUP BY dataset, model, settings_hash, calc_kind, convention;

-- Stability classification at 0 eV/atom (positive = stable: Ehull <= 0).
CREATE OR REPLACE VIEW stability_classification AS
WITH counts AS (
    SELECT
        dataset, model, settings_hash, calc_kind, convention,
        count(*) AS n,
        count(*) FILTER (WHERE model_stable AND dft_stable) AS tp,
        count(*) FILTER (WHERE model_stable AND NOT dft_stable) AS fp,
        count(*) FILTER (WHERE NOT model_stable AND NOT dft_stable) AS tn,
        count(*) FILTER (WHERE NOT model_stable AND dft_stable) AS fn
    FROM ehull_errors
    WHERE hull_counted
    GROUP BY dataset, model, settings_hash, calc_kind, convention
)
SELECT
    *,
    tp / nullif(tp + fp, 0) AS precision,
    tp / nullif(tp + fn, 0) AS recall,
    2 * tp / nullif(2 * tp + fp + fn, 0) AS f1,
    (tp + tn) / n AS accuracy,
    (tp + fn) / n AS prevalence,
    (tp / nullif(tp + fp, 0)) / nullif((tp + fn) / n, 0) AS daf
FROM counts;

-- Symmetry after relaxation per model x settings x kind (relaxations only): the usable
-- relaxations of the statistics (one dft-hull row each in the stored error rows).
CREATE OR REPLACE VIEW symmetry_changes AS
SELECT
    dataset,
    model,
    settings_hash,
    calc_kind,
    count(*) AS n,
    count(*) FILTER (WHERE symmetry_change = 'kept') AS kept,
    count(*) FILTER (WHERE symmetry_change = 'lowered') AS lowered,
    count(*) FILTER (WHERE symmetry_change = 'raised') AS raised,
    count(*) FILTER (WHERE symmetry_change = 'changed') AS changed,
    count(*) FILTER (WHERE symmetry_change = 'kept') / count(*) AS frac_kept,
    avg(rmsd) AS mean_rmsd
FROM ehull_errors
WHERE convention = 'dft-hull' AND calc_kind <> 'single_point' AND symmetry_change IS NOT NULL
GROUP BY dataset, model, settings_hash, calc_kind;

-- What relaxing does to the Ehull error: the same materials (counted rows of both kinds)
-- after a single point on the DFT structure and after a relaxation (free or
-- symmetry-constrained), per model x relaxation kind x convention, over all materials and per
-- DOF bin. relaxation_energy = relaxed - single-point model energy (eV/atom, <= 0 when the
-- relaxation found a lower minimum).
CREATE OR REPLACE VIEW relaxation_effect_stats AS
WITH
    sp AS (SELECT * FROM ehull_errors WHERE calc_kind = 'single_point' AND hull_counted),
    rx AS (SELECT * FROM ehull_errors WHERE calc_kind <> 'single_point' AND hull_counted)
SELECT
    rx.dataset,
    rx.model,
    rx.calc_kind,
    rx.convention,
    rx.settings_hash AS relax_settings_hash,
    sp.settings_hash AS single_point_settings_hash,
    CASE WHEN grouping(rx.dof_bin) = 0 THEN 'dof_bin' ELSE 'all' END AS grouping,
    coalesce(rx.dof_bin, 'all') AS group_value,
    coalesce(rx.dof_bin_order, 0) AS group_order,
    count(*) AS n,
    avg(abs(sp.e_above_hull_error)) AS single_point_mae,
    avg(abs(rx.e_above_hull_error)) AS relaxed_mae,
    avg(sp.e_above_hull_error) AS single_point_mean_signed_error,
    avg(rx.e_above_hull_error) AS relaxed_mean_signed_error,
    avg(CASE WHEN sp.e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END)
        AS single_point_frac_underpredicted,
    avg(CASE WHEN rx.e_above_hull_error < 0 THEN 1.0 ELSE 0.0 END)
        AS relaxed_frac_underpredicted,
    avg(rx.model_e_per_atom - sp.model_e_per_atom) AS mean_relaxation_energy,
    median(rx.model_e_per_atom - sp.model_e_per_atom) AS median_relaxation_energy,
    avg(CASE WHEN rx.symmetry_change = 'kept' THEN 1.0 ELSE 0.0 END) AS frac_symmetry_kept
FROM rx
JOIN sp
    ON sp.dataset = rx.dataset AND sp.material_id = rx.material_id AND sp.model = rx.model
    AND sp.convention = rx.convention
GROUP BY GROUPING SETS (
    (rx.dataset, rx.model, rx.calc_kind, rx.convention, rx.settings_hash, sp.settings_hash),
    (rx.dataset, rx.model, rx.calc_kind, rx.convention, rx.settings_hash, sp.settings_hash,
        rx.dof_bin, rx.dof_bin_order)
);
