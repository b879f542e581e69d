"""The load transaction (stage 4, loaded rows): replace exactly one partition's rows in ``documents``, atomically.

One transaction per partition holds the row changes, the undo records (what the load replaced),
the quarantine list, the ledger row and the clean-up of the staging tables: after a crash the
partition is either fully at its new version or fully at its previous one. Only rows whose
content, metadata or embedding changed are written, so an unchanged re-run writes nothing.

Two ways to write, same result:
- *fresh* (the partition owns no rows yet: a first load or after a full rollback): rows go straight
  into ``documents``, with no change detection, no temporary copies, and vectors of a non-cacheable
  embedder computed in a reader thread while the rows stream in through binary COPY;
- *merge* (anything else, or a fresh load that meets rows it does not own): compare with what is
  stored, keep undo data, and write only what changed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import Settings
from ..embedding.base import Embedder, check_vectors
from ..faults import crash_point
from .database import connection
from .embedding_cache import record_spend
from .file_state import commit_files, delete_quarantine_of_replaced, gone_rows_sql, refuse_clashes
from .locks import lock_partition_xact
from .maintenance import mark_reloaded

UNDO_KEPT_LOADS = 3  # per partition: how many past loads can still be rolled back
STREAM_BATCH = 128  # rows per embed call and queue item in the streaming write (~2 MB with vectors)
DOC_TYPES = ["uuid", "text", "text", "text", "text", "jsonb", "vector", "int4"]  # COPY documents columns, in order


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


def _state_json(conn: psycopg.Connection, s: sql.Identifier, key: str) -> str | None:
    row = conn.execute(sql.SQL(
        "SELECT row_to_json(ps)::text FROM {}.partition_state ps WHERE partition_key = %s").format(s), (key,)).fetchone()
    return row[0] if row else None


def _has_vector(s: sql.Identifier) -> sql.Composed:
    """SQL: the staged row ``st`` has a vector on the server (carried over, or in the cache)."""
    return sql.SQL(
        "(st.carried_embedding IS NOT NULL OR EXISTS (SELECT 1 FROM {}.embedding_cache c "
        "WHERE c.model = %(model)s AND c.dims = %(dims)s AND c.text_sha = st.text_sha))").format(s)


def _as_is(text: Any) -> str:
    """The metadata is already JSON text (read as ``metadata::text``): pass it through unparsed."""
    return str(text)


def _stream(url: str, s: sql.Identifier, params: dict[str, Any], embedder: Embedder,
            stop: threading.Event, out: queue.Queue[Any]) -> None:
    """Reader thread: staged rows in batches from a second connection, with their vectors computed
    here, so PostgreSQL ingests one batch while the next is embedded. Ends with None or an exception."""
    try:
        with connection(url) as rconn, rconn.cursor(name="doc_migration_load_stream") as cur:
            cur.execute(sql.SQL(
                "SELECT st.id, st.doc_type, st.source_name, st.doc_path, st.content, st.metadata::text, "
                "st.token_count FROM {s}.staged_chunks st WHERE st.partition_key = %(key)s AND NOT {has}").format(
                    s=s, has=_has_vector(s)), params)
            while not stop.is_set():
                rows = cur.fetchmany(STREAM_BATCH)
                if not rows:
                    break
                vectors = embedder.embed([r[4] for r in rows])
                check_vectors(vectors, len(rows), embedder.dims)
                while not stop.is_set():
                    try:
                        out.put((rows, vectors), timeout=0.5)
                        break
                    except queue.Full:
                        continue
        out.put(None)
    except BaseException as exc:  # handed to the writer, which raises it
        out.put(exc)


def _streamed(url: str, s: sql.Identifier, params: dict[str, Any],
              embedder: Embedder) -> Iterator[tuple[list[tuple[Any, ...]], np.ndarray]]:
    q: queue.Queue[Any] = queue.Queue(maxsize=2)  # bounded: memory stays at a few batches
    stop = threading.Event()
    reader = threading.Thread(target=_stream, args=(url, s, params, embedder, stop, q),
                              name="load-stream", daemon=True)
    reader.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        reader.join()


def _write_fresh(conn: psycopg.Connection, url: str, s: sql.Identifier, settings: Settings, key: str,
                 load_id: int, compute: Embedder | None) -> tuple[int, int]:
    """All staged rows are inserts: write them directly. Returns (rows inserted, vectors computed)."""
    params = {"key": key, "model": settings.model_name, "dims": settings.embedding_dims, "load_id": load_id}
    inserted = conn.execute(sql.SQL(
        "INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) SELECT st.id, st.doc_type, st.source_name, st.doc_path, st.content, "
        "st.metadata, coalesce(st.carried_embedding, c.embedding), st.token_count FROM {s}.staged_chunks st "
        "LEFT JOIN {s}.embedding_cache c ON st.carried_embedding IS NULL AND c.model = %(model)s "
        "AND c.dims = %(dims)s AND c.text_sha = st.text_sha "
        "WHERE st.partition_key = %(key)s AND (st.carried_embedding IS NOT NULL OR c.text_sha IS NOT NULL)"
    ).format(s=s), params).rowcount
    computed = 0
    if compute is not None:
        with conn.cursor() as cur, cur.copy(
                "COPY documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(DOC_TYPES)
            for rows, vectors in _streamed(url, s, params, compute):
                for r, v in zip(rows, vectors, strict=True):
                    copy.write_row((r[0], r[1], r[2], r[3], r[4], Jsonb(r[5], dumps=_as_is), v, r[6]))
                computed += len(rows)
                crash_point("load-during-write")
        inserted += computed
    conn.execute(sql.SQL(
        "INSERT INTO {s}.partition_rows (partition_key, document_id, doc_type, source_name, doc_path, source_file, "
        "document_path, text_sha, embed_key) SELECT partition_key, id, doc_type, source_name, doc_path, source_file, "
        "document_path, text_sha, CASE WHEN carried_embedding IS NOT NULL THEN 'carried' ELSE %(model)s END "
        "FROM {s}.staged_chunks WHERE partition_key = %(key)s").format(s=s), params)
    conn.execute(sql.SQL(
        "INSERT INTO {s}.load_undo (load_id, document_id, op, doc_type, source_name, doc_path) "
        "SELECT %(load_id)s, id, 'insert', doc_type, source_name, doc_path FROM {s}.staged_chunks "
        "WHERE partition_key = %(key)s").format(s=s), params)
    return inserted, computed


def _merge(conn: psycopg.Connection, s: sql.Identifier, settings: Settings, key: str, staged: _Staged,
           load_id: int, compute: Embedder | None) -> tuple[int, int, int, int, int]:
    """Compare with what the partition holds and write only the difference, with undo data.
    Returns (inserted, updated, deleted, documents written, vectors computed)."""
    params = {"key": key, "model": settings.model_name, "dims": settings.embedding_dims, "load_id": load_id,
              "scope": staged.scope}
    _diff(conn, s, params, staged.incremental)
    missing = _reuse_stored_vectors(conn, s, params)
    if compute is None and missing:
        raise RuntimeError(f"partition {key}: {missing} staged chunks have no embedding; run the embeddings step")
    _record_undo(conn, s, params)
    deleted = _delete_gone(conn, s)
    computed = _compute_missing_vectors(conn, compute) if compute is not None and missing else 0
    inserted, updated, docs_written = _upsert_changed(conn, s, params)
    return inserted, updated, deleted, docs_written, computed


def _diff(conn: psycopg.Connection, s: sql.Identifier, params: dict[str, Any], incremental: bool) -> None:
    """Temp tables for this transaction: ``_new`` (the staged version), ``_gone`` (rows the
    partition owned for these sources, or for an incremental version of the files it replaces,
    that the new version no longer has) and ``_changed`` (new rows whose content, metadata or
    embedding differ from what is stored)."""
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE _new ON COMMIT DROP AS "
        "SELECT st.id, st.doc_type, st.source_name, st.doc_path, st.source_file, st.document_path, st.content, "
        "       st.metadata, st.text_sha, st.token_count, "
        "       CASE WHEN st.carried_embedding IS NOT NULL THEN 'carried' ELSE %(model)s END AS embed_key, "
        "       {has} AS has_vector "
        "FROM {s}.staged_chunks st WHERE st.partition_key = %(key)s").format(s=s, has=_has_vector(s)), params)
    owned = (sql.SQL("pr.document_id IN ({})").format(gone_rows_sql(s)) if incremental
             else sql.SQL("pr.source_name = ANY(%(scope)s)"))
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE _gone ON COMMIT DROP AS SELECT pr.* FROM {s}.partition_rows pr "
        "WHERE pr.partition_key = %(key)s AND {owned} AND NOT EXISTS (SELECT 1 FROM _new n "
        "WHERE n.doc_type = pr.doc_type AND n.source_name = pr.source_name AND n.doc_path = pr.doc_path)"
    ).format(s=s, owned=owned), params)
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE _changed ON COMMIT DROP AS SELECT n.* FROM _new n WHERE NOT EXISTS ("
        "  SELECT 1 FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
        "  WHERE pr.doc_type = n.doc_type AND pr.source_name = n.source_name AND pr.doc_path = n.doc_path "
        "    AND pr.partition_key = %(key)s AND pr.text_sha = n.text_sha AND pr.embed_key = n.embed_key "
        "    AND d.content = n.content AND d.metadata = n.metadata AND d.token_count = n.token_count "
        "    AND d.embedding IS NOT NULL)").format(s=s), params)


def _reuse_stored_vectors(conn: psycopg.Connection, s: sql.Identifier, params: dict[str, Any]) -> int:
    """A changed row whose exact text is stored already (metadata changed, chunk renumbered, file
    moved) keeps that vector: same model, same text, same vector; nothing is recomputed or paid.
    Fills ``_vec``; returns how many changed rows still have no vector anywhere."""
    conn.execute("CREATE TEMP TABLE _vec (id uuid PRIMARY KEY, embedding vector) ON COMMIT DROP")
    conn.execute(sql.SQL(
        "INSERT INTO _vec (id, embedding) SELECT DISTINCT ON (ch.id) ch.id, d.embedding FROM _changed ch "
        "JOIN {s}.partition_rows pr ON pr.text_sha = ch.text_sha AND pr.embed_key = ch.embed_key "
        "JOIN documents d ON d.id = pr.document_id "
        "WHERE NOT ch.has_vector AND d.embedding IS NOT NULL AND vector_dims(d.embedding) = %(dims)s").format(s=s),
        params)
    missing = conn.execute("SELECT count(*) FROM _changed ch WHERE NOT ch.has_vector "
                           "AND NOT EXISTS (SELECT 1 FROM _vec v WHERE v.id = ch.id)").fetchone()
    return int(missing[0]) if missing else 0


_UNDO_COLS = sql.SQL(
    "load_id, document_id, op, doc_type, source_name, doc_path, content, metadata, embedding, token_count, "
    "created_at, updated_at, prev_partition_key, prev_source_file, prev_document_path, prev_text_sha, "
    "prev_embed_key")


def _record_undo(conn: psycopg.Connection, s: sql.Identifier, params: dict[str, Any]) -> None:
    """What rollback needs to put back: every row the load will delete, update or insert, as it was."""
    conn.execute(sql.SQL(
        "INSERT INTO {s}.load_undo ({cols}) SELECT %(load_id)s, d.id, 'delete', d.doc_type, d.source_name, "
        "d.doc_path, d.content, d.metadata, d.embedding, d.token_count, d.created_at, d.updated_at, g.partition_key, "
        "g.source_file, g.document_path, g.text_sha, g.embed_key FROM _gone g JOIN documents d ON d.id = g.document_id"
    ).format(s=s, cols=_UNDO_COLS), params)
    conn.execute(sql.SQL(
        "INSERT INTO {s}.load_undo ({cols}) SELECT %(load_id)s, coalesce(d.id, c.id), "
        "CASE WHEN d.id IS NULL THEN 'insert' ELSE 'update' END, c.doc_type, c.source_name, c.doc_path, "
        "d.content, d.metadata, d.embedding, d.token_count, d.created_at, d.updated_at, pr.partition_key, "
        "pr.source_file, pr.document_path, pr.text_sha, pr.embed_key FROM _changed c "
        "LEFT JOIN documents d ON d.doc_type = c.doc_type AND d.source_name = c.source_name AND d.doc_path = c.doc_path "
        "LEFT JOIN {s}.partition_rows pr ON pr.doc_type = c.doc_type AND pr.source_name = c.source_name "
        "  AND pr.doc_path = c.doc_path").format(s=s, cols=_UNDO_COLS), params)


def _delete_gone(conn: psycopg.Connection, s: sql.Identifier) -> int:
    deleted = conn.execute("DELETE FROM documents d USING _gone g WHERE d.id = g.document_id").rowcount
    crash_point("load-during-write")
    conn.execute(sql.SQL("DELETE FROM {s}.partition_rows pr USING _gone g WHERE pr.partition_key = g.partition_key "
                         "AND pr.document_id = g.document_id").format(s=s))
    return deleted


def _compute_missing_vectors(conn: psycopg.Connection, compute: Embedder) -> int:
    """Vectors of a non-cacheable embedder for the changed rows that have none, into ``_vec``."""
    computed = 0
    after = None
    while True:  # keyset pages: the temp tables are visible to this connection only
        rows = conn.execute(
            "SELECT id, content FROM _changed ch WHERE NOT has_vector AND (%s::uuid IS NULL OR id > %s::uuid) "
            "AND NOT EXISTS (SELECT 1 FROM _vec v WHERE v.id = ch.id) ORDER BY id LIMIT %s",
            (after, after, STREAM_BATCH)).fetchall()
        if not rows:
            return computed
        vectors = compute.embed([r[1] for r in rows])
        check_vectors(vectors, len(rows), compute.dims)
        with conn.cursor() as cur, cur.copy("COPY _vec (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "vector"])
            for r, v in zip(rows, vectors, strict=True):
                copy.write_row((r[0], v))
        computed += len(rows)
        after = rows[-1][0]


def _upsert_changed(conn: psycopg.Connection, s: sql.Identifier, params: dict[str, Any]) -> tuple[int, int, int]:
    """Write ``_changed`` into ``documents`` and the partition's ownership rows in one statement.
    Returns (inserted, updated, documents written)."""
    written = conn.execute(sql.SQL(
        "WITH up AS ("
        "  INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) "
        "  SELECT ch.id, ch.doc_type, ch.source_name, ch.doc_path, ch.content, ch.metadata, "
        "    coalesce(st.carried_embedding, c.embedding, v.embedding), ch.token_count FROM _changed ch "
        "  JOIN {s}.staged_chunks st ON st.partition_key = %(key)s AND st.doc_type = ch.doc_type "
        "    AND st.source_name = ch.source_name AND st.doc_path = ch.doc_path "
        "  LEFT JOIN {s}.embedding_cache c ON st.carried_embedding IS NULL AND c.model = %(model)s "
        "    AND c.dims = %(dims)s AND c.text_sha = ch.text_sha "
        "  LEFT JOIN _vec v ON v.id = ch.id "
        # A text or vector that did not change keeps its stored value (no TOAST rewrite), which also
        # lets PostgreSQL update the row without a new HNSW index entry (a heap-only tuple).
        "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET "
        "    content = CASE WHEN documents.content = EXCLUDED.content THEN documents.content "
        "      ELSE EXCLUDED.content END, "
        "    embedding = CASE WHEN documents.embedding IS NOT DISTINCT FROM EXCLUDED.embedding "
        "      THEN documents.embedding ELSE EXCLUDED.embedding END, "
        "    metadata = EXCLUDED.metadata, token_count = EXCLUDED.token_count, updated_at = now() "
        "  RETURNING id, doc_type, source_name, doc_path, (xmax = 0) AS inserted"
        "), own AS ("
        "  INSERT INTO {s}.partition_rows (partition_key, document_id, doc_type, source_name, doc_path, source_file,"
        "    document_path, text_sha, embed_key) "
        "  SELECT %(key)s, up.id, c.doc_type, c.source_name, c.doc_path, c.source_file, c.document_path, c.text_sha, "
        "    c.embed_key FROM up JOIN _changed c USING (doc_type, source_name, doc_path) "
        "  ON CONFLICT (doc_type, source_name, doc_path) DO UPDATE SET partition_key = EXCLUDED.partition_key, "
        "    document_id = EXCLUDED.document_id, source_file = EXCLUDED.source_file, "
        "    document_path = EXCLUDED.document_path, text_sha = EXCLUDED.text_sha, embed_key = EXCLUDED.embed_key "
        "  WHERE {s}.partition_rows.partition_key = EXCLUDED.partition_key "  # never another partition's row
        "  RETURNING 1"
        ") SELECT count(*) FILTER (WHERE up.inserted), count(*) FILTER (WHERE NOT up.inserted), "
        "  count(DISTINCT c.document_path), (SELECT count(*) FROM own), count(*) "
        "FROM up JOIN _changed c USING (doc_type, source_name, doc_path)"
    ).format(s=s), params).fetchone()
    assert written is not None
    if written[3] != written[4]:  # a row key another partition committed while this load ran: nothing is kept
        raise RuntimeError(f"partition {params['key']}: {written[4] - written[3]} row key(s) were loaded by another "
                           "partition at the same time; run again (the file loaded first keeps its rows, the other "
                           "is refused with both files named)")
    return int(written[0]), int(written[1]), int(written[2])


@dataclass(frozen=True)
class _Staged:
    """The staged_partitions row a load consumes."""
    checksum: str
    files: int
    documents: int
    chunks: int
    quarantine: list[dict[str, Any]]
    staged_at: Any
    scope: list[str]
    base_load_id: int | None  # an incremental version: the load it was computed against
    files_parsed: int | None
    state_checksum: str | None = None  # the partition state's checksum, when it is not ``checksum``

    @property
    def incremental(self) -> bool:
        return self.base_load_id is not None


def load_partition(settings: Settings, url: str, key: str, run_id: str,
                   embedder: Embedder | None = None) -> LoadResult:
    """``embedder`` is needed only when it is not cacheable: its vectors are computed here."""
    s = sql.Identifier(settings.pipeline_schema)
    start = time.perf_counter()
    compute = embedder if embedder is not None and not embedder.cacheable else None
    if compute is not None and (compute.model, compute.dims) != (settings.model_name, settings.embedding_dims):
        raise RuntimeError(f"embedder {compute.model}/{compute.dims} does not match the settings "
                           f"{settings.model_name}/{settings.embedding_dims}")
    with connection(url) as conn:
        lock_partition_xact(conn, key)
        row = conn.execute(sql.SQL(
            "SELECT checksum, files, documents, chunks, quarantine, staged_at, sources, base_load_id, files_parsed, "
            "(SELECT load_id FROM {s}.partition_state WHERE partition_key = %(k)s) FROM {s}.staged_partitions "
            "WHERE partition_key = %(k)s").format(s=s), {"k": key}).fetchone()
        if row is None:
            state = conn.execute(sql.SQL("SELECT documents, chunks FROM {}.partition_state WHERE partition_key = %s")
                                 .format(s), (key,)).fetchone()
            conn.rollback()
            if state is not None:
                return LoadResult(key, "unchanged", documents=state[0], chunks=state[1])
            return LoadResult(key, "nothing-staged")
        staged = _Staged(row[0], row[1], row[2], row[3], row[4], row[5], list(row[6]), row[7], row[8])
        if staged.incremental and staged.base_load_id != row[9]:
            raise RuntimeError(f"partition {key}: the staged version was computed against load {staged.base_load_id}, "
                               f"but the partition is now at load {row[9]} (loaded or rolled back since); run the "
                               "parse step again")
        staged = _without_clashes(conn, s, key, staged)
        load_id = _open_load(conn, s, settings, key, run_id, staged)
        inserted, updated, deleted, docs_written, computed = _write_rows(conn, url, s, settings, key, load_id,
                                                                         staged, compute)
        _record_sources_and_quarantine(conn, s, key, run_id, staged)
        commit_files(conn, s, key, load_id, staged.incremental)
        totals = _close_load(conn, s, key, run_id, load_id, staged, (docs_written, inserted, updated, deleted))
        if computed:
            record_spend(conn, settings, run_id, key, settings.model_name, inputs=computed,
                         seconds=time.perf_counter() - start)
        mark_reloaded(conn, s, key)
        conn.execute(sql.SQL("DELETE FROM {}.staged_chunks WHERE partition_key = %s").format(s), (key,))
        conn.execute(sql.SQL("DELETE FROM {}.staged_partitions WHERE partition_key = %s").format(s), (key,))
        crash_point("load-before-commit")
        conn.commit()
        crash_point("load-after-commit")
    return LoadResult(key, "loaded", load_id, staged.files, totals[0], docs_written, totals[1], inserted,
                      updated, deleted, totals[2], time.perf_counter() - start)


def _without_clashes(conn: psycopg.Connection, s: sql.Identifier, key: str, staged: _Staged) -> _Staged:
    """The staged version less the files whose rows another partition owns (refused, both named).
    The partition then records a checksum its scan cannot match, so the next run stages it again
    and re-parses exactly those files."""
    clashes = refuse_clashes(conn, s, key)
    if not clashes:
        return staged
    return replace(staged, documents=staged.documents - sum(c.documents for c in clashes),
                   chunks=staged.chunks - sum(c.chunks for c in clashes),
                   quarantine=[*staged.quarantine, *(c.quarantine for c in clashes)],
                   state_checksum=f"{staged.checksum}+{len(clashes)}-refused-at-load")


def _open_load(conn: psycopg.Connection, s: sql.Identifier, settings: Settings, key: str, run_id: str,
               staged: _Staged) -> int:
    """The ledger row, with the state and quarantine list the load replaces (for rollback)."""
    prev_quarantine = conn.execute(sql.SQL(
        "SELECT coalesce(json_agg(row_to_json(q)), '[]'::json)::text FROM {}.quarantine q "
        "WHERE partition_key = %s AND source_name = ANY(%s)").format(s), (key, staged.scope)).fetchone()
    row = conn.execute(sql.SQL(
        "INSERT INTO {}.loads (run_id, partition_key, checksum, files, documents, documents_written, chunks, "
        "rows_inserted, rows_updated, rows_deleted, quarantined, started_at, status, sources, prev_state, "
        "prev_quarantine, quarantine, manifest) VALUES (%s,%s,%s,%s,%s,0,%s,0,0,0,%s,%s,'loading',%s,%s::jsonb,"
        "%s::jsonb,%s,%s) RETURNING load_id").format(s),
        (run_id, key, staged.checksum, staged.files, staged.documents, staged.chunks, len(staged.quarantine),
         staged.staged_at, staged.scope, _state_json(conn, s, key), prev_quarantine[0] if prev_quarantine else "[]",
         json.dumps(staged.quarantine), str(settings.sources_path))).fetchone()
    assert row is not None
    return int(row[0])


def _write_rows(conn: psycopg.Connection, url: str, s: sql.Identifier, settings: Settings, key: str, load_id: int,
                staged: _Staged, compute: Embedder | None) -> tuple[int, int, int, int, int]:
    """Fresh path when the partition owns no rows, merge path otherwise (or when the fresh insert
    meets rows owned elsewhere). Returns (inserted, updated, deleted, documents written, computed)."""
    owns_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.partition_rows WHERE partition_key = %s)")
                             .format(s), (key,)).fetchone()
    if owns_rows is not None and not owns_rows[0]:
        if compute is None:
            missing = conn.execute(sql.SQL(
                "SELECT count(*) FROM {s}.staged_chunks st WHERE st.partition_key = %(key)s AND NOT {has}").format(
                    s=s, has=_has_vector(s)),
                {"key": key, "model": settings.model_name, "dims": settings.embedding_dims}).fetchone()
            if missing and missing[0]:
                raise RuntimeError(f"partition {key}: {missing[0]} staged chunks have no embedding; "
                                   "run the embeddings step")
        try:
            with conn.transaction():  # a savepoint: rows owned elsewhere send the load to the merge path
                inserted, computed = _write_fresh(conn, url, s, settings, key, load_id, compute)
                docs = conn.execute(sql.SQL(
                    "SELECT count(DISTINCT document_path) FROM {}.staged_chunks WHERE partition_key = %s").format(s),
                    (key,)).fetchone()
            return inserted, 0, 0, int(docs[0]) if docs else 0, computed
        except psycopg.errors.UniqueViolation:
            pass
    return _merge(conn, s, settings, key, staged, load_id, compute)


def _record_sources_and_quarantine(conn: psycopg.Connection, s: sql.Identifier, key: str, run_id: str,
                                   staged: _Staged) -> None:
    """The doc-server's source list, and the partition's quarantine list replaced for its sources."""
    conn.execute(sql.SQL(
        "INSERT INTO document_sources (doc_type, source_name, config, enabled, last_updated) "
        "SELECT DISTINCT doc_type, source_name, '{{\"managed_by\": \"doc_migration\"}}'::jsonb, true, now() "
        "FROM {}.staged_chunks WHERE partition_key = %s ORDER BY 1, 2 "  # one lock order: no deadlocks
        "ON CONFLICT (doc_type, source_name) DO UPDATE SET last_updated = now(), updated_at = now()").format(s),
        (key,))
    if staged.incremental:
        delete_quarantine_of_replaced(conn, s, key)
    else:
        conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE partition_key = %s AND source_name = ANY(%s)")
                     .format(s), (key, staged.scope))
    for q in staged.quarantine:
        conn.execute(sql.SQL(
            "INSERT INTO {}.quarantine (partition_key, source_name, rel_path, doc_type, stage, reason, hint, run_id, "
            "format, detected_by) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING").format(s),
            (key, q["source_name"], q["path"], q["doc_type"], q["stage"], q["reason"], q.get("hint", ""), run_id,
             q.get("format"), q.get("detected_by")))


def _close_load(conn: psycopg.Connection, s: sql.Identifier, key: str, run_id: str, load_id: int,
                staged: _Staged, counts: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """The partition's new state and the committed ledger row; undo data beyond the kept loads dropped.
    ``counts`` is (documents written, inserted, updated, deleted). Returns the partition's
    (documents, chunks, quarantined): the staged version's for a full load, the totals for an
    incremental one (whose staged version holds only the files it re-parsed)."""
    owned = conn.execute(sql.SQL(
        "SELECT count(*), count(DISTINCT (doc_type, source_name, document_path)), "
        "(SELECT count(*) FROM {s}.quarantine WHERE partition_key = %(k)s) FROM {s}.partition_rows "
        "WHERE partition_key = %(k)s").format(s=s), {"k": key}).fetchone()
    assert owned is not None
    quarantined = int(owned[2]) if staged.incremental else len(staged.quarantine)
    conn.execute(sql.SQL(
        "INSERT INTO {}.partition_state (partition_key, checksum, run_id, load_id, files, documents, chunks, "
        "quarantined) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (partition_key) DO UPDATE SET "
        "checksum = EXCLUDED.checksum, run_id = EXCLUDED.run_id, load_id = EXCLUDED.load_id, files = EXCLUDED.files, "
        "documents = EXCLUDED.documents, chunks = EXCLUDED.chunks, quarantined = EXCLUDED.quarantined, "
        "loaded_at = now()").format(s),
        (key, staged.state_checksum or staged.checksum, run_id, load_id, staged.files, int(owned[1]), int(owned[0]),
         quarantined))
    totals = (int(owned[1]), int(owned[0]), quarantined) if staged.incremental else (
        staged.documents, staged.chunks, quarantined)
    conn.execute(sql.SQL(
        "UPDATE {}.loads SET status = 'committed', documents_written = %s, rows_inserted = %s, rows_updated = %s, "
        "rows_deleted = %s, committed_at = now(), documents = %s, chunks = %s, quarantined = %s, files_parsed = %s, "
        "chunks_parsed = %s, incremental = %s WHERE load_id = %s").format(s),
        (*counts, *totals, staged.files_parsed, staged.chunks, staged.incremental, load_id))
    conn.execute(sql.SQL(
        "WITH old AS (SELECT load_id FROM {s}.loads WHERE partition_key = %s AND undo_kept "
        "  ORDER BY load_id DESC OFFSET %s), "
        "u AS (UPDATE {s}.loads SET undo_kept = false WHERE load_id IN (SELECT load_id FROM old)) "
        "DELETE FROM {s}.load_undo WHERE load_id IN (SELECT load_id FROM old)").format(s=s),
        (key, UNDO_KEPT_LOADS))
    return totals
