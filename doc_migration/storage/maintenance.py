"""Ledger changes that are neither loads nor rollbacks: partitions a repair reset (and whether they have
been reloaded since), and rows of sources the current manifest does not produce ("foreign" rows) and
their pruning. Every statement on the ``maintenance`` table lives here."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..config import Settings
from .audit import managed_source
from .database import connection
from .file_state import forget_partition
from .locks import lock_partition_xact

# ----------------------------------------------------------------------------- resets (validate --repair)


def record_reset(conn: psycopg.Connection, schema: sql.Identifier, key: str, rows_deleted: int, reason: str,
                 requested_by: str) -> None:
    """In the reset's own transaction: the partition awaits a reload from now on."""
    conn.execute(sql.SQL(
        "INSERT INTO {}.maintenance (event, partition_key, rows_deleted, reason, requested_by) "
        "VALUES ('reset', %s, %s, %s, %s)").format(schema), (key, rows_deleted, reason, requested_by))


def mark_reloaded(conn: psycopg.Connection, schema: sql.Identifier, key: str) -> None:
    """In a load's transaction: the partition no longer awaits the reload a repair asked for."""
    conn.execute(sql.SQL(
        "UPDATE {}.maintenance SET reloaded_at = now() WHERE partition_key = %s AND event = 'reset' "
        "AND reloaded_at IS NULL").format(schema), (key,))


def pending_reloads(settings: Settings, url: str) -> list[dict[str, Any]]:
    """Partitions a repair reset that no load has rebuilt yet (a repair interrupted half way)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT partition_key, min(at), sum(rows_deleted), string_agg(DISTINCT reason, '; ') "
            "FROM {}.maintenance WHERE event = 'reset' AND reloaded_at IS NULL GROUP BY 1 ORDER BY 1").format(s)
        ).fetchall()
    return [{"partition": r[0], "reset_at": r[1].isoformat(), "rows_deleted": int(r[2]), "reason": r[3]}
            for r in rows]


def events(settings: Settings, url: str, limit: int) -> list[dict[str, Any]]:
    """Resets and prunes for ``doc-migrate history``, newest first."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT event_id, event, partition_key, source_name, rows_deleted, reason, requested_by, manifest, at, "
            "reloaded_at FROM {}.maintenance ORDER BY event_id DESC LIMIT %s").format(s), (limit,)).fetchall()
    return [{"event": r[1], "event_id": r[0], "partition": r[2], "source_name": r[3], "rows_deleted": r[4],
             "reason": r[5], "requested_by": r[6], "manifest": r[7], "at": r[8].isoformat(),
             **({"reloaded_at": r[9].isoformat() if r[9] else None} if r[1] == "reset" else {})} for r in rows]


def recount_partition_state(conn: psycopg.Connection, schema: sql.Identifier, key: str) -> None:
    """After rows left a partition outside a load (prune, repair's duplicate drop): its ledger state counts
    what it still owns, so rows_match_ledger holds."""
    conn.execute(sql.SQL(
        "UPDATE {s}.partition_state ps SET chunks = o.chunks, documents = o.docs, "
        "quarantined = (SELECT count(*) FROM {s}.quarantine q WHERE q.partition_key = ps.partition_key) "
        "FROM (SELECT count(*) AS chunks, count(DISTINCT (doc_type, source_name, document_path)) AS docs "
        "  FROM {s}.partition_rows WHERE partition_key = %s) o WHERE ps.partition_key = %s").format(s=schema),
        (key, key))


# ----------------------------------------------------------------------------- foreign rows


@dataclass(frozen=True)
class ForeignRows:
    """Rows of one source in one partition that the current manifest does not produce."""

    partition: str
    doc_type: str
    source_name: str
    rows: int
    documents: int
    loaded_by: str | None  # the manifest whose load wrote them, when the ledger knows it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def foreign_rows(settings: Settings, url: str, expected: dict[str, set[str]], manifest_path: str) -> list[ForeignRows]:
    """Rows owned by the partitions in ``expected`` (key -> source names the manifest writes there)
    whose source is none of them. A source the manifest's own latest load of the partition recorded
    (doc-server records may name their source) is expected too."""
    s = sql.Identifier(settings.pipeline_schema)
    keys = sorted(expected)
    with connection(url) as conn:
        groups = conn.execute(sql.SQL(
            "SELECT partition_key, doc_type, source_name, count(*), "
            "  count(DISTINCT (doc_type, source_name, document_path)) "
            "FROM {}.partition_rows WHERE partition_key = ANY(%s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").format(s),
            (keys,)).fetchall()
        loads = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (partition_key, src) partition_key, src, manifest FROM "
            "  (SELECT partition_key, unnest(sources) AS src, manifest, load_id FROM {}.loads "
            "   WHERE status = 'committed' AND partition_key = ANY(%s)) x "
            "ORDER BY partition_key, src, load_id DESC").format(s), (keys,)).fetchall()
    loaded_by = {(k, src): m for k, src, m in loads}
    found = []
    for key, doc_type, source, rows, documents in groups:
        if source in expected.get(key, set()):
            continue
        by = loaded_by.get((key, source))
        if by == manifest_path:  # this manifest's own load recorded the source (from its records)
            continue
        found.append(ForeignRows(key, doc_type, source, int(rows), int(documents), by))
    return found


def describe_foreign(found: list[ForeignRows], prune_command: str) -> str:
    """One sentence with the fix, for `full`, `status`, `plan` and `validate`."""
    rows = sum(f.rows for f in found)
    partitions = sorted({f.partition for f in found})
    first = found[0]
    origin = f", loaded by {first.loaded_by}" if first.loaded_by else ""
    return (f"{rows} row(s) in {len(partitions)} partition(s) come from sources this manifest does not produce "
            f"(e.g. {first.partition}: {first.rows} row(s) of source {first.source_name}{origin}); they would fail "
            f"the blocking check rows_match_ledger: run `{prune_command}` to delete them, or go on with the "
            "manifest that loaded them")


def prune_foreign(settings: Settings, url: str, found: list[ForeignRows], requested_by: str,
                  manifest_path: str) -> list[dict[str, Any]]:
    """Delete the given foreign rows from ``documents`` and the ledger, one transaction per partition under
    its writer lock, and recount the partition's ledger state so that it matches what it still owns."""
    s = sql.Identifier(settings.pipeline_schema)
    by_partition: dict[str, list[ForeignRows]] = defaultdict(list)
    for f in found:
        by_partition[f.partition].append(f)
    done: list[dict[str, Any]] = []
    for key, groups in sorted(by_partition.items()):
        sources = sorted({g.source_name for g in groups})
        with connection(url) as conn:
            lock_partition_xact(conn, key)
            for source in sources:
                deleted = conn.execute(sql.SQL(
                    "DELETE FROM documents d USING {s}.partition_rows pr WHERE pr.partition_key = %s "
                    "AND pr.source_name = %s AND d.id = pr.document_id").format(s=s), (key, source)).rowcount
                owned = conn.execute(sql.SQL(
                    "DELETE FROM {}.partition_rows WHERE partition_key = %s AND source_name = %s").format(s),
                    (key, source)).rowcount
                conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE partition_key = %s AND source_name = %s")
                             .format(s), (key, source))
                conn.execute(sql.SQL(
                    "INSERT INTO {}.maintenance (event, partition_key, source_name, rows_deleted, reason, requested_by, "
                    "manifest) VALUES ('prune', %s, %s, %s, %s, %s, %s)").format(s),
                    (key, source, owned, "source not produced by the manifest", requested_by, manifest_path))
                done.append({"partition": key, "source_name": source, "rows_deleted": int(deleted),
                             "ledger_rows_deleted": int(owned)})
            recount_partition_state(conn, s, key)
            forget_partition(conn, s, key)
            conn.commit()
    return done


def reset_partition(settings: Settings, url: str, key: str, purge_ids: list[str], reason: str = "",
                    requested_by: str = "") -> dict[str, int]:
    """Delete one partition's rows, ownership, staging and state in one transaction (``full`` reloads it);
    the same transaction records that the partition awaits its reload (``maintenance``), so a repair that
    dies before reloading leaves the ledger saying what is left to do."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        lock_partition_xact(conn, key)
        # Cached vectors that are broken, or that belong to rows retrieval found misplaced, are re-embedded.
        purged = conn.execute(sql.SQL(
            "DELETE FROM {s}.embedding_cache c USING {s}.partition_rows pr WHERE pr.partition_key = %s "
            "AND c.model = %s AND c.dims = %s AND c.text_sha = pr.text_sha "
            "AND (pr.document_id::text = ANY(%s) OR vector_dims(c.embedding) <> %s "
            "  OR NOT (vector_norm(c.embedding) > 0 AND vector_norm(c.embedding) < 'Infinity'::float8))"
        ).format(s=s), (key, settings.model_name, settings.embedding_dims, purge_ids,
                        settings.embedding_dims)).rowcount
        deleted = conn.execute(sql.SQL(
            "DELETE FROM documents d USING {s}.partition_rows pr WHERE pr.partition_key = %s "
            "AND d.id = pr.document_id").format(s=s), (key,)).rowcount
        owned = conn.execute(sql.SQL("DELETE FROM {}.partition_rows WHERE partition_key = %s").format(s),
                             (key,)).rowcount
        for table in ("file_state", "staged_chunks", "staged_files", "staged_partitions", "partition_state"):
            conn.execute(sql.SQL("DELETE FROM {}.{} WHERE partition_key = %s").format(s, sql.Identifier(table)), (key,))
        record_reset(conn, s, key, deleted, reason, requested_by)
        conn.commit()
    return {"rows_deleted": deleted, "ownership_deleted": owned, "cache_purged": purged}


def delete_orphans(settings: Settings, url: str) -> int:
    """Delete rows no partition owns, but only of sources this pipeline manages (never the doc-server's)."""
    s = sql.Identifier(settings.pipeline_schema)
    managed = managed_source(s)  # a sql.Composed (audit.py)
    with connection(url) as conn:
        n = conn.execute(sql.SQL(
            "DELETE FROM documents d WHERE NOT EXISTS (SELECT 1 FROM {s}.partition_rows pr WHERE pr.document_id = d.id) "
            "AND {managed}").format(s=s, managed=managed)).rowcount
        conn.commit()
    return int(n)


def drop_rows(settings: Settings, url: str, by_part: dict[str, dict[str, tuple[str, str, str, str]]],
              run_id: str) -> tuple[int, int]:
    """Delete the given rows (per partition: id -> (source_name, source_file, doc_type, canonical file))
    and their ownership, one transaction per partition under its lock; a file left without rows is
    quarantined (stage ``validate``, naming its canonical copy). Returns (rows, files quarantined)."""
    s = sql.Identifier(settings.pipeline_schema)
    rows = files = 0
    for key, victims in sorted(by_part.items()):
        ids = list(victims)
        with connection(url) as conn:
            lock_partition_xact(conn, key)
            rows += conn.execute(sql.SQL(
                "DELETE FROM documents d USING {s}.partition_rows pr WHERE pr.partition_key = %s "
                "AND pr.document_id = d.id AND d.id::text = ANY(%s)").format(s=s), (key, ids)).rowcount
            conn.execute(sql.SQL("DELETE FROM {}.partition_rows WHERE partition_key = %s AND document_id::text = ANY(%s)"
                                 ).format(s), (key, ids))
            for source_name, source_file, doc_type, canonical_file in sorted(set(victims.values())):
                left = conn.execute(sql.SQL(
                    "SELECT 1 FROM {}.partition_rows WHERE partition_key = %s AND source_name = %s "
                    "AND source_file = %s LIMIT 1").format(s), (key, source_name, source_file)).fetchone()
                if left is None:
                    files += conn.execute(sql.SQL(
                        "INSERT INTO {}.quarantine (partition_key, source_name, rel_path, doc_type, stage, reason, hint, "
                        "run_id) VALUES (%s,%s,%s,%s,'validate',%s,%s,%s) ON CONFLICT DO NOTHING").format(s),
                        (key, source_name, source_file, doc_type,
                         f"duplicate of {canonical_file}: rows dropped by validate --repair (strategy drop)",
                         "remove the copy from the sources, or set validation.duplicates.strategy: keep_all",
                         run_id)).rowcount
            recount_partition_state(conn, s, key)
            forget_partition(conn, s, key)
            conn.commit()
    return rows, files
