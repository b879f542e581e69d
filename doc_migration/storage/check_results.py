"""The asset checks' results of a run, kept for the run's validation report (which would otherwise
run every check a second time). Written by the checks, read by the report: neither imports the
other, and nothing polls Dagster's event log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import Settings
from .database import connection


@contextmanager
def recording(settings: Settings, url: str, run_id: str, check_name: str) -> Iterator[dict[str, Any]]:
    """Mark the check running, yield a dict for its result, store it as done. A check that raises
    leaves no row (the report computes that check itself)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO {}.check_results (run_id, check_name, status) VALUES (%s, %s, 'running') "
            "ON CONFLICT (run_id, check_name) DO UPDATE SET status = 'running', result = NULL, started_at = now(), "
            "finished_at = NULL").format(s), (run_id, check_name))
        conn.commit()
    out: dict[str, Any] = {}
    try:
        yield out
    except BaseException:
        with connection(url) as conn:
            conn.execute(sql.SQL("DELETE FROM {}.check_results WHERE run_id = %s AND check_name = %s").format(s),
                         (run_id, check_name))
            conn.commit()
        raise
    with connection(url) as conn:
        conn.execute(sql.SQL(
            "UPDATE {}.check_results SET status = 'done', result = %s, finished_at = now() "
            "WHERE run_id = %s AND check_name = %s").format(s),
            (Jsonb(json.loads(json.dumps(out, default=str))), run_id, check_name))
        conn.commit()


def for_run(settings: Settings, url: str, run_id: str, wait_seconds: float = 300.0,
            poll_seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    """Finished results of the run's checks, by validation check name. Checks still running are
    waited for (recomputing one beside itself would only split the CPU), at most ``wait_seconds``:
    a check process that died must not stall the report for long."""
    s = sql.Identifier(settings.pipeline_schema)
    deadline = time.monotonic() + wait_seconds
    while True:
        with connection(url) as conn:
            rows = conn.execute(sql.SQL(
                "SELECT check_name, status, result FROM {}.check_results WHERE run_id = %s").format(s),
                (run_id,)).fetchall()
        done = {name: result for name, status, result in rows if status == "done" and isinstance(result, dict)}
        if len(done) == len(rows) or time.monotonic() >= deadline:
            return done
        time.sleep(poll_seconds)
