-- Pages of the whole-MP query of 'mliapdb ingest mp --all' (every GGA_GGA+U thermo document,
-- paged with _skip/_limit): one row per committed page and dataset, written in the page's own
-- transaction with its entries, so an interrupted run resumes after the last committed page
-- and a finished one (pages adding up to total_doc) is not fetched again.
-- `sha256` is that of the canonical JSON of the page's GGA/GGA+U entries, the same as the
-- page's row in source_files (path 'mp-api:all:docs=FIRST-LAST'); `material_ids` is the JSON
-- list of every document id the page served (left-out ones too), in the order served.

CREATE TABLE mp_api_pages (
    dataset VARCHAR NOT NULL,
    page_skip INTEGER NOT NULL,
    page_limit INTEGER NOT NULL,
    n_docs INTEGER NOT NULL,
    total_doc INTEGER NOT NULL,
    n_entries INTEGER NOT NULL,
    n_skipped INTEGER NOT NULL,
    sha256 VARCHAR NOT NULL,
    material_ids VARCHAR NOT NULL,
    db_version VARCHAR,
    endpoint VARCHAR NOT NULL,
    thermo_type VARCHAR NOT NULL,
    client VARCHAR NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, page_skip)
);
