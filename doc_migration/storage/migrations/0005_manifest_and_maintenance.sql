-- Which manifest each load came from: rows in a partition that the current manifest does not
-- produce ("foreign" rows, e.g. the sample corpus's after switching to a real manifest) can be
-- named with the manifest that loaded them.
ALTER TABLE @SCHEMA@.loads ADD COLUMN manifest text;

-- Ledger changes that are neither loads nor rollbacks, for `doc-migrate history`:
-- event = 'reset': `validate --repair` deleted the partition's rows to reload them; reloaded_at
--         stays NULL until a load of the partition commits (a repair that died half way leaves
--         the list of partitions awaiting reload here; `full` and `validate --repair` finish them);
-- event = 'prune': `prune --foreign` deleted rows of a source the manifest no longer produces.
CREATE TABLE @SCHEMA@.maintenance (
    event_id       bigserial PRIMARY KEY,
    event          text NOT NULL CHECK (event IN ('reset', 'prune')),
    partition_key  text NOT NULL,
    source_name    text,
    rows_deleted   integer NOT NULL DEFAULT 0,
    reason         text NOT NULL DEFAULT '',
    requested_by   text NOT NULL DEFAULT '',
    manifest       text,
    at             timestamptz NOT NULL DEFAULT now(),
    reloaded_at    timestamptz
);
CREATE INDEX maintenance_pending_idx ON @SCHEMA@.maintenance (partition_key) WHERE event = 'reset' AND reloaded_at IS NULL;
