-- Issue 18: Batch API bootstraps. One row per request file / batch the pipeline submits, written
-- BEFORE each step it records (intent before the upload, file id before the batch is created,
-- batch id before any wait), so a kill at any point is recognisable on resume: the file name
-- (doc-migration-<token>.jsonl) and the batch's metadata carry the token, and the next run adopts
-- an orphan file or batch instead of uploading or paying again.
-- status: 'intent' (nothing uploaded yet), 'uploaded' (file id known), then the server's batch
-- status (validating, in_progress, finalizing, cancelling, completed, failed, expired, cancelled).
-- ingested: the output is in embedding_cache and the batch's texts are no longer "in flight".
CREATE TABLE @SCHEMA@.embedding_batches (
    token          text PRIMARY KEY,
    run_id         text NOT NULL,
    model          text NOT NULL,
    dims           integer NOT NULL,
    partitions     text[] NOT NULL,
    requests       integer NOT NULL,
    inputs         integer NOT NULL,
    tokens         bigint NOT NULL,
    status         text NOT NULL DEFAULT 'intent',
    file_id        text,
    batch_id       text,
    output_file_id text,
    error_file_id  text,
    completed      integer NOT NULL DEFAULT 0,
    failed         integer NOT NULL DEFAULT 0,
    stored         integer NOT NULL DEFAULT 0,
    error          text,
    ingested       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX embedding_batches_live ON @SCHEMA@.embedding_batches (model, dims) WHERE NOT ingested;

-- Which text is input `position` of request `request` (custom_id "<token>-<request>") of a batch:
-- the output, unordered, is matched back to text hashes through this.
CREATE TABLE @SCHEMA@.embedding_batch_texts (
    token     text NOT NULL REFERENCES @SCHEMA@.embedding_batches (token) ON DELETE CASCADE,
    request   integer NOT NULL,
    position  integer NOT NULL,
    text_sha  bytea NOT NULL,
    PRIMARY KEY (token, request, position)
);
CREATE INDEX embedding_batch_texts_sha ON @SCHEMA@.embedding_batch_texts (text_sha);

-- Tokens of a run's spend that went through the Batch API (billed at half price).
ALTER TABLE @SCHEMA@.embedding_spend ADD COLUMN batch_tokens bigint NOT NULL DEFAULT 0;
