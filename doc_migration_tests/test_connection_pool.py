"""The storage layer's connection pool hands out sessions that look freshly opened."""

from __future__ import annotations

import multiprocessing
import os
import time

import psycopg
import pytest

from doc_migration.storage import database
from doc_migration.storage.database import POOL, connection


@pytest.fixture()
def vector_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    POOL.close_all()
    return database_url


def _backend(url: str) -> int:
    with connection(url) as conn:
        return conn.info.backend_pid


def test_a_returned_connection_is_reused_with_its_session_reset(vector_url: str) -> None:
    with connection(vector_url) as conn:
        first = conn.info.backend_pid
        conn.execute("SET enable_seqscan = off")
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("SELECT pg_advisory_lock(42)")
        conn.execute("SELECT 1")  # a transaction left open
    with connection(vector_url) as conn:
        assert conn.info.backend_pid == first
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
        assert conn.execute("SELECT to_regclass('pg_temp.scratch')").fetchone() == (None,)
        locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert locks == (0,)
        # The pipeline's session limits survive the reset (they are the session's defaults).
        assert conn.execute("SHOW lock_timeout").fetchone() == ("1min",)
        assert conn.execute("SELECT '[1,2]'::vector").fetchone()[0].to_list() == [1.0, 2.0]


def test_a_terminated_backend_is_not_handed_out(vector_url: str, pg_server_url: str) -> None:
    first = _backend(vector_url)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        admin.execute("SELECT pg_sleep(0.2)")
    with connection(vector_url) as conn:
        assert conn.info.backend_pid != first
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_failed_unit_of_work_leaves_no_transaction_behind(vector_url: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), connection(vector_url) as conn:
        conn.execute("SELECT * FROM no_such_table")
    with connection(vector_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_opened_before_the_extension_is_not_kept(database_url: str) -> None:
    POOL.close_all()
    first = _backend(database_url)  # no vector type yet: this session cannot read vectors
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with connection(database_url) as conn:
        assert conn.info.backend_pid != first
        assert conn.execute("SELECT '[3]'::vector").fetchone()[0].to_list() == [3.0]


def _child_backend(url: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(_backend(url))


def test_a_forked_child_never_uses_its_parents_sockets(vector_url: str) -> None:
    parent = _backend(vector_url)
    queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()  # type: ignore[type-arg]
    child = multiprocessing.get_context("fork").Process(target=_child_backend, args=(vector_url, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) != parent
    assert _backend(vector_url) == parent  # and the parent's session still works


def test_idle_connections_are_bounded_across_databases(vector_url: str) -> None:
    with connection(vector_url) as a, connection(vector_url) as b, connection(vector_url) as c:
        assert len({a.info.backend_pid, b.info.backend_pid, c.info.backend_pid}) == 3
    for timeout in range(60_000, 60_019):  # a distinct key each: a process that visits many databases
        with connection(vector_url, statement_timeout_ms=timeout):
            pass
    idle = sum(len(v) for k, v in POOL._idle.items() if k[0] == os.getpid())
    assert idle <= database.ConnectionPool.MAX_IDLE


def test_a_run_notices_when_the_server_drops_its_lock_session(database_url: str, pg_server_url: str) -> None:
    """A crash or restart releases a run's session locks: `full` must see it and stop (exit 5)."""
    from doc_migration.storage.locks import acquire_run_locks, run_locks_lost

    conn = acquire_run_locks(database_url, ["rust-00"])
    try:
        assert not run_locks_lost(conn) and not run_locks_lost(conn, probe=True)
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        deadline = time.monotonic() + 5
        while not run_locks_lost(conn):  # without a round trip, once the termination notice arrives
            assert time.monotonic() < deadline, "the dropped lock session went unnoticed"
            time.sleep(0.02)
        assert run_locks_lost(conn, probe=True)
    finally:
        conn.close()


def test_only_a_lost_session_counts_as_a_lost_connection() -> None:
    """Retryable (exit 5): the server closed the socket or shut down; not: a statement failed."""
    gone = psycopg.OperationalError("server closed the connection unexpectedly")
    lost = database.lost_connection(gone)
    assert lost is not None and lost.retryable and "run the same command again" in str(lost)
    assert database.lost_connection(psycopg.errors.AdminShutdown("terminating connection")) is not None
    assert database.lost_connection(psycopg.errors.LockNotAvailable("lock timeout")) is None
    assert database.lost_connection(psycopg.errors.QueryCanceled("statement timeout")) is None
    assert database.lost_connection(ValueError("no")) is None
