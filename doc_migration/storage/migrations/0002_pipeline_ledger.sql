-- The pipeline's own bookkeeping. Nothing here is read by the doc-server, and nothing of this
-- lives in the doc-server's tables.

-- Files seen by the latest scan of each partition (the source manifest asset).
CREATE TABLE @SCHEMA@.partition_files (
    partition_key text NOT NULL,
    source_name   text NOT NULL,
    rel_path      text NOT NULL,
    doc_type      text NOT NULL,
    fmt           text NOT NULL,
    size_bytes    bigint NOT NULL,
    sha256        text,
    refusal       text,
    run_id        text NOT NULL,
    PRIMARY KEY (partition_key, source_name, rel_path)
);

-- Scanned checksum per partition (written by source_manifest, compared with the loaded one).
CREATE TABLE @SCHEMA@.partition_scans (
    partition_key text PRIMARY KEY,
    checksum      text NOT NULL,
    files         integer NOT NULL,
    bytes         bigint NOT NULL,
    run_id        text NOT NULL,
    scanned_at    timestamptz NOT NULL DEFAULT now()
);

-- Parsed and chunked content waiting to be embedded and loaded (one staged version per partition).
CREATE TABLE @SCHEMA@.staged_partitions (
    partition_key text PRIMARY KEY,
    checksum      text NOT NULL,
    run_id        text NOT NULL,
    files         integer NOT NULL,
    documents     integer NOT NULL,
    chunks        integer NOT NULL,
    quarantine    jsonb NOT NULL DEFAULT '[]'::jsonb,
    sources       text[] NOT NULL,  -- source names this manifest replaces in the partition
    staged_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE @SCHEMA@.staged_chunks (
    partition_key     text NOT NULL,
    id                uuid NOT NULL,
    doc_type          text NOT NULL,
    source_name       text NOT NULL,
    doc_path          text NOT NULL,
    source_file       text NOT NULL,
    document_path     text NOT NULL,
    content           text NOT NULL,
    metadata          jsonb NOT NULL,
    text_sha          bytea NOT NULL,
    token_count       integer NOT NULL,
    carried_embedding vector,
    PRIMARY KEY (partition_key, doc_type, source_name, doc_path)
);

-- Vectors already paid for, keyed by exact input text: a re-run or a redo costs nothing.
CREATE TABLE @SCHEMA@.embedding_cache (
    model      text NOT NULL,
    dims       integer NOT NULL,
    text_sha   bytea NOT NULL,
    embedding  vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, dims, text_sha)
);

-- The rows each partition owns in documents, and what they hold (for minimal, exact replaces).
CREATE TABLE @SCHEMA@.partition_rows (
    partition_key text NOT NULL,
    document_id   uuid NOT NULL,
    doc_type      text NOT NULL,
    source_name   text NOT NULL,
    doc_path      text NOT NULL,
    source_file   text NOT NULL,
    document_path text NOT NULL,
    text_sha      bytea NOT NULL,
    embed_key     text NOT NULL,
    PRIMARY KEY (partition_key, document_id)
);
CREATE UNIQUE INDEX partition_rows_identity ON @SCHEMA@.partition_rows (doc_type, source_name, doc_path);

-- Current state of each loaded partition (the checkpoint).
CREATE TABLE @SCHEMA@.partition_state (
    partition_key text PRIMARY KEY,
    checksum      text NOT NULL,
    run_id        text NOT NULL,
    load_id       bigint NOT NULL,
    files         integer NOT NULL,
    documents     integer NOT NULL,
    chunks        integer NOT NULL,
    quarantined   integer NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now()
);

-- History: one row per partition load.
CREATE TABLE @SCHEMA@.loads (
    load_id         bigserial PRIMARY KEY,
    run_id          text NOT NULL,
    partition_key   text NOT NULL,
    checksum        text NOT NULL,
    files           integer NOT NULL,
    documents       integer NOT NULL,
    documents_written integer NOT NULL,
    chunks          integer NOT NULL,
    rows_inserted   integer NOT NULL,
    rows_updated    integer NOT NULL,
    rows_deleted    integer NOT NULL,
    quarantined     integer NOT NULL,
    started_at      timestamptz NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'committed'
);
CREATE INDEX loads_run_idx ON @SCHEMA@.loads (run_id);

-- Files refused with a reason (current state per partition) and the run that refused them.
CREATE TABLE @SCHEMA@.quarantine (
    partition_key text NOT NULL,
    source_name   text NOT NULL,
    rel_path      text NOT NULL,
    doc_type      text NOT NULL,
    stage         text NOT NULL,
    reason        text NOT NULL,
    hint          text NOT NULL DEFAULT '',
    run_id        text NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition_key, source_name, rel_path)
);

-- Partitions that failed in a run (an unexpected error, not a quarantined file).
CREATE TABLE @SCHEMA@.partition_failures (
    run_id        text NOT NULL,
    partition_key text NOT NULL,
    stage         text NOT NULL,
    error         text NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, partition_key, stage)
);

-- Per-run embedding spend, per partition.
CREATE TABLE @SCHEMA@.embedding_spend (
    run_id        text NOT NULL,
    partition_key text NOT NULL,
    model         text NOT NULL,
    inputs        integer NOT NULL,
    cache_hits    integer NOT NULL,
    tokens        bigint NOT NULL,
    requests      integer NOT NULL,
    retries       integer NOT NULL,
    seconds       double precision NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, partition_key)
);
