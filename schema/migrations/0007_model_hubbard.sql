-- models.trained_with_u: whether the model was trained on GGA+U energies where MP uses +U
-- (the `trained_with_u` key of its metadata file; default true). FALSE for a model trained
-- on plain GGA/PBE without +U (e.g. MatPES PBE: tensornet-matpes-pbe-v2025.1): the views
-- compare such a model only with DFT entries computed without U (dft_entries.is_hubbard
-- false). NULL (rows stored before this migration, or written without it) counts as TRUE.

ALTER TABLE models ADD COLUMN trained_with_u BOOLEAN;
