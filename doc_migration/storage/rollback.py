"""Partition wipe and run rollback, on top of the ledger (open-source Dagster has no partition wipe).

Rolling back a load restores the partition's rows to exactly what they were before it (empty for
a first load, the previous version otherwise), its ownership records, its quarantine list and its
state, in one transaction. A run rollback undoes the run's loads newest first; each partition is
atomic, so a rollback interrupted by kill -9 is simply run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg import sql

from ..config import Settings
from .database import connection
from .file_state import forget_partition
from .locks import lock_partition_xact


class RollbackError(Exception):
    """The rollback cannot be done as asked; the message says why and what to do."""


@dataclass
class RollbackResult:
    partition: str
    load_id: int
    loaded_run_id: str
    rows_deleted: int
    rows_restored: int


def latest_load(settings: Settings, url: str, key: str) -> tuple[int, str] | None:
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        row = conn.execute(sql.SQL(
            "SELECT load_id, run_id FROM {}.loads WHERE partition_key = %s AND status = 'committed' "
            "ORDER BY load_id DESC LIMIT 1").format(s), (key,)).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def rollback_partition(settings: Settings, url: str, key: str, requested_by: str,
                       expect_load_id: int | None = None) -> RollbackResult:
    """Undo the latest committed load of ``key``."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        lock_partition_xact(conn, key)
        row = conn.execute(sql.SQL(
            "SELECT load_id, run_id, prev_state, prev_quarantine, sources, undo_kept FROM {}.loads "
            "WHERE partition_key = %s AND status = 'committed' ORDER BY load_id DESC LIMIT 1").format(s),
            (key,)).fetchone()
        if row is None:
            raise RollbackError(f"partition {key} has no committed load to roll back")
        load_id, loaded_run, prev_state, prev_quarantine, scope, undo_kept = row
        if expect_load_id is not None and load_id != expect_load_id:
            raise RollbackError(
                f"partition {key} was loaded again (load {load_id}, run {loaded_run}) after load {expect_load_id}; "
                f"roll back run {loaded_run} first")
        if not undo_kept:
            raise RollbackError(f"load {load_id} of partition {key} is too old: its undo data was pruned")
        deleted = conn.execute(sql.SQL(
            "DELETE FROM documents d USING {s}.load_undo u WHERE u.load_id = %s AND u.op = 'insert' "
            "AND d.id = u.document_id").format(s=s), (load_id,)).rowcount
        conn.execute(sql.SQL(
            "DELETE FROM {s}.partition_rows pr USING {s}.load_undo u WHERE u.load_id = %s "
            "AND pr.doc_type = u.doc_type AND pr.source_name = u.source_name AND pr.doc_path = u.doc_path"
        ).format(s=s), (load_id,))
        restored = conn.execute(sql.SQL(
            "INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count, "
            "created_at, updated_at) SELECT document_id, doc_type, source_name, doc_path, content, metadata, embedding, "
            "token_count, created_at, updated_at FROM {s}.load_undo WHERE load_id = %s AND op IN ('update', 'delete') "
            "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content, metadata = EXCLUDED.metadata, "
            "embedding = EXCLUDED.embedding, token_count = EXCLUDED.token_count, created_at = EXCLUDED.created_at, "
            "updated_at = EXCLUDED.updated_at").format(s=s), (load_id,)).rowcount
        conn.execute(sql.SQL(
            "INSERT INTO {s}.partition_rows (partition_key, document_id, doc_type, source_name, doc_path, source_file, "
            "document_path, text_sha, embed_key) SELECT prev_partition_key, document_id, doc_type, source_name, "
            "doc_path, prev_source_file, prev_document_path, prev_text_sha, prev_embed_key FROM {s}.load_undo "
            "WHERE load_id = %s AND op IN ('update', 'delete') AND prev_partition_key IS NOT NULL").format(s=s),
            (load_id,))
        conn.execute(sql.SQL("DELETE FROM {}.partition_state WHERE partition_key = %s").format(s), (key,))
        if prev_state is not None:
            conn.execute(sql.SQL(
                "INSERT INTO {}.partition_state SELECT * FROM json_populate_record(NULL::{}.partition_state, %s)"
            ).format(s, s), (json.dumps(prev_state),))
        conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE partition_key = %s AND source_name = ANY(%s)").format(s),
                     (key, scope))
        if prev_quarantine:
            conn.execute(sql.SQL(
                "INSERT INTO {}.quarantine SELECT * FROM json_populate_recordset(NULL::{}.quarantine, %s)"
            ).format(s, s), (json.dumps(prev_quarantine),))
        forget_partition(conn, s, key)
        conn.execute(sql.SQL("UPDATE {}.loads SET status = 'rolled_back' WHERE load_id = %s").format(s), (load_id,))
        conn.execute(sql.SQL(
            "INSERT INTO {}.rollbacks (load_id, partition_key, loaded_run_id, requested_by, rows_deleted, "
            "rows_restored) VALUES (%s,%s,%s,%s,%s,%s)").format(s),
            (load_id, key, loaded_run, requested_by, deleted, restored))
        conn.commit()
    return RollbackResult(key, load_id, loaded_run, deleted, restored)


def run_loads(settings: Settings, url: str, run_id: str) -> list[tuple[int, str]]:
    """(load_id, partition) of a run still committed, newest first."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT load_id, partition_key FROM {}.loads WHERE run_id = %s AND status = 'committed' "
            "ORDER BY load_id DESC").format(s), (run_id,)).fetchall()
        known = conn.execute(sql.SQL("SELECT 1 FROM {}.loads WHERE run_id = %s LIMIT 1").format(s),
                             (run_id,)).fetchone()
    if known is None:
        raise RollbackError(f"no load is recorded for run {run_id}; see 'doc-migrate history'")
    return [(int(r[0]), str(r[1])) for r in rows]


def rollback_run(settings: Settings, url: str, run_id: str, requested_by: str) -> list[RollbackResult]:
    """Undo every partition the run loaded, newest first; refuses if a later run reloaded one of them."""
    loads = run_loads(settings, url, run_id)
    for load_id, key in loads:
        latest = latest_load(settings, url, key)
        if latest is not None and latest[0] != load_id:
            raise RollbackError(
                f"partition {key} was loaded again by run {latest[1]} after run {run_id}; roll back run {latest[1]} "
                "first (newest first)")
    return [rollback_partition(settings, url, key, requested_by, expect_load_id=load_id) for load_id, key in loads]
