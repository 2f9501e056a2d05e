-- Reserved for the streaming-ingest migration (issue 11, another branch), which replaces this
-- file when the branches meet: migration numbers run 1..N without gaps, and the generation
-- markers below are 0009. It changes nothing.

SELECT 1;
