-- The doc-server's own tables, exactly as the doc-server expects them. Created only if absent:
-- an existing doc-server database is adopted as it is (its dimension is checked before this runs).
CREATE TABLE IF NOT EXISTS documents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    doc_type    text NOT NULL,
    source_name text NOT NULL,
    doc_path    text NOT NULL,
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding   vector(@DIMS@),
    token_count integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (doc_type, source_name, doc_path)
);
CREATE INDEX IF NOT EXISTS documents_doc_type_source_idx ON documents (doc_type, source_name);

CREATE TABLE IF NOT EXISTS document_sources (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    doc_type     text NOT NULL,
    source_name  text NOT NULL,
    config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled      boolean NOT NULL DEFAULT true,
    last_updated timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (doc_type, source_name)
);
