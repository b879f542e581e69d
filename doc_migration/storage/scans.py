"""The source manifest's hand-off: which files each partition's latest scan found (``partition_files``)
and the scan's checksum (``partition_scans``), so every later stage, in any pod, sees the same list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import sql

from ..config import Settings
from ..faults import crash_point
from .database import connection

if TYPE_CHECKING:
    from ..pipeline.scan import PartitionScan


def record_scans(settings: Settings, url: str, scans: dict[str, PartitionScan], run_id: str) -> None:
    """Persist the scan so later stages (possibly in other pods) see the same file list."""
    schema = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        for key, s in scans.items():
            conn.execute(sql.SQL("DELETE FROM {}.partition_files WHERE partition_key = %s").format(schema), (key,))
            with conn.cursor().copy(sql.SQL(
                "COPY {}.partition_files (partition_key, source_name, rel_path, doc_type, fmt, size_bytes, sha256, "
                "refusal, run_id, stat_key) FROM STDIN").format(schema)) as copy:
                for item, digest in s.items:
                    copy.write_row((key, item.source_name, item.rel_path, item.doc_type, item.fmt, item.size,
                                    digest, item.refusal, run_id, item.stat_key))
            conn.execute(sql.SQL(
                "INSERT INTO {}.partition_scans (partition_key, checksum, files, bytes, run_id) VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (partition_key) DO UPDATE SET checksum = EXCLUDED.checksum, files = EXCLUDED.files, "
                "bytes = EXCLUDED.bytes, run_id = EXCLUDED.run_id, scanned_at = now()").format(schema),
                (key, s.checksum, s.files, s.bytes, run_id))
        conn.commit()
        crash_point("scan-after-commit")


def known_digests(settings: Settings, url: str, keys: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, path) -> (stat key, sha256) of the partitions' latest scans, for files whose key may be
    trusted: what the next scan need not read again."""
    schema = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(sql.SQL(
            "SELECT source_name, rel_path, stat_key, sha256 FROM {}.partition_files WHERE partition_key = ANY(%s) "
            "AND stat_key IS NOT NULL AND sha256 IS NOT NULL AND refusal IS NULL").format(schema), (keys,))}


def scanned_files(settings: Settings, url: str,
                  key: str) -> list[tuple[str, str, str, str, str | None, str | None]]:
    """(source_name, rel_path, doc_type, fmt, refusal, sha256) of the partition's latest scan, in a stable order."""
    schema = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(sql.SQL(
            "SELECT source_name, rel_path, doc_type, fmt, refusal, sha256 FROM {}.partition_files "
            "WHERE partition_key = %s ORDER BY source_name, rel_path").format(schema), (key,)).fetchall()]
