"""Checks of loaded partitions against the ledger, shared by asset checks, the report and the CLI."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..config import Settings
from ..storage import ledger
from ..storage.database import connection


def check_counts(settings: Settings, url: str, keys: list[str]) -> dict[str, Any]:
    """Each loaded partition owns exactly the rows its ledger says, and each of them exists."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT ps.partition_key, ps.chunks, count(pr.document_id), count(d.id) "
            "FROM {s}.partition_state ps LEFT JOIN {s}.partition_rows pr ON pr.partition_key = ps.partition_key "
            "LEFT JOIN documents d ON d.id = pr.document_id WHERE ps.partition_key = ANY(%s) "
            "GROUP BY ps.partition_key, ps.chunks ORDER BY 1").format(s=s), (keys,)).fetchall()
    bad = [{"partition": r[0], "expected_rows": r[1], "ledger_rows": r[2], "rows_in_documents": r[3]}
           for r in rows if not (r[1] == r[2] == r[3])]
    return {"passed": not bad, "partitions_checked": len(rows), "mismatches": bad}


def check_embeddings(settings: Settings, url: str, keys: list[str]) -> dict[str, Any]:
    """No NULL, wrong-dimension, non-finite or zero vectors among the partitions' rows."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        bad = conn.execute(sql.SQL(
            "SELECT d.doc_type, d.source_name, d.doc_path, CASE "
            "  WHEN d.embedding IS NULL THEN 'NULL embedding' "
            "  WHEN vector_dims(d.embedding) <> %s THEN 'dimension ' || vector_dims(d.embedding) "
            "  WHEN 'NaN'::float8 = vector_norm(d.embedding) OR vector_norm(d.embedding) = 'Infinity'::float8 "
            "    THEN 'non-finite values' "
            "  WHEN vector_norm(d.embedding) = 0 THEN 'zero vector' END AS problem "
            "FROM {s}.partition_rows pr JOIN documents d ON d.id = pr.document_id "
            "WHERE pr.partition_key = ANY(%s) AND (d.embedding IS NULL OR vector_dims(d.embedding) <> %s "
            "  OR NOT (vector_norm(d.embedding) > 0 AND vector_norm(d.embedding) < 'Infinity'::float8)) LIMIT 100"
        ).format(s=s), (settings.embedding_dims, keys, settings.embedding_dims)).fetchall()
    return {"passed": not bad, "problems": [{"doc_type": b[0], "source_name": b[1], "doc_path": b[2],
                                            "problem": b[3]} for b in bad]}


def check_orphans(settings: Settings, url: str) -> dict[str, Any]:
    """Rows in documents that no partition of the pipeline owns (advisory: the doc-server may add its own)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT d.doc_type, d.source_name, d.doc_path FROM documents d WHERE NOT EXISTS ("
            "SELECT 1 FROM {}.partition_rows pr WHERE pr.document_id = d.id) ORDER BY 1, 2, 3 LIMIT 100"
        ).format(s)).fetchall()
    return {"passed": not rows, "orphans": [{"doc_type": r[0], "source_name": r[1], "doc_path": r[2]} for r in rows]}


def build_report(settings: Settings, url: str, keys: list[str], run_id: str | None) -> dict[str, Any]:
    checks = {
        "counts": check_counts(settings, url, keys),
        "embeddings": check_embeddings(settings, url, keys),
        "orphans": check_orphans(settings, url),
    }
    errors = [name for name in ("counts", "embeddings") if not checks[name]["passed"]]
    warnings = [name for name in ("orphans",) if not checks[name]["passed"]]
    st = ledger.status(settings, url, keys)
    return {
        "run_id": run_id,
        "passed": not errors,
        "errors": errors,
        "warnings": warnings,
        "checks": checks,
        "totals": {"rows": st["rows"], "documents_loaded": st["documents_loaded"], "files": st["files"],
                   "quarantined": len(st["quarantined"])},
        "quarantined": st["quarantined"],
    }
