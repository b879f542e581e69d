"""The parsed-docs hand-off: one staged version per partition (``staged_partitions``) and its chunks
(``staged_chunks``), written by the parse stage in one transaction and consumed by embed and load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import Settings
from ..faults import crash_point
from .database import connect, connection
from .file_state import StagedFile, write_staged_files

# A staged row, as the parse stage writes it: (id, doc_type, source_name, doc_path, source_file,
# document_path, content, metadata, text_sha, token_count, carried_embedding).
_COPY_TYPES = ["text", "uuid", "text", "text", "text", "text", "text", "text", "jsonb", "bytea", "int4", "vector"]


@dataclass(frozen=True)
class Checksums:
    """A partition's checksum as scanned, as loaded (its checkpoint) and as staged; None: absent.
    ``staged_current``: the staged version still applies (a full one, or an incremental one computed
    against the partition's latest load)."""

    scanned: str | None
    loaded: str | None
    staged: str | None
    staged_current: bool = True


def checksums(settings: Settings, url: str, key: str) -> Checksums:
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        row = conn.execute(sql.SQL(
            "SELECT (SELECT checksum FROM {s}.partition_scans WHERE partition_key = %(k)s), "
            "       (SELECT checksum FROM {s}.partition_state WHERE partition_key = %(k)s), "
            "       (SELECT checksum FROM {s}.staged_partitions WHERE partition_key = %(k)s), "
            "       (SELECT sp.base_load_id IS NULL OR sp.base_load_id IS NOT DISTINCT FROM ("
            "          SELECT load_id FROM {s}.partition_state WHERE partition_key = %(k)s) "
            "        FROM {s}.staged_partitions sp WHERE sp.partition_key = %(k)s)").format(s=s),
            {"k": key}).fetchone()
    assert row is not None
    return Checksums(row[0], row[1], row[2], bool(row[3]) if row[3] is not None else True)


def staged_counts(conn: psycopg.Connection, settings: Settings, key: str) -> tuple[int, int]:
    """(chunks, chunks carrying their own vector) of the partition's staged version."""
    row = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE carried_embedding IS NOT NULL) FROM {}.staged_chunks "
        "WHERE partition_key = %s").format(sql.Identifier(settings.pipeline_schema)), (key,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class StagedWriter:
    """Replaces a partition's staged version in one transaction: chunks stream in through binary
    COPY, :meth:`finish` records the version and commits. Leaving the block without ``finish``
    (an error, a stop) rolls back: the previous staged version, if any, stays."""

    def __init__(self, settings: Settings, url: str, key: str) -> None:
        self._schema = sql.Identifier(settings.pipeline_schema)
        self._url = url
        self._key = key
        self._conn: psycopg.Connection | None = None
        self._copy_cm: Any = None
        self._copy: Any = None

    def __enter__(self) -> StagedWriter:
        s = self._schema
        self._conn = connect(self._url)
        self._conn.execute(sql.SQL("DELETE FROM {}.staged_chunks WHERE partition_key = %s").format(s), (self._key,))
        for table in ("staged_files", "staged_partitions"):
            self._conn.execute(sql.SQL("DELETE FROM {}.{} WHERE partition_key = %s").format(s, sql.Identifier(table)),
                               (self._key,))
        self._copy_cm = self._conn.cursor().copy(sql.SQL(
            "COPY {}.staged_chunks (partition_key, id, doc_type, source_name, doc_path, source_file, document_path, "
            "content, metadata, text_sha, token_count, carried_embedding) FROM STDIN WITH (FORMAT BINARY)"
        ).format(s))
        self._copy = self._copy_cm.__enter__()
        self._copy.set_types(_COPY_TYPES)
        return self

    def write_chunk(self, row: tuple[Any, ...]) -> None:
        """``row``: the columns above, in order (metadata a dict)."""
        self._copy.write_row((self._key, *row[:7], Jsonb(row[7]), *row[8:]))

    def finish(self, checksum: str, run_id: str, files: int, documents: int, chunks: int,
               quarantine: list[dict[str, str]], sources: list[str], staged_files: list[StagedFile],
               base_load_id: int | None, files_parsed: int) -> None:
        """``base_load_id``: the load an incremental version was computed against (None: a full version)."""
        assert self._conn is not None
        self._copy_cm.__exit__(None, None, None)
        self._copy_cm = None
        write_staged_files(self._conn, self._schema, self._key, staged_files)
        self._conn.execute(sql.SQL(
            "INSERT INTO {}.staged_partitions (partition_key, checksum, run_id, files, documents, chunks, quarantine, "
            "sources, base_load_id, files_parsed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)").format(self._schema),
            (self._key, checksum, run_id, files, documents, chunks, json.dumps(quarantine, ensure_ascii=False),
             sources, base_load_id, files_parsed))
        crash_point("parse-before-commit")
        self._conn.commit()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._copy_cm is not None:
                self._copy_cm.__exit__(exc_type, exc, tb)
        finally:
            if self._conn is not None:
                self._conn.close()  # without a commit: rolled back
