-- Issue 17, re-runs that cost what changed. The duplicate check's SimHash per distinct text, computed once. A re-run that changed a
-- few files fingerprints only their new texts; every other row's fingerprint is read from here.
-- Keyed by the text's sha256 and the shingling settings it was computed with (a setting change
-- computes new fingerprints; the old ones are merely unused). simhash is NULL for a text too short
-- to fingerprint (fewer than min_words words), so it is not shingled again either.
CREATE TABLE @SCHEMA@.text_fingerprints (
    text_sha      bytea NOT NULL,
    shingle_words smallint NOT NULL,
    min_words     smallint NOT NULL,
    simhash       bigint,
    PRIMARY KEY (text_sha, shingle_words, min_words)
);

-- The scan's stat key per file (size, mtime, ctime, inode, device), recorded with its sha256 only when
-- the file was settled when hashed: a later scan that finds the same key reuses the sha256 instead
-- of reading the file again (NULL: always read).
ALTER TABLE @SCHEMA@.partition_files ADD COLUMN stat_key text;

-- Room on each page of documents for an updated row's new version. A re-run rewrites every chunk
-- of an edited file (its metadata carries the file's sha256) while most keep their text and vector;
-- such an update touches no indexed column, and with free space on the page PostgreSQL writes it
-- as a heap-only tuple: no new entry in the HNSW index (measured: 3 ms -> under 0.1 ms per row).
-- Only new pages are filled to 80 %; a table another role owns is left as it is.
DO $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'documents'::regclass), 'USAGE') THEN
        ALTER TABLE documents SET (fillfactor = 80);
    END IF;
END
$$;
