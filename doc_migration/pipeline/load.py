"""Stage 4, loaded rows: replace exactly one partition's rows in ``documents``, atomically.

One transaction per partition holds the row changes, the undo records (what the load replaced),
the quarantine list, the ledger row and the clean-up of the staging tables: after a crash the
partition is either fully at its new version or fully at its previous one. Only rows whose
content, metadata or embedding changed are written, so an unchanged re-run writes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..config import Settings
from ..storage.database import connection
from .faults import crash_point

UNDO_KEPT_LOADS = 3  # per partition: how many past loads can still be rolled back


class PartitionBusy(Exception):
    """Another run holds this partition's lock (CLI exit code 4)."""


@dataclass
class LoadResult:
    key: str
    status: str  # "loaded" | "unchanged" | "nothing-staged"
    load_id: int | None = None
    files: int = 0
    documents: int = 0
    documents_written: int = 0
    chunks: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        return self.inserted + self.updated + self.deleted


def partition_lock_id(key: str) -> str:
    return f"doc_migration:partition:{key}"


def lock_partition_xact(conn: psycopg.Connection, key: str) -> None:
    got = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (partition_lock_id(key),)).fetchone()
    if not got or not got[0]:
        raise PartitionBusy(f"partition {key} is being written by another run; wait for it to finish or stop it")


def _state_json(conn: psycopg.Connection, s: sql.Identifier, key: str) -> str | None:
    row = conn.execute(sql.SQL(
        "SELECT row_to_json(ps)::text FROM {}.partition_state ps WHERE partition_key = %s").format(s), (key,)).fetchone()
    return row[0] if row else None


def load_partition(settings: Settings, url: str, key: str, run_id: str) -> LoadResult:
    s = sql.Identifier(settings.pipeline_schema)
    start = time.perf_counter()
    with connection(url) as conn:
        lock_partition_xact(conn, key)
        staged = conn.execute(sql.SQL(
            "SELECT checksum, files, documents, chunks, quarantine, staged_at, sources FROM {}.staged_partitions "
            "WHERE partition_key = %s").format(s), (key,)).fetchone()
        if staged is None:
            state = conn.execute(sql.SQL("SELECT documents, chunks FROM {}.partition_state WHERE partition_key = %s")
                                 .format(s), (key,)).fetchone()
            conn.rollback()
            if state is not None:
                return LoadResult(key, "unchanged", documents=state[0], chunks=state[1])
            return LoadResult(key, "nothing-staged")
        checksum, files, documents, chunks, quarantine, staged_at, scope = staged

        conn.execute(sql.SQL(
            "CREATE TEMP TABLE _new ON COMMIT DROP AS "
            "SELECT st.id, st.doc_type, st.source_name, st.doc_path, st.source_file, st.document_path, st.content, "
            "       st.metadata, st.text_sha, st.token_count, "
            "       coalesce(st.carried_embedding, c.embedding) AS embedding, "
            "       CASE WHEN st.carried_embedding IS NOT NULL THEN 'carried' ELSE %s END AS embed_key "
            "FROM {s}.staged_chunks st LEFT JOIN {s}.embedding_cache c "
            "  ON c.model = %s AND c.dims = %s AND c.text_sha = st.text_sha "
            "WHERE st.partition_key = %s").format(s=s),
            (settings.model_name, settings.model_name, settings.embedding_dims, key))
        missing = conn.execute("SELECT count(*) FROM _new WHERE embedding IS NULL").fetchone()
        if missing and missing[0]:
            raise RuntimeError(f"partition {key}: {missing[0]} staged chunks have no embedding; run the embeddings step")

        prev_quarantine = conn.execute(sql.SQL(
            "SELECT coalesce(json_agg(row_to_json(q)), '[]'::json)::text FROM {}.quarantine q "
            "WHERE partition_key = %s AND source_name = ANY(%s)").format(s), (key, scope)).fetchone()
        row = conn.execute(sql.SQL(
            "INSERT INTO {}.loads (run_id, partition_key, checksum, files, documents, documents_written, chunks, "
            "rows_inserted, rows_updated, rows_deleted, quarantined, started_at, status, sources, prev_state, "
            "prev_quarantine, quarantine) VALUES (%s,%s,%s,%s,%s,0,%s,0,0,0,%s,%s,'loading',%s,%s::jsonb,%s::jsonb,%s) "
            "RETURNING load_id").format(s),
            (run_id, key, checksum, files, documents, chunks, len(quarantine), staged_at, scope,
             _state_json(conn, s, key), prev_quarantine[0] if prev_quarantine else "[]",
             json.dumps(quarantine))).fetchone()
        assert row is not None
        load_id = int(row[0])

        # Rows this partition owned (for these sources) that the new version no longer has.
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE _gone ON COMMIT DROP AS SELECT pr.* FROM {s}.partition_rows pr "
            "WHERE pr.partition_key = %s AND pr.source_name = ANY(%s) AND NOT EXISTS (SELECT 1 FROM _new n "
            "WHERE n.doc_type = pr.doc_type AND n.source_name = pr.source_name AND n.doc_path = pr.doc_path)"
        ).format(s=s), (key, scope))
        # New rows whose content, metadata or embedding differ from what is stored.
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE _changed ON COMMIT DROP AS SELECT n.* FROM _new n WHERE NOT EXISTS ("
            "  SELECT 1 FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "  WHERE pr.doc_type = n.doc_type AND pr.source_name = n.source_name AND pr.doc_path = n.doc_path "
            "    AND pr.partition_key = %s AND pr.text_sha = n.text_sha AND pr.embed_key = n.embed_key "
            "    AND d.content = n.content AND d.metadata = n.metadata AND d.token_count = n.token_count "
            "    AND d.embedding IS NOT NULL)").format(s=s), (key,))

        undo_cols = sql.SQL(
            "load_id, document_id, op, doc_type, source_name, doc_path, content, metadata, embedding, token_count, "
            "created_at, updated_at, prev_partition_key, prev_source_file, prev_document_path, prev_text_sha, "
            "prev_embed_key")
        conn.execute(sql.SQL(
            "INSERT INTO {s}.load_undo ({cols}) SELECT %s, d.id, 'delete', d.doc_type, d.source_name, d.doc_path, "
            "d.content, d.metadata, d.embedding, d.token_count, d.created_at, d.updated_at, g.partition_key, "
            "g.source_file, g.document_path, g.text_sha, g.embed_key FROM _gone g JOIN documents d ON d.id = g.document_id"
        ).format(s=s, cols=undo_cols), (load_id,))
        conn.execute(sql.SQL(
            "INSERT INTO {s}.load_undo ({cols}) SELECT %s, coalesce(d.id, c.id), "
            "CASE WHEN d.id IS NULL THEN 'insert' ELSE 'update' END, c.doc_type, c.source_name, c.doc_path, "
            "d.content, d.metadata, d.embedding, d.token_count, d.created_at, d.updated_at, pr.partition_key, "
            "pr.source_file, pr.document_path, pr.text_sha, pr.embed_key FROM _changed c "
            "LEFT JOIN documents d ON d.doc_type = c.doc_type AND d.source_name = c.source_name AND d.doc_path = c.doc_path "
            "LEFT JOIN {s}.partition_rows pr ON pr.doc_type = c.doc_type AND pr.source_name = c.source_name "
            "  AND pr.doc_path = c.doc_path").format(s=s, cols=undo_cols), (load_id,))

        deleted = conn.execute("DELETE FROM documents d USING _gone g WHERE d.id = g.document_id").rowcount
        crash_point("load-during-write")
        conn.execute(sql.SQL("DELETE FROM {s}.partition_rows pr USING _gone g WHERE pr.partition_key = g.partition_key "
                             "AND pr.document_id = g.document_id").format(s=s))
        written = conn.execute(sql.SQL(
            "WITH up AS ("
            "  INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) "
            "  SELECT id, doc_type, source_name, doc_path, content, metadata, embedding, token_count FROM _changed "
            "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET content = EXCLUDED.content, "
            "    metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, token_count = EXCLUDED.token_count, "
            "    updated_at = now() "
            "  RETURNING id, doc_type, source_name, doc_path, (xmax = 0) AS inserted"
            "), own AS ("
            "  INSERT INTO {s}.partition_rows (partition_key, document_id, doc_type, source_name, doc_path, source_file,"
            "    document_path, text_sha, embed_key) "
            "  SELECT %s, up.id, c.doc_type, c.source_name, c.doc_path, c.source_file, c.document_path, c.text_sha, "
            "    c.embed_key FROM up JOIN _changed c USING (doc_type, source_name, doc_path) "
            "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET partition_key = EXCLUDED.partition_key, "
            "    document_id = EXCLUDED.document_id, source_file = EXCLUDED.source_file, "
            "    document_path = EXCLUDED.document_path, text_sha = EXCLUDED.text_sha, embed_key = EXCLUDED.embed_key "
            "  RETURNING 1"
            ") SELECT count(*) FILTER (WHERE up.inserted), count(*) FILTER (WHERE NOT up.inserted), "
            "  count(DISTINCT c.document_path), (SELECT count(*) FROM own) "
            "FROM up JOIN _changed c USING (doc_type, source_name, doc_path)"
        ).format(s=s), (key,)).fetchone()
        assert written is not None
        inserted, updated, docs_written = int(written[0]), int(written[1]), int(written[2])

        conn.execute(
            "INSERT INTO document_sources (doc_type, source_name, config, enabled, last_updated) "
            "SELECT DISTINCT doc_type, source_name, '{\"managed_by\": \"doc_migration\"}'::jsonb, true, now() FROM _new "
            "ON CONFLICT (doc_type, source_name) DO UPDATE SET last_updated = now(), updated_at = now()")
        conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE partition_key = %s AND source_name = ANY(%s)").format(s),
                     (key, scope))
        for q in quarantine:
            conn.execute(sql.SQL(
                "INSERT INTO {}.quarantine (partition_key, source_name, rel_path, doc_type, stage, reason, hint, run_id) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING").format(s),
                (key, q["source_name"], q["path"], q["doc_type"], q["stage"], q["reason"], q.get("hint", ""), run_id))
        owned = conn.execute(sql.SQL(
            "SELECT count(*), count(DISTINCT (doc_type, source_name, document_path)) FROM {}.partition_rows "
            "WHERE partition_key = %s").format(s), (key,)).fetchone()
        assert owned is not None
        conn.execute(sql.SQL(
            "INSERT INTO {}.partition_state (partition_key, checksum, run_id, load_id, files, documents, chunks, "
            "quarantined) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (partition_key) DO UPDATE SET "
            "checksum = EXCLUDED.checksum, run_id = EXCLUDED.run_id, load_id = EXCLUDED.load_id, files = EXCLUDED.files, "
            "documents = EXCLUDED.documents, chunks = EXCLUDED.chunks, quarantined = EXCLUDED.quarantined, "
            "loaded_at = now()").format(s),
            (key, checksum, run_id, load_id, files, int(owned[1]), int(owned[0]), len(quarantine)))
        conn.execute(sql.SQL(
            "UPDATE {}.loads SET status = 'committed', documents_written = %s, rows_inserted = %s, rows_updated = %s, "
            "rows_deleted = %s, committed_at = now() WHERE load_id = %s").format(s),
            (docs_written, inserted, updated, deleted, load_id))
        # Keep undo data for the last few loads of the partition only.
        conn.execute(sql.SQL(
            "WITH old AS (SELECT load_id FROM {s}.loads WHERE partition_key = %s AND undo_kept "
            "  ORDER BY load_id DESC OFFSET %s), "
            "u AS (UPDATE {s}.loads SET undo_kept = false WHERE load_id IN (SELECT load_id FROM old)) "
            "DELETE FROM {s}.load_undo WHERE load_id IN (SELECT load_id FROM old)").format(s=s),
            (key, UNDO_KEPT_LOADS))
        conn.execute(sql.SQL("DELETE FROM {}.staged_chunks WHERE partition_key = %s").format(s), (key,))
        conn.execute(sql.SQL("DELETE FROM {}.staged_partitions WHERE partition_key = %s").format(s), (key,))
        crash_point("load-before-commit")
        conn.commit()
        crash_point("load-after-commit")
    return LoadResult(key, "loaded", load_id, files, documents, docs_written, chunks, inserted, updated, deleted,
                      len(quarantine), time.perf_counter() - start)
