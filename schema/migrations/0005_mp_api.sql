-- Entries fetched from the Materials Project API ('mliapdb ingest mp'): one row per fetched
-- chemical system (with all its subsystems) and dataset, naming the MP database version the
-- API served. `sha256` is that of the canonical JSON of the fetched entries, the same as the
-- fetch's row in source_files (path 'mp-api:chemsys=Fe-Li-O').

CREATE TABLE mp_api_fetches (
    sha256 VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    chemsys VARCHAR NOT NULL,
    db_version VARCHAR,
    endpoint VARCHAR NOT NULL,
    thermo_type VARCHAR NOT NULL,
    client VARCHAR NOT NULL,
    n_entries INTEGER NOT NULL,
    n_skipped INTEGER NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    PRIMARY KEY (sha256, dataset)
);
