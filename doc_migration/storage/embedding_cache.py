"""Vectors already paid for (``embedding_cache``, keyed by model, dims and the sha256 of the exact
input text) and what each run spent per partition (``embedding_spend``). Callers pass the
connection of their unit of work and commit."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from ..config import Settings
from .database import connection


def uncached_texts(conn: psycopg.Connection, settings: Settings, key: str, model: str,
                   dims: int) -> list[tuple[Any, ...]]:
    """(text_sha, content, token_count) of each distinct staged text with no cached vector yet."""
    schema = sql.Identifier(settings.pipeline_schema)
    return conn.execute(sql.SQL(
        "SELECT DISTINCT ON (s.text_sha) s.text_sha, s.content, s.token_count FROM {schema}.staged_chunks s "
        "WHERE s.partition_key = %s AND s.carried_embedding IS NULL AND NOT EXISTS ("
        "  SELECT 1 FROM {schema}.embedding_cache c WHERE c.model = %s AND c.dims = %s AND c.text_sha = s.text_sha)"
    ).format(schema=schema), (key, model, dims)).fetchall()


def cached(settings: Settings, url: str, model: str, dims: int, shas: list[bytes]) -> set[bytes]:
    """Which of the text hashes have a cached vector of this model and dimension."""
    with connection(url) as conn:
        return {bytes(r[0]) for r in conn.execute(sql.SQL(
            "SELECT text_sha FROM {}.embedding_cache WHERE model = %s AND dims = %s AND text_sha = ANY(%s)")
            .format(sql.Identifier(settings.pipeline_schema)), (model, dims, shas))}


def store(conn: psycopg.Connection, settings: Settings, model: str, dims: int, shas: list[bytes],
          vectors: np.ndarray) -> None:
    """Binary COPY straight into the cache (one write per vector); if another run cached one of these
    texts meanwhile, fall back to a staging table and ON CONFLICT DO NOTHING."""
    schema = sql.Identifier(settings.pipeline_schema)
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


def record_spend(conn: psycopg.Connection, settings: Settings, run_id: str, key: str, model: str, *,
                 inputs: int = 0, cache_hits: int = 0, tokens: int = 0, requests: int = 0, retries: int = 0,
                 seconds: float = 0.0, batch_tokens: int = 0) -> None:
    """Add to the run's spend for a partition (the embed stage and, for vectors computed while
    loading, the load stage both report here); the caller commits."""
    schema = sql.Identifier(settings.pipeline_schema)
    conn.execute(sql.SQL(
        "INSERT INTO {}.embedding_spend (run_id, partition_key, model, inputs, cache_hits, tokens, requests, "
        "retries, seconds, batch_tokens) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id, partition_key) DO UPDATE SET "
        "inputs = embedding_spend.inputs + EXCLUDED.inputs, "
        "cache_hits = greatest(embedding_spend.cache_hits, EXCLUDED.cache_hits), "
        "tokens = embedding_spend.tokens + EXCLUDED.tokens, requests = embedding_spend.requests + EXCLUDED.requests, "
        "retries = embedding_spend.retries + EXCLUDED.retries, seconds = embedding_spend.seconds + EXCLUDED.seconds, "
        "batch_tokens = embedding_spend.batch_tokens + EXCLUDED.batch_tokens"
    ).format(schema), (run_id, key, model, inputs, cache_hits, tokens, requests, retries, seconds, batch_tokens))


