"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from doc_migration.storage.embedded_pg import embedded_database_url

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = (REPO_ROOT.parent / "shared" / "corpus").resolve()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the session's server database (``postgres``).

    The server's home is outside pytest's temp tree on purpose: pytest keeps that tree private
    (0700) and, as root, the embedded server runs as its own user, which must traverse the path.
    """
    home = os.environ.get("DOC_MIGRATION_TEST_HOME") or tempfile.mkdtemp(prefix="doc_migration_pg_")
    Path(home).chmod(0o755)
    return embedded_database_url(Path(home))


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture()
def database_url(pg_server_url: str) -> Iterator[str]:
    """A brand-new, empty database on the embedded server for one test (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def shared_corpus() -> Path:
    if not SHARED_CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present")
    return SHARED_CORPUS
