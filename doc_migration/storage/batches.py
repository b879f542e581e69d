"""The Batch API's bookkeeping (``embedding_batches``, ``embedding_batch_texts``): what the pipeline
asked OpenAI to embed, in which file and batch, and where each batch stands.

Why it is written step by step (intent, then file id, then batch id, each committed before the next
network call): a kill -9 between any two steps leaves a row that says exactly what may exist on the
server, so a resumed run adopts it instead of uploading or paying again. Every writer here is
idempotent (a repeated update sets the same values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..config import Settings
from .database import connection

#: Batch statuses after which the server does nothing more with a batch.
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchRow:
    """One request file and its batch, as recorded."""

    token: str
    run_id: str
    model: str
    dims: int
    partitions: list[str]
    requests: int
    inputs: int
    tokens: int
    status: str
    file_id: str | None
    batch_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int
    stored: int
    error: str | None
    ingested: bool
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schema(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.pipeline_schema)


def batches(settings: Settings, url: str, *, live_only: bool = False, model: str | None = None,
            dims: int | None = None) -> list[BatchRow]:
    """Recorded batches, oldest first; ``live_only``: those whose output is not in the cache yet."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    if live_only:
        where.append(sql.SQL("NOT ingested"))
    if model is not None:
        where.append(sql.SQL("model = %s"))
        params.append(model)
    if dims is not None:
        where.append(sql.SQL("dims = %s"))
        params.append(dims)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT token, run_id, model, dims, partitions, requests, inputs, tokens, status, file_id, batch_id, "
            "output_file_id, error_file_id, completed, failed, stored, error, ingested, created_at, updated_at "
            "FROM {}.embedding_batches WHERE {} ORDER BY created_at, token").format(
                _schema(settings), sql.SQL(" AND ").join(where)), params).fetchall()
    return [BatchRow(*r) for r in rows]


def live_texts(conn: psycopg.Connection, settings: Settings, model: str, dims: int) -> set[bytes]:
    """Text hashes in a batch of this model whose output is not ingested: never submitted again."""
    return {bytes(r[0]) for r in conn.execute(sql.SQL(
        "SELECT DISTINCT t.text_sha FROM {s}.embedding_batch_texts t JOIN {s}.embedding_batches b USING (token) "
        "WHERE NOT b.ingested AND b.model = %s AND b.dims = %s").format(s=_schema(settings)), (model, dims))}


def record_intent(conn: psycopg.Connection, settings: Settings, token: str, run_id: str, model: str, dims: int,
                  partitions: Sequence[str], requests: Sequence[Sequence[bytes]], tokens: int) -> None:
    """The batch about to be uploaded and every text of it, before the upload (caller commits)."""
    schema = _schema(settings)
    conn.execute(sql.SQL(
        "INSERT INTO {}.embedding_batches (token, run_id, model, dims, partitions, requests, inputs, tokens) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (token) DO NOTHING").format(schema),
        (token, run_id, model, dims, list(partitions), len(requests), sum(len(r) for r in requests), tokens))
    with conn.cursor() as cur, cur.copy(sql.SQL(
            "COPY {}.embedding_batch_texts (token, request, position, text_sha) FROM STDIN").format(schema)) as copy:
        for i, shas in enumerate(requests):
            for j, sha in enumerate(shas):
                copy.write_row((token, i, j, sha))


def forget(conn: psycopg.Connection, settings: Settings, token: str) -> None:
    """Drop a batch that never reached the server (its texts become submittable again)."""
    conn.execute(sql.SQL("DELETE FROM {}.embedding_batches WHERE token = %s").format(_schema(settings)), (token,))


def request_texts(conn: psycopg.Connection, settings: Settings, token: str) -> dict[int, list[bytes]]:
    """Request number -> its text hashes in input order (to match the unordered output)."""
    out: dict[int, list[bytes]] = {}
    for request, sha in conn.execute(sql.SQL(
            "SELECT request, text_sha FROM {}.embedding_batch_texts WHERE token = %s ORDER BY request, position")
            .format(_schema(settings)), (token,)):
        out.setdefault(int(request), []).append(bytes(sha))
    return out


def update(conn: psycopg.Connection, settings: Settings, token: str, **values: Any) -> None:
    """Set columns of one batch (status, file_id, batch_id, counts, ...) and its update time."""
    allowed = {"status", "file_id", "batch_id", "output_file_id", "error_file_id", "completed", "failed", "stored",
               "error", "ingested"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown batch columns {sorted(unknown)}")
    if not values:
        return
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
    conn.execute(sql.SQL("UPDATE {}.embedding_batches SET {}, updated_at = now() WHERE token = %s").format(
        _schema(settings), assignments), [*values.values(), token])


def attempts(conn: psycopg.Connection, settings: Settings, shas: Sequence[bytes], model: str,
             dims: int) -> dict[bytes, int]:
    """How many batches of this model each text was already submitted in (bounds resubmissions)."""
    return {bytes(r[0]): int(r[1]) for r in conn.execute(sql.SQL(
        "SELECT t.text_sha, count(DISTINCT t.token) FROM {s}.embedding_batch_texts t "
        "JOIN {s}.embedding_batches b USING (token) WHERE b.model = %s AND b.dims = %s AND b.status <> 'intent' "
        "AND t.text_sha = ANY(%s) GROUP BY 1").format(s=_schema(settings)), (model, dims, list(shas)))}
