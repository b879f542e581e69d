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

from ..config import Settings
from ..embedding.base import Embedder, EmbedStats, check_vectors
from ..faults import crash_point
from ..storage import embedding_cache as cache
from ..storage import staging
from ..storage.database import connection
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


def embed_partition(settings: Settings, url: str, key: str, run_id: str, embedder: Embedder,
                    tally: Tally | None = None) -> EmbedResult:
    """``tally`` counts chunks sent to the embedder across the run's partitions (a long embed shows progress)."""
    start = time.perf_counter()
    result = EmbedResult(key)
    model, dims = settings.model_name, settings.embedding_dims
    with connection(url) as conn:
        result.chunks, result.carried = staging.staged_counts(conn, settings, key)
        if not embedder.cacheable:
            conn.rollback()
            result.deferred = result.chunks - result.carried
            result.seconds = time.perf_counter() - start
            return result
        missing = cache.uncached_texts(conn, settings, key, model, dims)
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
            cache.store(conn, settings, model, dims, [r[0] for r in part], vectors)
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
        cache.record_spend(conn, settings, run_id, key, model, inputs=result.embedded, cache_hits=result.cache_hits,
                     tokens=result.tokens, requests=result.requests, retries=result.retries, seconds=result.seconds)
        conn.commit()
    return result
