"""The duplicate check's questions, and the SimHash cache it keeps (``text_fingerprints``).

A fingerprint costs reading and shingling a text, so each distinct text is fingerprinted once (the
first time the check meets it) and read back afterwards: a re-run that changed a few files
shingles only their new texts, and reads no content for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg import sql

from ..config import Settings
from .database import connection

_U64 = 1 << 64


def _signed(fp: int) -> int:
    """A 64-bit SimHash as PostgreSQL's (signed) bigint."""
    return fp - _U64 if fp >= _U64 >> 1 else fp


def duplicate_candidates(settings: Settings, url: str, keys: list[str], shingle_words: int, min_words: int
                         ) -> list[tuple[Any, ...]]:
    """Every row of the partitions, without its content: (id, partition, doc type, source, path,
    source file, text sha256, aliases, fingerprinted, SimHash or None)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT d.id::text, pr.partition_key, pr.doc_type, pr.source_name, pr.doc_path, pr.source_file, "
            "  pr.text_sha, d.metadata->'aliases', f.text_sha IS NOT NULL, f.simhash "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "LEFT JOIN {s}.text_fingerprints f ON f.text_sha = pr.text_sha AND f.shingle_words = %s "
            "  AND f.min_words = %s "
            "WHERE pr.partition_key = ANY(%s) ORDER BY pr.doc_type, pr.source_name, pr.doc_path").format(s=s),
            (shingle_words, min_words, keys)).fetchall()
    return [(*r[:9], None if r[9] is None else r[9] % _U64) for r in rows]


def texts(settings: Settings, url: str, ids: list[str], batch: int) -> Iterator[list[tuple[bytes, str]]]:
    """(text sha256, content) of the given rows, one row per distinct text, in batches: memory stays at
    one batch of content whatever the number of new texts. A text missing here gets no fingerprint."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn, conn.cursor(name="doc_migration_fingerprint_texts") as cur:
        cur.execute(sql.SQL(
            "SELECT DISTINCT ON (pr.text_sha) pr.text_sha, d.content FROM {s}.partition_rows pr "
            "JOIN documents d ON d.id = pr.document_id WHERE pr.document_id = ANY(%s::uuid[]) "
            # A row edited behind the pipeline's back (the checksum check's finding) is not fingerprinted
            # under the hash of the text it no longer holds.
            "  AND sha256(convert_to(d.content, 'UTF8')) = pr.text_sha "
            "ORDER BY pr.text_sha").format(s=s), (ids,))
        while rows := cur.fetchmany(batch):
            yield [(bytes(r[0]), r[1]) for r in rows]


def store(settings: Settings, url: str, shingle_words: int, min_words: int,
          fingerprints: list[tuple[bytes, int | None]]) -> None:
    """Remember the fingerprints (None: too short to fingerprint); a text stored already is kept."""
    if not fingerprints:
        return
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO {s}.text_fingerprints (text_sha, shingle_words, min_words, simhash) "
            "SELECT t.sha, %s, %s, t.fp FROM unnest(%s::bytea[], %s::bigint[]) AS t(sha, fp) "
            "ON CONFLICT DO NOTHING").format(s=s),
            (shingle_words, min_words, [f[0] for f in fingerprints],
             [None if f[1] is None else _signed(f[1]) for f in fingerprints]))
        conn.commit()


def written_ids(settings: Settings, url: str, run_id: str) -> set[str]:
    """Rows the run's committed loads inserted or updated (from their undo records)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {r[0] for r in conn.execute(sql.SQL(
            "SELECT lu.document_id::text FROM {s}.load_undo lu JOIN {s}.loads l ON l.load_id = lu.load_id "
            "WHERE l.run_id = %s AND l.status = 'committed' AND lu.op <> 'delete'").format(s=s), (run_id,))}
