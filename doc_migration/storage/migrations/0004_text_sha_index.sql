-- Loads reuse the stored vector of a row whose exact text is already loaded (a changed file whose
-- chunks kept their text): found by text hash.
CREATE INDEX IF NOT EXISTS partition_rows_text_sha ON @SCHEMA@.partition_rows (text_sha);
