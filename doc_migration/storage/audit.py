"""Read-only questions the validation checks ask of the pipeline schema and ``documents`` (set-based,
computed by the server: no content or vector is shipped to Python). The checks judge the answers."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..config import Settings
from .database import connection


def column_dims(conn: Any) -> int | None:
    """The dimension the ``documents.embedding`` column's type pins (``vector(3072)``: pgvector refuses any
    other on input), or None when the column is untyped ``vector`` and each row must be asked."""
    row = conn.execute("SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = 'documents'::regclass "
                       "AND a.attname = 'embedding' AND NOT a.attisdropped "
                       "AND a.atttypid = to_regtype('vector')").fetchone()
    return int(row[0]) if row and row[0] is not None and int(row[0]) > 0 else None


def written_by(s: sql.Identifier, run_id: str | None) -> sql.Composable:
    """SQL: the row ``pr`` was inserted or updated by a committed load of run ``run_id`` (TRUE for None).
    The costly checks of a run look at these rows only; the cheap aggregates still cover every row."""
    if run_id is None:
        return sql.SQL("TRUE")
    return sql.SQL("EXISTS (SELECT 1 FROM {s}.load_undo lu JOIN {s}.loads l ON l.load_id = lu.load_id "
                   "WHERE l.run_id = {run} AND l.status = 'committed' AND lu.op <> 'delete' "
                   "AND lu.document_id = pr.document_id)").format(s=s, run=sql.Literal(run_id))


def ledger_counts(settings: Settings, url: str, keys: list[str], missing_per_partition: int
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Per partition: the ledger's counts beside what documents holds and what the scan saw; up to
    ``missing_per_partition`` owned rows absent from documents; the quarantine list."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "WITH k AS (SELECT DISTINCT unnest(%s::text[]) AS partition_key), "
            "own AS (SELECT pr.partition_key, count(*) AS owned, count(d.id) AS present, "
            "  count(DISTINCT (pr.doc_type, pr.source_name, pr.document_path)) FILTER (WHERE d.id IS NOT NULL) AS docs, "
            "  count(DISTINCT (pr.source_name, pr.source_file)) FILTER (WHERE d.id IS NOT NULL) AS files "
            "  FROM {s}.partition_rows pr LEFT JOIN documents d ON d.id = pr.document_id "
            "  WHERE pr.partition_key = ANY(%s) GROUP BY pr.partition_key), "
            "f AS (SELECT pf.partition_key, count(*) AS scanned, count(q.rel_path) AS quarantined "
            "  FROM {s}.partition_files pf LEFT JOIN {s}.quarantine q ON q.partition_key = pf.partition_key "
            "  AND q.source_name = pf.source_name AND q.rel_path = pf.rel_path "
            "  WHERE pf.partition_key = ANY(%s) GROUP BY pf.partition_key) "
            "SELECT k.partition_key, ps.checksum IS NOT NULL, ps.documents, ps.chunks, ps.files, "
            "  coalesce(own.owned, 0), coalesce(own.present, 0), coalesce(own.docs, 0), coalesce(own.files, 0), "
            "  sc.checksum IS NOT DISTINCT FROM ps.checksum, coalesce(f.scanned, 0), coalesce(f.quarantined, 0) "
            "FROM k LEFT JOIN {s}.partition_state ps ON ps.partition_key = k.partition_key "
            "LEFT JOIN own ON own.partition_key = k.partition_key "
            "LEFT JOIN {s}.partition_scans sc ON sc.partition_key = k.partition_key "
            "LEFT JOIN f ON f.partition_key = k.partition_key ORDER BY 1").format(s=s),
            (keys, keys, keys)).fetchall()
        missing = conn.execute(sql.SQL(
            "SELECT partition_key, doc_type, source_name, doc_path, source_file FROM ("
            "  SELECT pr.*, row_number() OVER (PARTITION BY pr.partition_key ORDER BY pr.doc_path) AS rn "
            "  FROM {s}.partition_rows pr WHERE pr.partition_key = ANY(%s) "
            "  AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = pr.document_id)) x "
            "WHERE rn <= %s ORDER BY 1, 4").format(s=s), (keys, missing_per_partition)).fetchall()
        quarantined = conn.execute(sql.SQL(
            "SELECT partition_key, doc_type, rel_path, stage, reason FROM {}.quarantine "
            "WHERE partition_key = ANY(%s) ORDER BY partition_key, rel_path").format(s), (keys,)).fetchall()
    return rows, missing, quarantined


def checksum_mismatches(settings: Settings, url: str, keys: list[str]) -> tuple[int, list[tuple[Any, ...]]]:
    """(rows checked, rows whose content no longer hashes to the sha256 recorded at load)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        total = conn.execute(sql.SQL(
            "SELECT count(*) FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s)").format(s=s), (keys,)).fetchone()
        bad = conn.execute(sql.SQL(
            "SELECT pr.partition_key, d.doc_type, d.source_name, d.doc_path, pr.source_file, length(d.content), "
            "  encode(pr.text_sha, 'hex'), encode(sha256(convert_to(d.content, 'UTF8')), 'hex') "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) AND sha256(convert_to(d.content, 'UTF8')) <> pr.text_sha "
            "ORDER BY 1, 2, 3, 4").format(s=s), (keys,)).fetchall()
    return int(total[0]) if total else 0, bad


def loaded_source_hashes(settings: Settings, url: str, keys: list[str]
                         ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(per loaded source file: its partition, doc type, source, path and the source_sha256 values its
    rows carry; the files of the latest scans)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        loaded = conn.execute(sql.SQL(
            "SELECT pr.partition_key, pr.doc_type, pr.source_name, pr.source_file, "
            "  array_agg(DISTINCT coalesce(d.metadata->>'source_sha256', '')) "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4").format(s=s), (keys,)).fetchall()
        scanned = conn.execute(sql.SQL(
            "SELECT partition_key, source_name, rel_path FROM {}.partition_files WHERE partition_key = ANY(%s)"
        ).format(s), (keys,)).fetchall()
    return loaded, scanned


def vector_problems(settings: Settings, url: str, keys: list[str], dims: int, run_id: str | None = None
                    ) -> list[tuple[Any, ...]]:
    """Rows of the partitions (those run ``run_id`` wrote, when given) whose vector is NULL, of another
    dimension, non-finite or zero."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        # Each vector is read (detoasted, 12 KB at 3072 dims) once: the norm is computed once per row in
        # a subquery the planner may not flatten (OFFSET 0), and its dimension is only read when the
        # column's type does not already pin it.
        pinned = column_dims(conn) == dims
        dims_expr = sql.SQL("%s::int") if pinned else sql.SQL("vector_dims(d.embedding)")
        bad = conn.execute(sql.SQL(
            "SELECT partition_key, doc_type, source_name, doc_path, CASE "
            "  WHEN is_null THEN 'NULL embedding' "
            "  WHEN dims <> %s THEN 'dimension ' || dims || ', expected ' || %s::text "
            "  WHEN norm = 'NaN'::float8 OR norm = 'Infinity'::float8 THEN 'non-finite values' "
            "  WHEN norm = 0 THEN 'zero vector' END AS problem "
            "FROM (SELECT pr.partition_key, d.doc_type, d.source_name, d.doc_path, d.embedding IS NULL AS is_null, "
            "  {dims} AS dims, vector_norm(d.embedding) AS norm "
            "  FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "  WHERE pr.partition_key = ANY(%s) AND {written} OFFSET 0) v "
            "WHERE is_null OR dims <> %s OR NOT (norm > 0 AND norm < 'Infinity'::float8) "
            "ORDER BY 1, 2, 3, 4").format(s=s, dims=dims_expr, written=written_by(s, run_id)),
            (dims, dims, *((dims,) if pinned else ()), keys, dims)).fetchall()
    return bad


def managed_source(s: sql.Identifier) -> sql.Composed:
    """True for a ``documents`` row ``d`` of a source this pipeline manages (it owns rows of that
    source, or registered it in document_sources): only such orphans are the pipeline's to delete."""
    return sql.SQL(
        "(EXISTS (SELECT 1 FROM {s}.partition_rows m WHERE m.doc_type = d.doc_type AND m.source_name = d.source_name) "
        "OR EXISTS (SELECT 1 FROM document_sources ds WHERE ds.doc_type = d.doc_type "
        "AND ds.source_name = d.source_name AND ds.config->>'managed_by' = 'doc_migration'))").format(s=s)


def orphan_rows(settings: Settings, url: str, limit: int | None) -> tuple[int, int, list[tuple[Any, ...]]]:
    """(orphans, managed orphans, rows); ``managed`` = of a source this pipeline loads (safe to delete)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        counts = conn.execute(sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE managed) FROM ("
            "  SELECT {managed} AS managed "
            "  FROM documents d WHERE NOT EXISTS (SELECT 1 FROM {s}.partition_rows pr WHERE pr.document_id = d.id)) x"
        ).format(s=s, managed=managed_source(s))).fetchone()
        rows = conn.execute(sql.SQL(
            "SELECT d.id::text, d.doc_type, d.source_name, d.doc_path, d.created_at, {managed} "
            "FROM documents d WHERE NOT EXISTS (SELECT 1 FROM {s}.partition_rows pr WHERE pr.document_id = d.id) "
            "ORDER BY 2, 3, 4 LIMIT %s").format(s=s, managed=managed_source(s)), (limit,)).fetchall()
    assert counts is not None
    return int(counts[0]), int(counts[1]), rows


def rolled_back_partitions(settings: Settings, url: str) -> list[str]:
    """Partitions whose latest load was rolled back and not loaded again."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT l.partition_key FROM {s}.loads l WHERE l.status = 'rolled_back' AND NOT EXISTS ("
            "SELECT 1 FROM {s}.loads l2 WHERE l2.partition_key = l.partition_key AND l2.load_id > l.load_id "
            "AND l2.status = 'committed') ORDER BY 1").format(s=s)).fetchall()
    return [r[0] for r in rows]


def _staged_scope(conn: Any, s: sql.Identifier, keys: list[str] | None) -> tuple[list[str], int]:
    """(partitions among ``keys`` with a staged version, their staged chunk count)."""
    rows = conn.execute(sql.SQL("SELECT partition_key FROM {}.staged_partitions ORDER BY 1").format(s)).fetchall()
    staged = [r[0] for r in rows if keys is None or r[0] in set(keys)]
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}.staged_chunks WHERE partition_key = ANY(%s)").format(s),
                         (staged,)).fetchone()
    return staged, int(total[0]) if total else 0


def staged_chunk_problems(settings: Settings, url: str, keys: list[str] | None, max_tokens: int,
                          base_fields: tuple[str, ...]) -> tuple[list[str], list[tuple[Any, ...]], int]:
    """(staged partitions among ``keys``, their chunks that cannot be loaded with the reason, chunks checked)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        staged, total = _staged_scope(conn, s, keys)
        rows = conn.execute(sql.SQL(
            "SELECT partition_key, doc_type, source_name, doc_path, CASE "
            "  WHEN btrim(content, E' \\t\\r\\n') = '' THEN 'blank content' "
            "  WHEN token_count IS NULL OR token_count < 1 OR token_count > %s::int THEN 'token_count ' || "
            "    coalesce(token_count::text, 'NULL') || ' outside 1..' || %s::text "
            "  WHEN sha256(convert_to(content, 'UTF8')) <> text_sha THEN 'text_sha does not match content' "
            "  WHEN NOT (metadata ?& %s::text[]) THEN 'metadata lacks one of ' || array_to_string(%s::text[], ', ') END "
            "FROM {}.staged_chunks WHERE partition_key = ANY(%s::text[]) AND (btrim(content, E' \\t\\r\\n') = '' "
            "  OR token_count IS NULL OR token_count < 1 OR token_count > %s::int "
            "  OR sha256(convert_to(content, 'UTF8')) <> text_sha OR NOT (metadata ?& %s::text[])) ORDER BY 1, 2, 3, 4"
        ).format(s), (max_tokens, max_tokens, list(base_fields), list(base_fields), staged,
                      max_tokens, list(base_fields))).fetchall()
    return staged, rows, total


def staged_vector_problems(settings: Settings, url: str, keys: list[str] | None, unit: bool,
                           norm_tolerance: float) -> tuple[list[str], list[tuple[Any, ...]], int]:
    """(staged partitions among ``keys``, their chunks without a usable vector with the reason, chunks checked)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        staged, total = _staged_scope(conn, s, keys)
        rows = conn.execute(sql.SQL(
            "WITH v AS (SELECT st.partition_key, st.doc_type, st.source_name, st.doc_path, "
            "  coalesce(st.carried_embedding, c.embedding) AS e, st.carried_embedding IS NOT NULL AS carried "
            "  FROM {s}.staged_chunks st LEFT JOIN {s}.embedding_cache c ON c.model = %s AND c.dims = %s "
            "  AND c.text_sha = st.text_sha WHERE st.partition_key = ANY(%s)) "
            "SELECT partition_key, doc_type, source_name, doc_path, CASE "
            "  WHEN e IS NULL THEN 'no vector (not embedded)' "
            "  WHEN vector_dims(e) <> %s THEN 'dimension ' || vector_dims(e) "
            "  WHEN NOT (vector_norm(e) > 0 AND vector_norm(e) < 'Infinity'::float8) THEN 'zero or non-finite vector' "
            "  ELSE 'norm ' || round(vector_norm(e)::numeric, 6) || ', expected 1' END "
            "FROM v WHERE (e IS NULL AND NOT %s) OR vector_dims(e) <> %s "
            "  OR NOT (vector_norm(e) > 0 AND vector_norm(e) < 'Infinity'::float8) "
            "  OR (%s AND NOT carried AND abs(vector_norm(e) - 1) > %s) ORDER BY 1, 2, 3, 4").format(s=s),
            (settings.model_name, settings.embedding_dims, staged, settings.embedding_dims, settings.vectors_at_load,
             settings.embedding_dims, unit, norm_tolerance)).fetchall()
    return staged, rows, total


def per_doc_type(settings: Settings, url: str, keys: list[str]
                 ) -> tuple[list[tuple[Any, ...]], dict[str, int], dict[str, int]]:
    """(per doc type: rows, documents, files, tokens; quarantined files per doc type; loaded partitions
    per doc type), over the partitions ``keys``."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT pr.doc_type, count(d.id), "
            "  count(DISTINCT (pr.source_name, pr.document_path)) FILTER (WHERE d.id IS NOT NULL), "
            "  count(DISTINCT (pr.source_name, pr.source_file)) FILTER (WHERE d.id IS NOT NULL), "
            "  coalesce(sum(d.token_count), 0) "
            "FROM {s}.partition_rows pr LEFT JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) GROUP BY 1").format(s=s), (keys,)).fetchall()
        quarantined: dict[str, int] = dict(conn.execute(sql.SQL(
            "SELECT doc_type, count(*) FROM {}.quarantine WHERE partition_key = ANY(%s) GROUP BY 1").format(s),
            (keys,)).fetchall())
        loaded: dict[str, int] = dict(conn.execute(sql.SQL(
            "SELECT split_part(partition_key, '-', 1), count(*) FROM {}.partition_state "
            "WHERE partition_key = ANY(%s) GROUP BY 1").format(s), (keys,)).fetchall())
    return rows, quarantined, loaded


def run_throughput(settings: Settings, url: str, keys: list[str], limit: int) -> list[tuple[Any, ...]]:
    """Per run (newest first, at most ``limit``): partitions, rows written, chunks, documents written,
    first start, last commit, seconds between them, partitions rolled back since."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        runs = conn.execute(sql.SQL(
            "SELECT run_id, count(*), sum(rows_inserted + rows_updated + rows_deleted), sum(chunks), "
            "  sum(documents_written), min(started_at), max(committed_at), "
            "  extract(epoch FROM max(committed_at) - min(started_at)), "
            "  count(*) FILTER (WHERE status = 'rolled_back') "
            "FROM {}.loads WHERE partition_key = ANY(%s) AND status <> 'loading' "
            "GROUP BY run_id ORDER BY min(started_at) DESC LIMIT %s").format(s), (keys, limit)).fetchall()
    return runs


def link_facts(settings: Settings, url: str, keys: list[str]
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(every migrated source file with its format and module path; the partitions' rows that carry
    unresolved references; every quarantined file)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        docs = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (pr.source_name, pr.source_file) pr.partition_key, pr.doc_type, pr.source_name, "
            "  pr.source_file, d.metadata->>'format', d.metadata->>'module_path' "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "ORDER BY pr.source_name, pr.source_file").format(s=s)).fetchall()
        refs = conn.execute(sql.SQL(
            "SELECT pr.partition_key, pr.doc_type, pr.source_name, pr.source_file, d.metadata->'unresolved_refs' "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) AND d.metadata ? 'unresolved_refs'").format(s=s), (keys,)).fetchall()
        quarantined = conn.execute(sql.SQL(
            "SELECT source_name, doc_type, rel_path, stage, reason FROM {}.quarantine").format(s)).fetchall()
    return docs, refs, quarantined


def retrieval_sample(settings: Settings, url: str, keys: list[str], seed: int | str, model: str, per_partition: int,
                     run_id: str | None = None) -> tuple[list[tuple[Any, ...]], Any, bool, int]:
    """(up to ``per_partition`` rows per partition embedded by ``model`` (among those run ``run_id``
    wrote, when given), chosen by a seeded hash of the id; the count of rows not sampleable (another model, or carried vectors); whether the HNSW index
    exists; the row count of documents when it does not)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        sample = conn.execute(sql.SQL(
            # Sampled by id alone; content is read (and hashed) for the sampled rows only.
            "SELECT x.partition_key, d.id::text, d.doc_type, d.doc_path, d.content, md5(d.content) FROM ("
            "  SELECT pr.partition_key, pr.document_id, "
            "    row_number() OVER (PARTITION BY pr.partition_key ORDER BY md5(pr.document_id::text || %s)) AS rn "
            "  FROM {s}.partition_rows pr JOIN documents d0 ON d0.id = pr.document_id "
            "  WHERE pr.partition_key = ANY(%s) AND d0.metadata->>'embedding_model' = %s "
            "    AND pr.embed_key <> 'carried' AND {written}) x JOIN documents d ON d.id = x.document_id "
            "WHERE x.rn <= %s ORDER BY x.partition_key, d.doc_path").format(s=s, written=written_by(s, run_id)),
            (f"{seed}:retrieval", keys, model, per_partition)).fetchall()
        skipped = conn.execute(sql.SQL(
            "SELECT count(*) FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) AND {written} AND (d.metadata->>'embedding_model' IS DISTINCT FROM %s "
            "  OR pr.embed_key = 'carried')").format(s=s, written=written_by(s, run_id)),
            (keys, model)).fetchone()
        index_exists = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'documents_embedding_hnsw'"
        ).fetchone() is not None
        rows = 0 if index_exists else int(conn.execute("SELECT count(*) FROM documents").fetchone()[0])  # type: ignore[index]
    return sample, skipped, index_exists, rows


def schema_sample(settings: Settings, url: str, keys: list[str], seed: str, per_partition: int,
                  meta: sql.Composable, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """Up to ``per_partition`` rows per partition (seeded by id; among those run ``run_id`` wrote, when
    given) with what the pandera schemas look at;
    ``meta`` selects the metadata fields (an expression over ``d.metadata``)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        # The sample is chosen from ids alone; content and the vector (12 KB) are read for sampled rows
        # only, and the vector once (its dimension comes from the column type when that pins it).
        # ``content_chars`` is only compared with 0: octet_length reads the stored size, no decompression.
        pinned = column_dims(conn)
        dims = (sql.SQL("CASE WHEN d.embedding IS NULL THEN NULL ELSE {}::int END").format(sql.Literal(pinned))
                if pinned is not None else sql.SQL("vector_dims(d.embedding)"))
        return conn.execute(sql.SQL(
            "SELECT x.partition_key, d.id::text, d.doc_type, d.source_name, d.doc_path, octet_length(d.content), "
            "  btrim(d.content, E' \\t\\r\\n') <> '', d.token_count, {dims}, vector_norm(d.embedding), {meta}, "
            "  x.source_file FROM ("
            "  SELECT pr.partition_key, pr.document_id, pr.source_file, row_number() OVER (PARTITION BY pr.partition_key "
            "      ORDER BY md5(pr.document_id::text || %s)) AS rn "
            "  FROM {s}.partition_rows pr JOIN documents d0 ON d0.id = pr.document_id "
            "  WHERE pr.partition_key = ANY(%s) AND {written}) x JOIN documents d ON d.id = x.document_id "
            "WHERE x.rn <= %s ORDER BY x.partition_key, d.doc_path"
        ).format(s=s, dims=dims, meta=meta, written=written_by(s, run_id)), (seed, keys, per_partition)).fetchall()
