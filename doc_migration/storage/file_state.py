"""What each loaded file produced (``file_state``) and what a staged version re-parsed (``staged_files``).

The partition checksum says *whether* a partition changed; these tables say *which files*. A file's
record is written in the load transaction that committed its rows, so it is exactly as current as
the rows: the next run re-parses only files whose bytes or configuration version differ, keeps the
rows of the others where they are, and prunes the rows of files that are gone. Anything that moves
rows outside a load (rollback, reset, prune, duplicate drop) forgets the partition's records, so
its next change is a full re-parse rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..config import Settings
from .database import connection

FileKey = tuple[str, str]  # (source_name, rel_path): a file of a partition
Identity = tuple[str, str, str]  # (doc_type, source_name, doc_path): a row of documents


@dataclass(frozen=True)
class LoadedFile:
    """A file as its partition's latest load committed it."""

    sha256: str | None
    version: str
    outcome: str  # "loaded" | "refused"
    documents: int
    chunks: int


@dataclass(frozen=True)
class StagedFile:
    """A file of a staged version: parsed (``loaded`` / ``refused``) or, incrementally, ``deleted``."""

    source_name: str
    rel_path: str
    sha256: str | None
    version: str
    outcome: str
    documents: int
    row_ids: list[Any]


def loaded_files(settings: Settings, url: str, key: str) -> tuple[int | None, dict[FileKey, LoadedFile]]:
    """(the partition's latest load id, or None if it is not loaded; its files' records)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        state = conn.execute(sql.SQL("SELECT load_id FROM {}.partition_state WHERE partition_key = %s").format(s),
                             (key,)).fetchone()
        if state is None:
            return None, {}
        files = {(r[0], r[1]): LoadedFile(r[2], r[3], r[4], int(r[5]), int(r[6])) for r in conn.execute(sql.SQL(
            "SELECT source_name, rel_path, sha256, version, outcome, documents, cardinality(row_ids) "
            "FROM {}.file_state WHERE partition_key = %s").format(s), (key,))}
    return int(state[0]), files


def _rows(settings: Settings, url: str, key: str, files: list[FileKey], owned_by_them: bool) -> dict[Identity, str]:
    """The partition's rows owned (or not owned) by the given files, each with its source file."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {(r[0], r[1], r[2]): r[3] for r in conn.execute(sql.SQL(
            "SELECT pr.doc_type, pr.source_name, pr.doc_path, pr.source_file FROM {s}.partition_rows pr "
            "WHERE pr.partition_key = %(k)s AND pr.document_id {op} ("
            "  SELECT unnest(fs.row_ids) FROM {s}.file_state fs "
            "  JOIN unnest(%(src)s::text[], %(rel)s::text[]) AS f(source_name, rel_path) USING (source_name, rel_path) "
            "  WHERE fs.partition_key = %(k)s)").format(s=s, op=sql.SQL("IN") if owned_by_them else sql.SQL("NOT IN")),
            {"k": key, "src": [f[0] for f in files], "rel": [f[1] for f in files]})}


def kept_rows(settings: Settings, url: str, key: str, replaced: list[FileKey]) -> dict[Identity, str]:
    """The partition's rows that stay as they are (not owned by a replaced file), each with the
    file it came from: a re-parsed file may not take one of them over."""
    return _rows(settings, url, key, replaced, owned_by_them=False)


def rows_of_files(settings: Settings, url: str, key: str, files: list[FileKey]) -> set[Identity]:
    """The identities of the rows the given files own in the partition now."""
    return set(_rows(settings, url, key, files, owned_by_them=True)) if files else set()


def write_staged_files(conn: psycopg.Connection, s: sql.Identifier, key: str, files: list[StagedFile]) -> None:
    """Inside the staged version's transaction (the caller deleted the previous version's files)."""
    with conn.cursor().copy(sql.SQL(
            "COPY {}.staged_files (partition_key, source_name, rel_path, sha256, version, outcome, documents, row_ids) "
            "FROM STDIN WITH (FORMAT BINARY)").format(s)) as copy:
        copy.set_types(["text", "text", "text", "text", "text", "text", "int4", "uuid[]"])
        for f in files:
            copy.write_row((key, f.source_name, f.rel_path, f.sha256, f.version, f.outcome, f.documents, f.row_ids))


def gone_rows_sql(s: sql.Identifier) -> sql.Composed:
    """SQL (params ``key``): the partition's rows owned by the files an incremental version replaces."""
    return sql.SQL(
        "SELECT unnest(fs.row_ids) FROM {s}.file_state fs JOIN {s}.staged_files sf "
        "ON sf.partition_key = fs.partition_key AND sf.source_name = fs.source_name AND sf.rel_path = fs.rel_path "
        "WHERE fs.partition_key = %(key)s").format(s=s)


def commit_files(conn: psycopg.Connection, s: sql.Identifier, key: str, load_id: int, incremental: bool) -> None:
    """In the load transaction: the staged files become the partition's records (all of them for a
    full version; the replaced ones for an incremental version), and the staged list is consumed."""
    if incremental:
        conn.execute(sql.SQL(
            "DELETE FROM {s}.file_state fs USING {s}.staged_files sf WHERE fs.partition_key = %s "
            "AND sf.partition_key = fs.partition_key AND sf.source_name = fs.source_name "
            "AND sf.rel_path = fs.rel_path").format(s=s), (key,))
    else:
        conn.execute(sql.SQL("DELETE FROM {}.file_state WHERE partition_key = %s").format(s), (key,))
    conn.execute(sql.SQL(
        "INSERT INTO {s}.file_state (partition_key, source_name, rel_path, sha256, version, outcome, documents, "
        "row_ids, load_id) SELECT partition_key, source_name, rel_path, sha256, version, outcome, documents, row_ids, "
        "%s FROM {s}.staged_files WHERE partition_key = %s AND outcome <> 'deleted'").format(s=s), (load_id, key))
    conn.execute(sql.SQL("DELETE FROM {}.staged_files WHERE partition_key = %s").format(s), (key,))


def delete_quarantine_of_replaced(conn: psycopg.Connection, s: sql.Identifier, key: str) -> None:
    """Incremental load: the quarantine records of the replaced files go (a dump's refused rows are
    recorded as ``file#rowN``); the other files' records stay as they are."""
    conn.execute(sql.SQL(
        "DELETE FROM {s}.quarantine q USING {s}.staged_files sf WHERE q.partition_key = %s "
        "AND sf.partition_key = q.partition_key AND sf.source_name = q.source_name "
        "AND (q.rel_path = sf.rel_path OR starts_with(q.rel_path, sf.rel_path || '#row'))").format(s=s), (key,))


def forget_partition(conn: psycopg.Connection, s: sql.Identifier, key: str) -> None:
    """Rows moved outside a load: the partition's next change re-parses all of its files, and an
    incremental staged version computed against the old rows is dropped with its files."""
    conn.execute(sql.SQL("DELETE FROM {}.file_state WHERE partition_key = %s").format(s), (key,))
    incremental = sql.SQL("EXISTS (SELECT 1 FROM {}.staged_partitions sp WHERE sp.partition_key = %(k)s "
                          "AND sp.base_load_id IS NOT NULL)").format(s)
    for table in ("staged_files", "staged_chunks"):
        conn.execute(sql.SQL("DELETE FROM {}.{} WHERE partition_key = %(k)s AND {}").format(
            s, sql.Identifier(table), incremental), {"k": key})
    conn.execute(sql.SQL("DELETE FROM {}.staged_partitions WHERE partition_key = %(k)s AND base_load_id IS NOT NULL")
                 .format(s), {"k": key})


@dataclass(frozen=True)
class Clash:
    """A staged file whose row key another partition's loaded file owns already."""

    quarantine: dict[str, Any]
    chunks: int
    documents: int


def refuse_clashes(conn: psycopg.Connection, s: sql.Identifier, key: str) -> list[Clash]:
    """In the load transaction, before anything is written: a staged file that would produce a row
    another partition owns (two shards' files yielding one ``(doc_type, source_name, doc_path)``,
    e.g. ``guide.md#chunk0001`` beside a long ``guide.md``) is refused, naming both files, instead
    of taking the row over. It is staged as deleted (no file record), so the next run parses it
    again: a record that moved between two files of different shards loads once its old owner
    has let go of it."""
    rows = conn.execute(sql.SQL(
        "WITH clash AS (SELECT st.id, st.doc_type, st.doc_path, pr.partition_key AS other_key, "
        "  pr.source_file AS other_file FROM {s}.staged_chunks st JOIN {s}.partition_rows pr "
        "  ON pr.doc_type = st.doc_type AND pr.source_name = st.source_name AND pr.doc_path = st.doc_path "
        "  WHERE st.partition_key = %(k)s AND pr.partition_key <> %(k)s) "
        "SELECT sf.source_name, sf.rel_path, sf.documents, cardinality(sf.row_ids), min(c.doc_type), "
        "  min(c.doc_path), min(c.other_file), min(c.other_key) "
        "FROM {s}.staged_files sf JOIN clash c ON c.id = ANY(sf.row_ids) WHERE sf.partition_key = %(k)s "
        "GROUP BY sf.source_name, sf.rel_path, sf.documents, sf.row_ids ORDER BY 1, 2").format(s=s),
        {"k": key}).fetchall()
    out: list[Clash] = []
    for source_name, rel_path, documents, chunks, doc_type, doc_path, other_file, other_key in rows:
        conn.execute(sql.SQL(
            "DELETE FROM {s}.staged_chunks st USING {s}.staged_files sf WHERE st.partition_key = %(k)s "
            "AND sf.partition_key = %(k)s AND sf.source_name = %(src)s AND sf.rel_path = %(rel)s "
            "AND st.id = ANY(sf.row_ids)").format(s=s), {"k": key, "src": source_name, "rel": rel_path})
        conn.execute(sql.SQL(
            "UPDATE {}.staged_files SET outcome = 'deleted', documents = 0, row_ids = '{{}}' "
            "WHERE partition_key = %s AND source_name = %s AND rel_path = %s").format(s), (key, source_name, rel_path))
        out.append(Clash({
            "path": rel_path, "source_name": source_name, "doc_type": doc_type, "stage": "load",
            "reason": f"document path {doc_path!r} is already loaded from {other_file!r} (partition {other_key})",
            "hint": "rename one of the two files; the file loaded first keeps the row"}, int(chunks), int(documents)))
    return out
