"""Retrieval smoke test: is every sampled chunk its own nearest neighbour, the way the doc-server searches?

A row whose vector does not belong to its text (swapped, stale, from another model, corrupted) is
invisible to semantic search even when every other check passes. Sample k chunks per partition
(deterministic seed), embed their stored content afresh with the configured embedder, run the
doc-server's query form (``ORDER BY embedding::halfvec(N) <=> $1::halfvec(N)``, which hits the HNSW
index) and require the chunk itself first. Ties count as hits: a row with identical content, or any
row at the same distance (the offline embedder ignores case and punctuation, so two texts differing
only in those have the same vector). Rows embedded by another model than the configured one are
skipped: a fresh vector could not match them.

Without the HNSW index (a deferred bootstrap) every query would be an exact scan of the whole table:
minutes per query at 350k rows. Then all queries share one scan: the vectors stream to the client,
which ranks every row against every sampled vector at once, and the sample is thinned (evenly
across partitions) to ``EXACT_BUDGET`` row x query distances.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format

from ..config import Settings
from ..embedding.base import Embedder
from ..embedding.factory import make_embedder
from ..storage import audit
from ..storage.database import connection
from .common import ERROR, check_result, plural
from .config import ValidationConfig

TIE_EPSILON = 1e-4  # halfvec rounding moves a cosine distance by ~2e-5
EXACT_BUDGET = 50_000_000  # row x query distances of one unindexed check (~0.3 TFLOP at 3072 dims)
EXACT_FETCH = 2_000  # rows per fetch of the exact scan (12 MB of vectors): client memory stays flat

Ranked = tuple[list[tuple[str, str, str, float | None]], float | None]  # top-k (id, path, md5, dist), self dist


def _exprs(dims: int) -> tuple[sql.Composable, sql.Composable]:
    """The indexed expression and the query-vector cast, exactly as ensure_vector_index builds the index."""
    if dims > 2000:
        return (sql.SQL("d.embedding::halfvec({})").format(sql.Literal(dims)),
                sql.SQL("%(q)s::halfvec({})").format(sql.Literal(dims)))
    return sql.SQL("d.embedding"), sql.SQL("%(q)s::vector({})").format(sql.Literal(dims))


def check_retrieval(settings: Settings, url: str, keys: list[str], config: ValidationConfig | None = None,
                    embedder: Embedder | None = None, written_by: str | None = None) -> dict[str, Any]:
    """recall@1 of sampled chunks (of those run ``written_by`` wrote, when given) querying with their own
    freshly embedded text (ERROR below threshold)."""
    cfg = config or ValidationConfig()
    model = settings.model_name
    k = cfg.retrieval_top_k
    sample, skipped, index_exists, rows = audit.retrieval_sample(settings, url, keys, cfg.seed, model,
                                                              cfg.retrieval_per_partition, written_by)
    total = len(sample)
    if not index_exists:
        sample = [sample[i] for i in _thin(len(sample), rows)]
    if not sample:
        return check_result("retrieval", passed=True, severity=ERROR, findings=[], cap=cfg.max_findings,
                            message="no rows to sample (nothing loaded with the configured model)",
                            sampled=0, recall_at_1=None, recall_at_k=None, skipped_other_model=int(skipped[0])
                            if skipped else 0, index_exists=index_exists, index_used=None)
    emb = embedder or make_embedder(settings)
    vectors = emb.embed([r[4] for r in sample])
    hits = hits_k = 0
    findings: list[dict[str, Any]] = []
    misplaced: list[str] = []
    index_used: bool | None = None
    with connection(url) as conn:
        if index_exists:
            ranked, index_used = _rank_indexed(conn, settings.embedding_dims, sample, vectors, k)
        else:
            ranked = _rank_exact(conn, settings.embedding_dims, sample, vectors, k)
    for (key, rid, doc_type, doc_path, _content, md5), (top, self_d) in zip(sample, ranked, strict=True):
        if not top:
            continue
        self_rank = next((i + 1 for i, t in enumerate(top) if t[0] == rid), None)
        top1 = float(top[0][3]) if top[0][3] is not None else float("nan")
        self_dist = float(self_d) if self_d is not None else float("nan")
        tie = self_dist - top1 <= TIE_EPSILON  # False when either is NaN (a zero vector)
        hit1 = top[0][0] == rid or top[0][2] == md5 or tie
        if hit1:
            hits += 1
        if hit1 or self_rank is not None or any(t[2] == md5 for t in top):
            hits_k += 1
        if not hit1:
            misplaced.append(rid)
            findings.append({"partition": key, "doc_type": doc_type, "doc_path": doc_path, "rank": self_rank,
                             "top1_doc_path": top[0][1], "top1_distance": round(top1, 6),
                             "self_distance": None if self_dist != self_dist else round(self_dist, 6)})
    n = len(sample)
    recall1, recallk = hits / n, hits_k / n
    passed = recall1 >= cfg.min_recall_at_1
    parts = sorted({f["partition"] for f in findings})
    index_note = "" if index_exists else (
        f" (no HNSW index: exact search, {n} of {total} sampled rows in one scan; the next load builds the index)")
    if not passed:
        f0 = findings[0]
        message = (f"recall@1 {recall1:.4f} ({hits}/{n}) is below {cfg.min_recall_at_1}: "
                   f"{plural(len(findings), 'sampled row')} not found first by their own text (e.g. {f0['doc_path']} "
                   f"→ {f0['top1_doc_path']}); their vectors do not match their text: run `doc-migrate validate "
                   f"--repair` to re-embed {', '.join(parts[:5])}{'…' if len(parts) > 5 else ''}{index_note}")
    else:
        message = (f"recall@1 {recall1:.4f} ({hits}/{n} sampled rows found first by their own text), "
                   f"recall@{k} {recallk:.4f}{index_note}")
    return check_result("retrieval", passed=passed, severity=ERROR, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=parts if not passed else [], sampled=n,
                        recall_at_1=round(recall1, 6), recall_at_k=round(recallk, 6), top_k=k,
                        threshold=cfg.min_recall_at_1, skipped_other_model=int(skipped[0]) if skipped else 0,
                        index_exists=index_exists, index_used=index_used, misplaced_ids=misplaced,
                        sampled_before_thinning=total,
                        sample_digest=hashlib.sha256("".join(r[1] for r in sample).encode()).hexdigest()[:16])


def _rank_indexed(conn: Any, dims: int, sample: list[Any], vectors: Any, k: int) -> tuple[list[Ranked], bool]:
    """The doc-server's own query per sampled row, proven (EXPLAIN) to use the HNSW index."""
    expr, qcast = _exprs(dims)
    # The same named parameter twice: one distance per row, computed for the sort and returned.
    top_q = sql.SQL("SELECT d.id::text, d.doc_path, md5(d.content), {e} <=> {q} FROM documents d "
                    "ORDER BY {e} <=> {q} LIMIT %(k)s").format(e=expr, q=qcast)
    self_q = sql.SQL("SELECT {e} <=> {q} FROM documents d WHERE d.id = %(id)s").format(e=expr, q=qcast)
    # Small tables make the planner prefer a sequential scan; the doc-server's tables are large
    # enough for the index, so that is the path to prove (and it is 50x faster per query here).
    conn.execute("SET enable_seqscan = off")
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + top_q, {"q": vectors[0], "k": k}).fetchone()
    index_used = plan is not None and "documents_embedding_hnsw" in json.dumps(plan[0])
    out: list[Ranked] = []
    for row, vec in zip(sample, vectors, strict=True):
        top = [(t[0], t[1], t[2], t[3]) for t in conn.execute(top_q, {"q": vec, "k": k}).fetchall()]
        self_d = next((t[3] for t in top if t[0] == row[1]), None)
        if top and self_d is None:
            got = conn.execute(self_q, {"q": vec, "id": row[1]}).fetchone()
            self_d = got[0] if got else None
        out.append((top, self_d))
    return out, index_used


def _thin(n: int, rows: int) -> list[int]:
    """Indexes of an evenly spaced subsample that keeps one exact scan within EXACT_BUDGET."""
    m = min(n, max(1, EXACT_BUDGET // max(rows, 1)))
    return sorted({i * n // m for i in range(m)})


class _RawVector(Loader):
    """The binary ``halfvec`` wire format as bytes (int16 dims, int16 unused, big-endian float16s)."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _rank_exact(conn: Any, dims: int, sample: list[Any], vectors: Any, k: int) -> list[Ranked]:
    """Exact top-k of every sampled vector from one sequential scan (no index to use).

    The rows' vectors stream to the client in fixed-size fetches, as ``halfvec`` like the index reads
    them (half the bytes), and meet all query vectors in one matrix product; a running top-k per query
    keeps memory flat whatever the table size. (Server-side distances cost a detoast per row and
    query pair: several times slower.)
    """
    q = np.asarray(vectors, dtype=np.float32).reshape(len(sample), dims)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    m = len(sample)
    best_d = np.full((m, 0), np.inf, dtype=np.float32)
    best_id = np.empty((m, 0), dtype=object)  # only the running top-k ids are kept, not every row's
    self_d: list[float | None] = [None] * m
    want = {row[1]: i for i, row in enumerate(sample)}
    oid = conn.execute("SELECT 'halfvec'::regtype::oid::int").fetchone()[0]
    with conn.cursor(name="doc_migration_retrieval_scan", binary=True) as cur:
        cur.adapters.register_loader(oid, _RawVector)
        cur.itersize = EXACT_FETCH
        cur.execute(sql.SQL("SELECT id::text, embedding::halfvec({}) FROM documents WHERE vector_dims(embedding) = {}")
                    .format(sql.Literal(dims), sql.Literal(dims)))
        while batch := cur.fetchmany(EXACT_FETCH):
            rows = np.frombuffer(b"".join(b[1][4:] for b in batch), dtype=">f2").reshape(len(batch), dims)
            rows = rows.astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = 1.0 - (q @ rows.T) / np.linalg.norm(rows, axis=1)[None, :]
            dist = np.where(np.isfinite(dist), dist, np.inf)  # a zero vector has no distance: never a neighbour
            ids = np.array([b[0] for b in batch], dtype=object)
            for j, rid in enumerate(ids):
                if rid in want:
                    d = float(dist[want[rid], j])
                    self_d[want[rid]] = d if np.isfinite(d) else None
            cand_d = np.concatenate([best_d, dist], axis=1)
            cand_id = np.concatenate([best_id, np.broadcast_to(ids, (m, len(ids)))], axis=1)
            order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(cand_d, order, axis=1)
            best_id = np.take_along_axis(cand_id, order, axis=1)
    wanted = sorted({str(x) for x, d in zip(best_id.ravel(), best_d.ravel(), strict=True) if np.isfinite(d)})
    info = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT id::text, doc_path, md5(content) FROM documents WHERE id = ANY(%s::uuid[])", (wanted,)).fetchall()}
    out: list[Ranked] = []
    for i in range(m):
        top: list[tuple[str, str, str, float | None]] = [
            (str(x), *info[str(x)], float(d)) for x, d in zip(best_id[i], best_d[i], strict=True)
            if np.isfinite(d) and str(x) in info]
        out.append((top, self_d[i]))
    return out
