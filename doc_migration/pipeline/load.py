"""Stage 4, loaded rows: replace exactly one partition's rows in ``documents``, atomically.

One transaction per partition holds the row changes, the quarantine list, the ledger row and
the clean-up of the staging tables: after a crash the partition is either fully at its new
version or fully at its previous one. Only rows whose content, metadata or embedding changed are
written, so an unchanged re-run writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg import sql

from ..config import Settings
from ..storage.database import connection


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


def load_partition(settings: Settings, url: str, key: str, run_id: str) -> LoadResult:
    s = sql.Identifier(settings.pipeline_schema)
    start = time.perf_counter()
    with connection(url) as conn:
        got = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (partition_lock_id(key),)).fetchone()
        if not got or not got[0]:
            raise PartitionBusy(f"partition {key} is being loaded by another run; wait for it or stop it")
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
        deleted = conn.execute(sql.SQL(
            "DELETE FROM documents d USING {s}.partition_rows pr WHERE pr.partition_key = %s AND d.id = pr.document_id "
            "AND pr.source_name = ANY(%s) AND NOT EXISTS (SELECT 1 FROM _new n WHERE n.doc_type = pr.doc_type AND n.source_name = pr.source_name "
            "AND n.doc_path = pr.doc_path)").format(s=s), (key, scope)).rowcount
        conn.execute(sql.SQL(
            "DELETE FROM {s}.partition_rows pr WHERE pr.partition_key = %s AND pr.source_name = ANY(%s) AND NOT EXISTS ("
            "SELECT 1 FROM _new n WHERE n.doc_type = pr.doc_type AND n.source_name = pr.source_name "
            "AND n.doc_path = pr.doc_path)").format(s=s), (key, scope))
        written = conn.execute(sql.SQL(
            "WITH changed AS ("
            "  SELECT n.* FROM _new n WHERE NOT EXISTS ("
            "    SELECT 1 FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "    WHERE pr.doc_type = n.doc_type AND pr.source_name = n.source_name AND pr.doc_path = n.doc_path "
            "      AND pr.partition_key = %s AND pr.text_sha = n.text_sha AND pr.embed_key = n.embed_key "
            "      AND d.content = n.content AND d.metadata = n.metadata AND d.token_count = n.token_count "
            "      AND d.embedding IS NOT NULL)"
            "), up AS ("
            "  INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) "
            "  SELECT id, doc_type, source_name, doc_path, content, metadata, embedding, token_count FROM changed "
            "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET content = EXCLUDED.content, "
            "    metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, token_count = EXCLUDED.token_count, "
            "    updated_at = now() "
            "  RETURNING id, doc_type, source_name, doc_path, (xmax = 0) AS inserted"
            "), own AS ("
            "  INSERT INTO {s}.partition_rows (partition_key, document_id, doc_type, source_name, doc_path, source_file,"
            "    document_path, text_sha, embed_key) "
            "  SELECT %s, up.id, c.doc_type, c.source_name, c.doc_path, c.source_file, c.document_path, c.text_sha, "
            "    c.embed_key FROM up JOIN changed c USING (doc_type, source_name, doc_path) "
            "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET partition_key = EXCLUDED.partition_key, "
            "    document_id = EXCLUDED.document_id, source_file = EXCLUDED.source_file, "
            "    document_path = EXCLUDED.document_path, text_sha = EXCLUDED.text_sha, embed_key = EXCLUDED.embed_key "
            "  RETURNING 1"
            ") SELECT count(*) FILTER (WHERE up.inserted), count(*) FILTER (WHERE NOT up.inserted), "
            "  count(DISTINCT c.document_path), (SELECT count(*) FROM own) "
            "FROM up JOIN changed c USING (doc_type, source_name, doc_path)"
        ).format(s=s), (key, key)).fetchone()
        assert written is not None
        inserted, updated, docs_written = int(written[0]), int(written[1]), int(written[2])
        conn.execute(
            "INSERT INTO document_sources (doc_type, source_name, config, enabled, last_updated) "
            "SELECT DISTINCT doc_type, source_name, '{\"managed_by\": \"doc_migration\"}'::jsonb, true, now() FROM _new "
            "ON CONFLICT (doc_type, source_name) DO UPDATE SET last_updated = now(), updated_at = now()")
        conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE partition_key = %s AND source_name = ANY(%s)").format(s),
                     (key, scope))
        owned = conn.execute(sql.SQL(
            "SELECT count(*), count(DISTINCT (doc_type, source_name, document_path)) FROM {}.partition_rows "
            "WHERE partition_key = %s").format(s), (key,)).fetchone()
        assert owned is not None
        owned_chunks, owned_documents = int(owned[0]), int(owned[1])
        for q in quarantine:
            conn.execute(sql.SQL(
                "INSERT INTO {}.quarantine (partition_key, source_name, rel_path, doc_type, stage, reason, hint, run_id) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING").format(s),
                (key, q["source_name"], q["path"], q["doc_type"], q["stage"], q["reason"], q.get("hint", ""), run_id))
        row = conn.execute(sql.SQL(
            "INSERT INTO {}.loads (run_id, partition_key, checksum, files, documents, documents_written, chunks, "
            "rows_inserted, rows_updated, rows_deleted, quarantined, started_at) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING load_id").format(s),
            (run_id, key, checksum, files, documents, docs_written, chunks, inserted, updated, deleted,
             len(quarantine), staged_at)).fetchone()
        assert row is not None
        load_id = int(row[0])
        conn.execute(sql.SQL(
            "INSERT INTO {}.partition_state (partition_key, checksum, run_id, load_id, files, documents, chunks, "
            "quarantined) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (partition_key) DO UPDATE SET "
            "checksum = EXCLUDED.checksum, run_id = EXCLUDED.run_id, load_id = EXCLUDED.load_id, files = EXCLUDED.files, "
            "documents = EXCLUDED.documents, chunks = EXCLUDED.chunks, quarantined = EXCLUDED.quarantined, "
            "loaded_at = now()").format(s),
            (key, checksum, run_id, load_id, files, owned_documents, owned_chunks, len(quarantine)))
        conn.execute(sql.SQL("DELETE FROM {}.staged_chunks WHERE partition_key = %s").format(s), (key,))
        conn.execute(sql.SQL("DELETE FROM {}.staged_partitions WHERE partition_key = %s").format(s), (key,))
        conn.commit()
    return LoadResult(key, "loaded", load_id, files, documents, docs_written, chunks, inserted, updated, deleted,
                      len(quarantine), time.perf_counter() - start)

