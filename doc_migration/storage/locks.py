"""The pipeline's advisory locks, in one place: one per partition for writers (a load, a rollback, a
repair or a prune holds it for its transaction) and one per partition for a whole `doc-migrate` run
(held by a session, so that a second run on the same partitions fails fast)."""

from __future__ import annotations

import select

import psycopg

from .database import connect


class PartitionBusy(Exception):
    """Another run holds this partition's lock (CLI exit code 4)."""


def partition_lock_id(key: str) -> str:
    return f"doc_migration:partition:{key}"


def lock_partition_xact(conn: psycopg.Connection, key: str) -> None:
    """Take the partition's writer lock until the transaction ends, or fail at once if it is taken."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (partition_lock_id(key),)).fetchone()
    if not got or not got[0]:
        raise PartitionBusy(f"partition {key} is being written by another run; wait for it to finish or stop it")


def acquire_run_locks(url: str, keys: list[str]) -> psycopg.Connection:
    """Session advisory locks on a dedicated connection (close it to release them; the server releases
    them if this process dies)."""
    conn = connect(url, autocommit=True)
    for key in keys:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"doc_migration:run:{key}",)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise PartitionBusy(f"partition {key} is being migrated by another doc-migrate run; "
                                "wait for it to finish (see 'doc-migrate status') or stop it")
    return conn


RUN_LOCKS_LOST = ("the database session holding this run's partition locks was lost (the server crashed, restarted "
                  "or ended it), so another run could take the same partitions: this run stopped; committed "
                  "partitions are kept, run 'doc-migrate full' again to resume")


def run_locks_lost(conn: psycopg.Connection, *, probe: bool = False) -> bool:
    """Whether the session of :func:`acquire_run_locks` is gone, and its locks with it.

    Without ``probe``, a round trip only when its socket is readable (an idle session receives
    nothing unless the server ended it), so it can be asked every fraction of a second; with
    ``probe``, always one round trip (the last word before a run reports success)."""
    if conn.closed or conn.broken:
        return True
    if not probe:
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            return True
        if not readable:
            return False
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return True
    return False


def acquire_batch_lock(url: str) -> psycopg.Connection:
    """One process at a time submits, adopts and ingests Batch API batches: a second one could take a
    batch recorded mid-upload by the first for an orphan and forget it (close the connection to release)."""
    conn = connect(url, autocommit=True)
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext('doc_migration:embedding_batches'))").fetchone()
    if not row or not row[0]:
        conn.close()
        raise PartitionBusy("another doc-migrate run is submitting or waiting for Batch API batches; wait for it "
                            "to finish (see 'doc-migrate batches') or stop it")
    return conn
