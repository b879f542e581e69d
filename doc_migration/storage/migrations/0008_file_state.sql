-- Issue 17: incremental at file granularity. file_state is what each loaded file of a partition
-- produced (written in the load transaction that committed it): its bytes' sha256, the version of
-- the configuration it was parsed with (parser, chunker, limits, metadata, model), and the row ids
-- it owns. A run re-parses only files whose sha256 or version differ, keeps the other files' rows
-- as they are, and prunes the rows of files that are gone. Deleting a partition's file_state only
-- makes its next change a full re-parse (rollback, reset and prune do that).
CREATE TABLE @SCHEMA@.file_state (
    partition_key text NOT NULL,
    source_name   text NOT NULL,
    rel_path      text NOT NULL,
    sha256        text,
    version       text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('loaded', 'refused')),
    documents     integer NOT NULL,
    row_ids       uuid[] NOT NULL,
    load_id       bigint NOT NULL,
    PRIMARY KEY (partition_key, source_name, rel_path)
);

-- The staged version's files: every file it parsed (outcome 'loaded' or 'refused') and, for an
-- incremental version, every file it deletes (outcome 'deleted'). A load replaces exactly these
-- files' rows when the version is incremental, and the partition's whole row set otherwise.
CREATE TABLE @SCHEMA@.staged_files (
    partition_key text NOT NULL,
    source_name   text NOT NULL,
    rel_path      text NOT NULL,
    sha256        text,
    version       text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('loaded', 'refused', 'deleted')),
    documents     integer NOT NULL,
    row_ids       uuid[] NOT NULL,
    PRIMARY KEY (partition_key, source_name, rel_path)
);

-- base_load_id: the partition load an incremental staged version was computed against (NULL: a
-- full version, which replaces everything). A load refuses an incremental version whose base is
-- no longer the partition's latest load. files_parsed: how many of the files were parsed.
ALTER TABLE @SCHEMA@.staged_partitions ADD COLUMN base_load_id bigint, ADD COLUMN files_parsed integer;
-- files_parsed / chunks_parsed: what the load's staged version re-processed (NULL before 0008: all of it).
ALTER TABLE @SCHEMA@.loads ADD COLUMN files_parsed integer, ADD COLUMN chunks_parsed integer,
    ADD COLUMN incremental boolean NOT NULL DEFAULT false;
