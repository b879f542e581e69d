"""Read-side of the pipeline's ledger: status and run summaries for the CLI, Dagster and reports."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..config import Settings
from ..embedding.pricing import estimate_cost
from . import maintenance
from .database import connection


def status(settings: Settings, url: str, keys: list[str] | None = None) -> dict[str, Any]:
    """What is loaded, per partition and in total. ``rows`` is exactly ``count(*)`` of documents."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        rows = conn.execute("SELECT count(*) FROM documents").fetchone()
        docs = conn.execute(sql.SQL(
            "SELECT count(*) FROM (SELECT DISTINCT doc_type, source_name, document_path FROM {}.partition_rows) x"
        ).format(s)).fetchone()
        per = conn.execute(sql.SQL(
            "SELECT ps.partition_key, ps.files, ps.documents, ps.chunks, ps.quarantined, ps.loaded_at, ps.run_id, "
            "  (SELECT count(*) FROM {s}.partition_rows pr WHERE pr.partition_key = ps.partition_key) "
            "FROM {s}.partition_state ps ORDER BY ps.partition_key").format(s=s)).fetchall()
        quarantined = conn.execute(sql.SQL(
            "SELECT rel_path, reason, doc_type, source_name, stage, hint, partition_key, format, detected_by "
            "FROM {}.quarantine ORDER BY doc_type, rel_path").format(s)).fetchall()
        seen = conn.execute(sql.SQL("SELECT count(*) FROM {}.partition_files").format(s)).fetchone()
        loaded_files = conn.execute(sql.SQL(
            "SELECT count(*) FROM (SELECT DISTINCT source_name, source_file FROM {}.partition_rows) x").format(s)
        ).fetchone()
        pending = conn.execute(sql.SQL("SELECT partition_key FROM {}.staged_partitions ORDER BY 1").format(s)).fetchall()
    partitions = {
        r[0]: {"files": r[1], "documents": r[2], "chunks": r[3], "rows": int(r[7]), "quarantined": r[4],
               "loaded_at": r[5].isoformat(), "run_id": r[6]}
        for r in per if keys is None or r[0] in keys
    }
    return {
        "documents_loaded": int(docs[0]) if docs else 0,
        "rows": int(rows[0]) if rows else 0,
        "quarantined": [{"path": q[0], "reason": q[1], "doc_type": q[2], "source_name": q[3], "stage": q[4],
                         "hint": q[5], "partition": q[6], "format": q[7], "detected_by": q[8]} for q in quarantined],
        "files": {"seen": int(seen[0]) if seen else 0, "loaded": int(loaded_files[0]) if loaded_files else 0,
                  "quarantined": len(quarantined)},
        "partitions_loaded": len(partitions),
        "partitions_pending": [p[0] for p in pending],
        "partitions": partitions,
    }


def reason_class(reason: str) -> str:
    """A refusal reason without its particulars ("binary file (PNG image): 'logo.png'" -> "binary
    file (PNG image)"), so refusals can be counted by kind."""
    return reason.split(": ", 1)[0].strip() or reason


def file_classifications(settings: Settings, url: str) -> dict[str, Any]:
    """Every file of the latest scans with the format it was read as, the evidence, and its outcome
    (``loaded`` with its row count, ``refused`` with the reason, or ``pending``: scanned, not loaded
    yet); and per format: files, loaded, refused by reason class."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        scanned = conn.execute(sql.SQL(
            "SELECT partition_key, source_name, rel_path, doc_type FROM {}.partition_files").format(s)).fetchall()
        loaded = conn.execute(sql.SQL(
            "SELECT pr.partition_key, pr.source_file, "
            "  coalesce(d.metadata->>'detected_format', d.metadata->>'format', 'unknown'), "
            "  coalesce(d.metadata->>'detected_by', ''), count(*) "
            "FROM {}.partition_rows pr JOIN documents d ON d.id = pr.document_id GROUP BY 1, 2, 3, 4").format(s)
        ).fetchall()
        refused = conn.execute(sql.SQL(
            "SELECT partition_key, rel_path, coalesce(format, 'unknown'), coalesce(detected_by, ''), reason, stage "
            "FROM {}.quarantine").format(s)).fetchall()
    outcome: dict[tuple[str, str], dict[str, Any]] = {}
    for key, rel, fmt, by, n in loaded:
        entry = outcome.setdefault((key, rel), {"format": fmt, "detected_by": by, "outcome": "loaded", "rows": 0})
        entry["rows"] += int(n)
    for key, rel, fmt, by, reason, stage in refused:
        if "#row" in rel:  # a skipped row of a dump whose other rows loaded: the file itself loaded
            continue
        outcome[(key, rel)] = {"format": fmt, "detected_by": by, "outcome": "refused", "reason": reason,
                               "stage": stage, "rows": 0}
    files: list[dict[str, Any]] = []
    formats: dict[str, dict[str, Any]] = {}
    for key, source_name, rel, doc_type in sorted(scanned, key=lambda r: (r[3], r[2], r[1])):
        entry = outcome.get((key, rel), {"format": "unknown", "detected_by": "", "outcome": "pending", "rows": 0})
        files.append({"path": rel, "doc_type": doc_type, "source_name": source_name, "partition": key, **entry})
        agg = formats.setdefault(entry["format"], {"files": 0, "loaded": 0, "refused": 0, "pending": 0, "rows": 0,
                                                   "refused_by_reason": {}})
        agg["files"] += 1
        agg["rows"] += entry["rows"]
        agg[entry["outcome"]] += 1
        if entry["outcome"] == "refused":
            kind = reason_class(entry["reason"])
            agg["refused_by_reason"][kind] = agg["refused_by_reason"].get(kind, 0) + 1
    return {"file_details": files, "formats": dict(sorted(formats.items(), key=lambda kv: (-kv[1]["files"], kv[0])))}


def run_summary(settings: Settings, url: str, run_ids: list[str], keys: list[str]) -> dict[str, Any]:
    """Totals of what the given runs did over the given partitions (unchanged ones included)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        loads = conn.execute(sql.SQL(
            "SELECT partition_key, documents, documents_written, chunks, rows_inserted, rows_updated, rows_deleted, "
            "quarantined, files, coalesce(files_parsed, files), coalesce(chunks_parsed, chunks) FROM {}.loads "
            "WHERE run_id = ANY(%s)").format(s), (run_ids,)).fetchall()
        states = conn.execute(sql.SQL(
            "SELECT partition_key, documents, run_id FROM {}.partition_state WHERE partition_key = ANY(%s)").format(s),
            (keys,)).fetchall()
        failures = conn.execute(sql.SQL(
            "SELECT partition_key, stage, error FROM {}.partition_failures WHERE run_id = ANY(%s) ORDER BY 1").format(s),
            (run_ids,)).fetchall()
        spend = conn.execute(sql.SQL(
            "SELECT coalesce(sum(inputs),0), coalesce(sum(cache_hits),0), coalesce(sum(tokens),0), "
            "coalesce(sum(requests),0), coalesce(sum(retries),0) FROM {}.embedding_spend WHERE run_id = ANY(%s)"
        ).format(s), (run_ids,)).fetchone()
        by_model = conn.execute(sql.SQL(
            "SELECT model, sum(tokens), sum(batch_tokens) FROM {}.embedding_spend WHERE run_id = ANY(%s) "
            "GROUP BY model").format(s),
            (run_ids,)).fetchall()
        quarantined = conn.execute(sql.SQL(
            "SELECT rel_path, reason, doc_type, stage, hint, format, detected_by FROM {}.quarantine "
            "WHERE partition_key = ANY(%s) ORDER BY doc_type, rel_path").format(s), (keys,)).fetchall()
    loaded_keys = {r[0] for r in loads}
    documents_loaded = sum(r[2] for r in loads)
    documents_unchanged = sum(r[1] - r[2] for r in loads) + sum(
        r[1] for r in states if r[0] not in loaded_keys)
    assert spend is not None
    return {
        "run_id": run_ids[0] if run_ids else None,
        "run_ids": run_ids,
        "partitions": len(keys),
        "partitions_loaded": len(loaded_keys),
        "documents_loaded": documents_loaded,
        "documents_unchanged": documents_unchanged,
        "quarantined": len(quarantined),
        "quarantined_files": [{"path": q[0], "reason": q[1], "doc_type": q[2], "stage": q[3], "hint": q[4],
                               "format": q[5], "detected_by": q[6]} for q in quarantined],
        "chunks": sum(r[3] for r in loads),
        # files of the loaded partitions, and how many of them were read and parsed (the others' rows were kept)
        "files": sum(r[8] for r in loads),
        "files_parsed": sum(r[9] for r in loads),
        "chunks_parsed": sum(r[10] for r in loads),
        "rows_written": sum(r[4] + r[5] + r[6] for r in loads),
        "rows_inserted": sum(r[4] for r in loads),
        "rows_updated": sum(r[5] for r in loads),
        "rows_deleted": sum(r[6] for r in loads),
        "chunks_embedded": int(spend[0]),
        "embedding_cache_hits": int(spend[1]),
        "tokens_sent": int(spend[2]),
        "embedding_requests": int(spend[3]),
        "embedding_retries": int(spend[4]),
        "estimated_dollars": sum(estimate_cost(int(t or 0), m, batch_tokens=int(b or 0)) for m, t, b in by_model),
        "batch_tokens": sum(int(b or 0) for _, _, b in by_model),
        "failed_partitions": sorted({f[0] for f in failures}),
        "failures": [{"partition": f[0], "stage": f[1], "error": f[2]} for f in failures],
    }


def record_failure(settings: Settings, url: str, run_id: str, key: str, stage: str, error: str) -> None:
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO {}.partition_failures (run_id, partition_key, stage, error) VALUES (%s,%s,%s,%s) "
            "ON CONFLICT DO NOTHING").format(s), (run_id, key, stage, error[:2000]))


def failed_partitions(settings: Settings, url: str, run_id: str) -> set[str]:
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {r[0] for r in conn.execute(sql.SQL(
            "SELECT partition_key FROM {}.partition_failures WHERE run_id = %s").format(s), (run_id,))}


def history(settings: Settings, url: str, limit: int = 200) -> list[dict[str, Any]]:
    """Loads, rollbacks, repair resets and prunes, newest first."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        loads = conn.execute(sql.SQL(
            "SELECT load_id, run_id, partition_key, checksum, files, documents, chunks, rows_inserted, rows_updated, "
            "rows_deleted, quarantined, started_at, committed_at, status, quarantine FROM {}.loads "
            "ORDER BY load_id DESC LIMIT %s").format(s), (limit,)).fetchall()
        rollbacks = conn.execute(sql.SQL(
            "SELECT rollback_id, load_id, partition_key, loaded_run_id, requested_by, rows_deleted, rows_restored, "
            "rolled_back_at FROM {}.rollbacks ORDER BY rollback_id DESC LIMIT %s").format(s), (limit,)).fetchall()
    events: list[dict[str, Any]] = [
        {"event": "load", "load_id": r[0], "run_id": r[1], "partition": r[2], "checksum": r[3], "files": r[4],
         "documents": r[5], "chunks": r[6], "rows_inserted": r[7], "rows_updated": r[8], "rows_deleted": r[9],
         "quarantined": r[10], "started_at": r[11].isoformat(), "at": r[12].isoformat(), "status": r[13],
         "quarantine": r[14]}
        for r in loads
    ] + [
        {"event": "rollback", "rollback_id": r[0], "load_id": r[1], "partition": r[2], "run_id": r[3],
         "requested_by": r[4], "rows_deleted": r[5], "rows_restored": r[6], "at": r[7].isoformat()}
        for r in rollbacks
    ]
    events += maintenance.events(settings, url, limit)
    events.sort(key=lambda e: e["at"], reverse=True)
    return events[:limit]


def owned_rows(settings: Settings, url: str, key: str) -> dict[tuple[str, str, str], bytes]:
    """The rows a partition owns: (doc_type, source_name, doc_path) -> sha256 of the content."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {(r[0], r[1], r[2]): bytes(r[3]) for r in conn.execute(sql.SQL(
            "SELECT doc_type, source_name, doc_path, text_sha FROM {}.partition_rows WHERE partition_key = %s")
            .format(s), (key,))}


def owned_row_counts(settings: Settings, url: str, keys: list[str]) -> dict[str, int]:
    """How many rows each of the partitions owns (absent: none)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {r[0]: int(r[1]) for r in conn.execute(sql.SQL(
            "SELECT partition_key, count(*) FROM {}.partition_rows WHERE partition_key = ANY(%s) GROUP BY 1")
            .format(s), (keys,))}


def run_loaded_partitions(settings: Settings, url: str, run_id: str) -> list[str]:
    """Partitions a run committed a load for (in key order)."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return [r[0] for r in conn.execute(sql.SQL(
            "SELECT DISTINCT partition_key FROM {}.loads WHERE run_id = %s AND status = 'committed' ORDER BY 1"
        ).format(s), (run_id,))]


def loaded_checksums(settings: Settings, url: str, keys: list[str]) -> dict[str, str]:
    """Checksum each partition was loaded with (absent: never loaded), for change detection without a run."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        return {r[0]: r[1] for r in conn.execute(sql.SQL(
            "SELECT partition_key, checksum FROM {}.partition_state WHERE partition_key = ANY(%s)").format(s),
            (keys,))}


def partition_facts(settings: Settings, url: str, run_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Per partition: what it holds now (rows, documents, chunks, files) and what ``run_id`` spent on it
    (tokens, dollars), so each partition's Dagster materialization carries its own numbers."""
    s = sql.Identifier(settings.pipeline_schema)
    with connection(url) as conn:
        states = conn.execute(sql.SQL(
            "SELECT partition_key, files, documents, chunks, quarantined FROM {}.partition_state "
            "WHERE partition_key = ANY(%s)").format(s), (keys,)).fetchall()
        rows: dict[str, int] = dict(conn.execute(sql.SQL(
            "SELECT partition_key, count(*) FROM {}.partition_rows WHERE partition_key = ANY(%s) GROUP BY 1"
        ).format(s), (keys,)).fetchall())
        spend = conn.execute(sql.SQL(
            "SELECT partition_key, model, tokens, inputs, requests, batch_tokens FROM {}.embedding_spend "
            "WHERE run_id = %s AND partition_key = ANY(%s)").format(s), (run_id, keys)).fetchall()
    facts: dict[str, dict[str, Any]] = {k: {"rows": int(rows.get(k, 0)), "documents": 0, "chunks": 0, "files": 0,
                                            "quarantined": 0, "tokens": 0, "dollars": 0.0, "embedded": 0,
                                            "requests": 0} for k in keys}
    for key, files, documents, chunks, quarantined in states:
        facts[key].update(files=int(files), documents=int(documents), chunks=int(chunks),
                          quarantined=int(quarantined))
    for key, model, tokens, inputs, requests, batch_tokens in spend:
        f = facts[key]
        f["tokens"] += int(tokens or 0)
        f["embedded"] += int(inputs or 0)
        f["requests"] += int(requests or 0)
        f["dollars"] += estimate_cost(int(tokens or 0), model, batch_tokens=int(batch_tokens or 0))
    return facts
