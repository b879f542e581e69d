"""Reading a live legacy database in the old ``rust_docs_vectors`` layout.

The old layout is one table (``doc_embeddings`` by default) of ``crate_name, doc_path, content,
embedding vector(N), token_count, ...``. Discovery lists crates with a content fingerprint
computed server-side (so unchanged crates are skipped without pulling vectors over the wire), and
``read_crate`` turns one crate's rows into ParsedDocuments that carry their vectors over.

Only this module talks to the legacy server. The table name is validated and quoted as an
identifier, every value is a bound parameter, and errors never repeat the connection password.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from ..redaction import conninfo_passwords, known_secrets, redact
from .base import Block, ParsedDocument

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
REQUIRED_COLUMNS = ("crate_name", "doc_path", "content")
CONNECT_TIMEOUT_S = 15


class LegacyDatabaseError(RuntimeError):
    """A legacy-database problem, with any password in the message replaced by ``***``."""


def redact_url(url: str) -> str:
    """The URL (or key=value conninfo) with its password replaced by ``***``, for messages/logs."""
    return _scrub(url, url)


def _scrub(message: str, url: str) -> str:
    """``message`` without any spelling of the legacy URL's password (nor any other known secret)."""
    return redact(message, conninfo_passwords(url) + known_secrets())


def _fail(action: str, url: str, exc: BaseException) -> LegacyDatabaseError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return LegacyDatabaseError(_scrub(f"legacy database {action} failed ({redact_url(url)}): {detail}", url))


def _check_table(table: str) -> None:
    if not TABLE_NAME.match(table):
        raise LegacyDatabaseError(
            f"invalid legacy table name {table!r}: use letters, digits and underscores (max 63 characters)"
        )


@contextmanager
def _connect(url: str, action: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only connection; any psycopg error becomes a password-free LegacyDatabaseError."""
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False)
    except (psycopg.Error, ValueError) as exc:
        raise _fail(f"connection for {action}", url, exc) from None
    try:
        with conn:
            conn.read_only = True
            yield conn
    except psycopg.Error as exc:
        raise _fail(action, url, exc) from None
    finally:
        conn.close()


def _columns(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """column name → type name (``udt_name``) of the table on the connection's search_path."""
    rows = conn.execute(
        """
        SELECT a.attname, t.typname
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    if not rows:
        raise LegacyDatabaseError(f"legacy table {table!r} does not exist (or has no columns)")
    cols = {str(name): str(typ) for name, typ in rows}
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise LegacyDatabaseError(f"legacy table {table!r} lacks column(s): {', '.join(missing)}")
    return cols


def _embedding_text_expr(cols: dict[str, str]) -> sql.Composable:
    return sql.SQL("md5(embedding::text)") if "embedding" in cols else sql.SQL("NULL::text")


def list_crates(url: str, table: str = "doc_embeddings") -> list[tuple[str, str, int]]:
    """(crate_name, fingerprint, n_rows) per crate; the fingerprint changes iff a row's path,
    content or vector changes, or rows are added/removed. Rows with a NULL crate are ignored."""
    _check_table(table)
    with _connect(url, "listing crates") as conn:
        cols = _columns(conn, table)
        query = sql.SQL(
            """
            SELECT crate_name,
                   md5(string_agg(
                       md5(coalesce(doc_path, '')) || md5(coalesce(content, '')) || coalesce({emb}, '-'),
                       ',' ORDER BY doc_path, md5(coalesce(content, '')), {emb})),
                   count(*)
            FROM {table}
            WHERE crate_name IS NOT NULL
            GROUP BY crate_name
            ORDER BY crate_name
            """
        ).format(emb=_embedding_text_expr(cols), table=sql.Identifier(table))
        return [(str(c), str(fp), int(n)) for c, fp, n in conn.execute(query).fetchall()]


def _as_floats(value: Any) -> list[float] | None:
    """A vector as fetched (pgvector numpy array, float[] list, or text '[..]'/'{..}')."""
    if value is None:
        return None
    if isinstance(value, str):
        body = value.strip()[1:-1].strip()
        return [float(x) for x in body.split(",")] if body else []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if hasattr(value, "to_list"):
        value = value.to_list()
    return [float(x) for x in value]


def read_crate(
    url: str, crate: str, table: str = "doc_embeddings", dims: int | None = None
) -> list[ParsedDocument]:
    """One ParsedDocument per row of ``crate``, vectors carried over when they have ``dims``
    dimensions (others are dropped, noted in metadata, and the row is re-embedded)."""
    return list(iter_crate(url, crate, table, dims))


def iter_crate(
    url: str, crate: str, table: str = "doc_embeddings", dims: int | None = None, batch_rows: int = 500
) -> Iterator[ParsedDocument]:
    """Like :func:`read_crate` but streamed through a server-side cursor, so a crate of many
    3072-dimension rows (~100 KB each as Python floats) never has to fit in memory at once."""
    _check_table(table)
    with _connect(url, f"reading crate {crate!r}") as conn:
        cols = _columns(conn, table)
        emb_type = cols.get("embedding")
        if emb_type == "vector":
            from pgvector.psycopg import register_vector

            register_vector(conn)
            emb = sql.SQL("embedding")
        elif emb_type in ("_float4", "_float8", "_numeric"):
            emb = sql.SQL("embedding::float8[]")
        elif emb_type is not None:
            emb = sql.SQL("embedding::text")  # halfvec, text...: parsed from '[...]'
        else:
            emb = sql.SQL("NULL")
        has_id = "id" in cols
        query = sql.SQL(
            "SELECT doc_path, content, {emb}, {tc}, {id_col} FROM {table} WHERE crate_name = %s "
            "ORDER BY doc_path{order_id}, md5(coalesce(content, ''))"
        ).format(
            emb=emb,
            tc=sql.SQL("token_count") if "token_count" in cols else sql.SQL("NULL"),
            id_col=sql.SQL("id::text") if has_id else sql.SQL("NULL"),
            table=sql.Identifier(table),
            order_id=sql.SQL(", id") if has_id else sql.SQL(""),
        )
        seen: dict[str, int] = {}
        with conn.cursor(name="legacy_crate_rows", binary=True) as cur:
            cur.itersize = batch_rows
            cur.execute(query, (crate,))
            for doc_path, content, vector, tokens, row_id in cur:
                doc = _row_document(crate, table, dims, seen, doc_path, content, vector, tokens, row_id)
                if doc is not None:
                    yield doc


def _row_document(
    crate: str, table: str, dims: int | None, seen: dict[str, int],
    doc_path: Any, content: Any, vector: Any, tokens: Any, row_id: Any,
) -> ParsedDocument | None:
    if content is None or not str(content).strip() or not doc_path:
        return None  # nothing to search; such rows cannot be carried over meaningfully
    path = str(doc_path)
    seen[path] = seen.get(path, 0) + 1
    if seen[path] > 1:
        path = f"{path}#{seen[path]}"  # the old layout allowed several rows per doc_path
    metadata: dict[str, Any] = {"crate_name": crate, "legacy_table": table, "token_count": tokens}
    if row_id is not None:
        metadata["legacy_id"] = row_id
    try:
        embedding = _as_floats(vector)
    except (TypeError, ValueError):
        embedding = None
        metadata["embedding_dropped"] = "unreadable vector"
    if embedding is not None:
        if dims is not None and len(embedding) != dims:
            metadata["embedding_dropped"] = f"dimension {len(embedding)} != {dims}"
            embedding = None
        elif not embedding or not all(math.isfinite(x) for x in embedding):
            metadata["embedding_dropped"] = "empty or non-finite vector"
            embedding = None
    return ParsedDocument(
        path=path,
        blocks=[Block(str(content).replace("\x00", ""))],
        metadata=metadata,
        embedding=embedding,
        source_name=crate,
    )
