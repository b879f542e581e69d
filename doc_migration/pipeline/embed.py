"""Stage 3, embeddings: embed every staged chunk whose exact text is not in the cache yet.

The cache is keyed by (model, dims, sha256 of the text), so a re-run, a rollback followed by a
redo, or the same text under another path costs nothing. Each batch commits on its own: a crash
loses at most the batch in flight, and the next run resumes from the cache.

An embedder that is not ``cacheable`` (the offline one: recomputing costs less than writing and
reading back 12 kB per vector) is not called here; the load stage computes its vectors while it
streams the rows into ``documents``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from ..config import Settings
from ..embedding.base import Embedder, EmbedStats
from ..storage.database import connection
from .faults import crash_point
from .progress import Tally


@dataclass
class EmbedResult:
    key: str
    chunks: int = 0
    cache_hits: int = 0
    carried: int = 0
    embedded: int = 0
    deferred: int = 0  # vectors the load stage computes (embedder not cacheable)
    tokens: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0


def _store(conn: psycopg.Connection, schema: sql.Identifier, model: str, dims: int, shas: list[bytes],
           vectors: np.ndarray) -> None:
    """Binary COPY straight into the cache (one write per vector); if another run cached one of these
    texts meanwhile, fall back to a staging table and ON CONFLICT DO NOTHING."""
    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(sql.SQL(
                "COPY {}.embedding_cache (model, dims, text_sha, embedding) FROM STDIN WITH (FORMAT BINARY)")
                .format(schema)) as copy:
            copy.set_types(["text", "int4", "bytea", "vector"])
            for sha, vec in zip(shas, vectors, strict=True):
                copy.write_row((model, dims, sha, vec))
        return
    except psycopg.errors.UniqueViolation:
        pass
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS _emb (text_sha bytea, embedding vector) ON COMMIT DELETE ROWS")
        with cur.copy("COPY _emb (text_sha, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["bytea", "vector"])
            for sha, vec in zip(shas, vectors, strict=True):
                copy.write_row((sha, vec))
        cur.execute(sql.SQL(
            "INSERT INTO {}.embedding_cache (model, dims, text_sha, embedding) "
            "SELECT %s, %s, text_sha, embedding FROM _emb ON CONFLICT DO NOTHING").format(schema), (model, dims))


def check_vectors(vectors: np.ndarray, n: int, dims: int) -> None:
    """An embedder's answer must be n finite vectors of the configured size before anything stores it."""
    if vectors.shape != (n, dims) or not np.all(np.isfinite(vectors)):
        raise RuntimeError(f"embedder returned {vectors.shape} for {n} inputs of {dims} dimensions")


def record_spend(conn: psycopg.Connection, schema: sql.Identifier, run_id: str, key: str, model: str, *,
                 inputs: int = 0, cache_hits: int = 0, tokens: int = 0, requests: int = 0, retries: int = 0,
                 seconds: float = 0.0) -> None:
    """Add to the run's spend for a partition (the embed stage and, for vectors computed while
    loading, the load stage both report here); the caller commits."""
    conn.execute(sql.SQL(
        "INSERT INTO {}.embedding_spend (run_id, partition_key, model, inputs, cache_hits, tokens, requests, "
        "retries, seconds) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id, partition_key) DO UPDATE SET "
        "inputs = embedding_spend.inputs + EXCLUDED.inputs, "
        "cache_hits = greatest(embedding_spend.cache_hits, EXCLUDED.cache_hits), "
        "tokens = embedding_spend.tokens + EXCLUDED.tokens, requests = embedding_spend.requests + EXCLUDED.requests, "
        "retries = embedding_spend.retries + EXCLUDED.retries, seconds = embedding_spend.seconds + EXCLUDED.seconds"
    ).format(schema), (run_id, key, model, inputs, cache_hits, tokens, requests, retries, seconds))


def embed_partition(settings: Settings, url: str, key: str, run_id: str, embedder: Embedder,
                    tally: Tally | None = None) -> EmbedResult:
    """``tally`` counts chunks sent to the embedder across the run's partitions (a long embed shows progress)."""
    schema = sql.Identifier(settings.pipeline_schema)
    start = time.perf_counter()
    result = EmbedResult(key)
    model, dims = settings.model_name, settings.embedding_dims
    with connection(url) as conn:
        counts = conn.execute(sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE carried_embedding IS NOT NULL) FROM {}.staged_chunks "
            "WHERE partition_key = %s").format(schema), (key,)).fetchone()
        assert counts is not None
        result.chunks, result.carried = int(counts[0]), int(counts[1])
        if not embedder.cacheable:
            conn.rollback()
            result.deferred = result.chunks - result.carried
            result.seconds = time.perf_counter() - start
            return result
        missing = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (s.text_sha) s.text_sha, s.content, s.token_count FROM {schema}.staged_chunks s "
            "WHERE s.partition_key = %s AND s.carried_embedding IS NULL AND NOT EXISTS ("
            "  SELECT 1 FROM {schema}.embedding_cache c WHERE c.model = %s AND c.dims = %s AND c.text_sha = s.text_sha)"
        ).format(schema=schema), (key, model, dims)).fetchall()
        conn.rollback()
        result.cache_hits = result.chunks - result.carried - len(missing)
        before = EmbedStats()
        before.add(embedder.stats)
        batch = max(1, settings.batch_size)
        if tally is not None and missing:
            tally.add_total(len(missing))
        for i in range(0, len(missing), batch):
            part = missing[i:i + batch]
            vectors = embedder.embed([r[1] for r in part])
            check_vectors(vectors, len(part), dims)
            _store(conn, schema, model, dims, [r[0] for r in part], vectors)
            crash_point("embed-before-commit")
            conn.commit()
            crash_point("embed-after-commit")
            result.embedded += len(part)
            if tally is not None:
                tally.advance(len(part))
        spent = embedder.stats
        result.tokens = spent.tokens - before.tokens
        result.requests = spent.requests - before.requests
        result.retries = spent.retries - before.retries
        result.seconds = time.perf_counter() - start
        record_spend(conn, schema, run_id, key, model, inputs=result.embedded, cache_hits=result.cache_hits,
                     tokens=result.tokens, requests=result.requests, retries=result.retries, seconds=result.seconds)
        conn.commit()
    return result
