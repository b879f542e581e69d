-- Issue 16: each asset check of a run writes its full result here, so the run's validation report
-- reuses it without reading Dagster's event log. status 'running' while the check computes (the
-- report waits for it, bounded), 'done' with the result. Rows are a cache of one run's checks:
-- deleting them only makes a report recompute.
CREATE TABLE @SCHEMA@.check_results (
    run_id      text NOT NULL,
    check_name  text NOT NULL,
    status      text NOT NULL CHECK (status IN ('running', 'done')),
    result      jsonb,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, check_name)
);
