-- What a load replaced, so the load can be undone exactly (partition wipe / run rollback).
-- op = 'insert': the row did not exist before the load (undo deletes it);
-- op = 'update' / 'delete': the row's previous version and ownership (undo restores them).
CREATE TABLE @SCHEMA@.load_undo (
    load_id             bigint NOT NULL,
    document_id         uuid NOT NULL,
    op                  text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    doc_type            text NOT NULL,
    source_name         text NOT NULL,
    doc_path            text NOT NULL,
    content             text,
    metadata            jsonb,
    embedding           vector,
    token_count         integer,
    created_at          timestamptz,
    updated_at          timestamptz,
    prev_partition_key  text,
    prev_source_file    text,
    prev_document_path  text,
    prev_text_sha       bytea,
    prev_embed_key      text,
    PRIMARY KEY (load_id, document_id)
);

ALTER TABLE @SCHEMA@.loads
    ADD COLUMN sources          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN prev_state       jsonb,
    ADD COLUMN prev_quarantine  jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN quarantine       jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN undo_kept        boolean NOT NULL DEFAULT true;
CREATE INDEX loads_partition_idx ON @SCHEMA@.loads (partition_key, load_id DESC);

CREATE TABLE @SCHEMA@.rollbacks (
    rollback_id     bigserial PRIMARY KEY,
    load_id         bigint NOT NULL,
    partition_key   text NOT NULL,
    loaded_run_id   text NOT NULL,
    requested_by    text NOT NULL,
    rows_deleted    integer NOT NULL,
    rows_restored   integer NOT NULL,
    rolled_back_at  timestamptz NOT NULL DEFAULT now()
);
