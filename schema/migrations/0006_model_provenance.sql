-- Provenance of every result: which checkpoint made it.
-- models.base_model: the model a derived model (`mliapdb ingest relax --model BASE
-- --checkpoint FILE --as NAME`) was derived from (NULL for models of a metadata file).
-- calculations.checkpoint_sha256: sha256 of the checkpoint that made the row; rows stored
-- before this migration take their model's registered sha256.

ALTER TABLE models ADD COLUMN base_model VARCHAR;
ALTER TABLE calculations ADD COLUMN checkpoint_sha256 VARCHAR;
UPDATE calculations AS c SET checkpoint_sha256 = m.checkpoint_sha256
FROM models AS m WHERE m.name = c.model;
