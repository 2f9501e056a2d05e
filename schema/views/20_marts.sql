-- Marts: the stable views documented in docs/schema.md. Energies in eV/atom.

-- One row per material, symmetry at the database's default tolerance (stg_defaults).
CREATE OR REPLACE VIEW materials AS
SELECT
    m.dataset,
    m.material_id,
    m.formula,
    m.chemsys,
    m.nsites,
    m.nelements,
    s.spacegroup_number,
    s.spacegroup_symbol,
    s.crystal_system,
    s.pearson_symbol,
    s.protostructure_label,
    s.lattice_dof,
    s.wyckoff_dof,
    s.dof,
    s.symprec,
    s.symmetry_method
FROM mp_materials AS m
LEFT JOIN stg_symmetry AS s
    ON s.dataset = m.dataset AND s.material_id = m.material_id
    AND s.symprec = (SELECT symprec FROM stg_defaults)
    AND s.symmetry_method = (SELECT method FROM stg_defaults);

-- DFT (MP2020-corrected) energy, formation energy and energy above the hull of each
-- accepted entry; the hull is built per dataset and chemical system from the entries.
CREATE OR REPLACE VIEW dft_stability AS
SELECT
    h.dataset,
    h.material_id,
    m.formula,
    m.chemsys,
    h.e_per_atom,
    h.e_form_per_atom,
    h.e_above_hull,
    d.correction_per_atom,
    d.e_raw_per_atom
FROM dft_hull AS h
JOIN mp_materials AS m ON m.dataset = h.dataset AND m.material_id = h.material_id
JOIN stg_dft_entries AS d ON d.dataset = h.dataset AND d.material_id = h.material_id;

-- Model energies on the fixed-DFT-hull convention (Matbench Discovery): formation energy
-- against the DFT elemental references, e_above_hull = DFT Ehull + formation-energy error.
-- Relaxed values are NULL unless the relaxation converged (status 'ok').
CREATE OR REPLACE VIEW model_energies AS
SELECT
    e.dataset,
    e.material_id,
    e.model,
    e.settings_hash,
    e.calc_kind,
    e.engine,
    e.status,
    e.converged,
    e.energy_convention,
    e.correction_per_atom,
    e.e_per_atom_single_point,
    e.e_per_atom_relaxed,
    e.e_per_atom_model,
    e.e_per_atom_model - h.e_ref_per_atom AS e_form_per_atom,
    h.e_above_hull + (e.e_per_atom_model - h.e_ref_per_atom - h.e_form_per_atom)
        AS e_above_hull,
    e.e_per_atom_single_point - h.e_ref_per_atom AS e_form_per_atom_single_point,
    h.e_above_hull + (e.e_per_atom_single_point - h.e_ref_per_atom - h.e_form_per_atom)
        AS e_above_hull_single_point,
    e.n_steps,
    e.max_force,
    e.spacegroup_before,
    e.spacegroup_after,
    e.symmetry_change,
    e.rmsd,
    e.volume_ratio,
    e.wall_time_s
FROM stg_model_energies AS e
JOIN dft_hull AS h ON h.dataset = e.dataset AND h.material_id = e.material_id;

-- Failed or unconverged calculations with their reason.
CREATE OR REPLACE VIEW calculation_failures AS
SELECT dataset, material_id, model, settings_hash, calc_kind, status, error, n_steps, wall_time_s
FROM calculations
WHERE status <> 'ok';
