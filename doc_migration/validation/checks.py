"""Set-based checks run in SQL over every row: ledger counts, content checksums, vectors, orphans, drift.

These scan all rows of the given partitions (no sampling): they are aggregates the server computes
without shipping content or vectors to Python, so they stay cheap enough for every migration.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..config import Settings
from ..manifest import Manifest, discover, file_stat_key
from ..storage import audit, scans
from .common import ERROR, WARN, check_result, plural, sha256_file, source_roots
from .config import BASE_REQUIRED, ValidationConfig

BASE_FIELDS = tuple(BASE_REQUIRED)

MISSING_ROWS_PER_PARTITION = 10


def check_counts(settings: Settings, url: str, keys: list[str], config: ValidationConfig | None = None,
                 *, require_loaded: bool = True) -> dict[str, Any]:
    """Each partition holds exactly the rows and documents its ledger records, and every scanned file is
    either loaded or quarantined: proves nothing was lost or added between the ledger and ``documents``."""
    cfg = config or ValidationConfig()
    rows, missing, quarantined = audit.ledger_counts(settings, url, keys, MISSING_ROWS_PER_PARTITION)
    missing_by: dict[str, list[dict[str, str]]] = defaultdict(list)
    for m in missing:
        missing_by[m[0]].append({"doc_type": m[1], "source_name": m[2], "doc_path": m[3], "source_file": m[4]})

    findings: list[dict[str, Any]] = []
    loaded = 0
    for key, has_state, documents, chunks, _files, owned, present, docs, files_loaded, scan_current, scanned, quar in rows:
        if not has_state:
            if require_loaded:
                findings.append({"partition": key, "problem": "partition has never been loaded",
                                 "expected_rows": None, "rows_in_documents": present})
            continue
        loaded += 1
        problems: list[str] = []
        if present != owned:
            problems.append(f"{owned - present} of {owned} owned rows missing from documents")
        if chunks != owned:
            problems.append(f"ledger records {chunks} rows, the partition owns {owned}")
        if documents != docs:
            problems.append(f"ledger records {documents} documents, {docs} present")
        if scan_current and scanned - quar != files_loaded:
            problems.append(f"{scanned} files scanned - {quar} quarantined = {scanned - quar}, "
                            f"but {files_loaded} files have rows")
        if problems:
            findings.append({"partition": key, "problem": "; ".join(problems), "expected_rows": chunks,
                             "ledger_rows": owned, "rows_in_documents": present, "expected_documents": documents,
                             "documents_present": docs, "files_scanned": scanned, "files_quarantined": quar,
                             "files_loaded": files_loaded, "missing_rows": missing_by.get(key, [])})
    bad = [f["partition"] for f in findings]
    never = [f["partition"] for f in findings if f["problem"] == "partition has never been loaded"]
    broken = [f for f in findings if f["problem"] != "partition has never been loaded"]
    if broken:
        first = broken[0]
        message = (f"ledger mismatch in {plural(len(broken), 'partition')} ({first['partition']}: "
                   f"{first['problem']}): run `doc-migrate validate --repair` to reload "
                   f"{', '.join(f['partition'] for f in broken[:5])}{'…' if len(broken) > 5 else ''}"
                   + (f"; {plural(len(never), 'partition')} never loaded" if never else ""))
    elif never:
        message = (f"{plural(len(never), 'partition')} never loaded: run `doc-migrate full --partition {never[0]}`"
                   f"{' (and the others)' if len(never) > 1 else ''} or `doc-migrate full`")
    else:
        message = (f"{plural(loaded, 'partition')}: every ledger row is in documents, every scanned file is "
                   f"loaded or quarantined ({len(quarantined)} quarantined)")
    result = check_result("counts", passed=not findings, severity=ERROR, message=message, findings=findings,
                          cap=cfg.max_findings, partitions=bad, partitions_checked=loaded,
                          never_loaded=never)
    result["quarantined"] = [{"partition": q[0], "doc_type": q[1], "path": q[2], "stage": q[3], "reason": q[4]}
                             for q in quarantined[: cfg.max_findings]]
    result["total_quarantined"] = len(quarantined)
    result["mismatches"] = result["findings"]  # name kept from the first version of this check
    return result


def check_checksums(settings: Settings, url: str, keys: list[str],
                    config: ValidationConfig | None = None) -> dict[str, Any]:
    """sha256(content) of every row equals the hash recorded when it was loaded: proves no row was
    truncated, re-encoded or edited behind the pipeline's back."""
    cfg = config or ValidationConfig()
    checked, bad = audit.checksum_mismatches(settings, url, keys)
    findings = [{"partition": b[0], "doc_type": b[1], "source_name": b[2], "doc_path": b[3], "source_file": b[4],
                 "content_chars": b[5], "expected_sha256": b[6], "actual_sha256": b[7]} for b in bad]
    parts = sorted({f["partition"] for f in findings})
    if findings:
        message = (f"{plural(len(findings), 'row')} changed since load (e.g. {findings[0]['doc_type']}/"
                   f"{findings[0]['doc_path']}): run `doc-migrate validate --repair` to reload "
                   f"{', '.join(parts[:5])}{'…' if len(parts) > 5 else ''}")
    else:
        message = f"{plural(checked, 'row')}: content matches the sha256 recorded at load"
    return check_result("checksums", passed=not findings, severity=ERROR, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=parts, rows_checked=checked)


def _current_sha256(path: Path, recorded: tuple[str, str] | None) -> str | None:
    """The file's sha256: the latest scan's when its stat key is unchanged since (see scan), else read."""
    if recorded is not None:
        try:
            if file_stat_key(os.stat(path)) == recorded[0]:
                return recorded[1]
        except OSError:
            return None
    return sha256_file(path)


def check_source_drift(settings: Settings, url: str, keys: list[str], manifest: Manifest | None,
                       config: ValidationConfig | None = None) -> dict[str, Any]:
    """Re-hash the migrated source files on disk and compare with the sha256 stored in their rows: proves
    the database still reflects the sources (a WARN: the next ``full`` run picks the changes up)."""
    cfg = config or ValidationConfig()
    roots = source_roots(manifest)
    loaded, scanned = audit.loaded_source_hashes(settings, url, keys)
    known = scans.known_digests(settings, url, keys)
    findings: list[dict[str, Any]] = []
    hashed = 0
    seen: set[tuple[str, str]] = set()
    for key, doc_type, source_name, source_file, recorded in loaded:
        root = roots.get((source_name, doc_type))
        if root is None:  # a legacy database source or a source no longer in the manifest
            continue
        seen.add((source_name, source_file))
        recorded = [r for r in recorded if r]
        current = _current_sha256(root / source_file, known.get((source_name, source_file)))
        hashed += 1
        base = {"partition": key, "doc_type": doc_type, "source_name": source_name, "path": source_file}
        if current is None:
            findings.append({**base, "problem": "deleted from disk (its rows are still served)"})
        elif not recorded:
            findings.append({**base, "problem": "rows carry no source_sha256"})
        elif current not in recorded or len(recorded) > 1:
            findings.append({**base, "problem": "changed on disk since it was migrated",
                             "recorded_sha256": recorded[0], "current_sha256": current})
    seen.update((r[1], r[2]) for r in scanned)
    new_files = 0
    if manifest is not None:
        for item in discover(manifest, set(keys)):
            if (item.source_name, item.rel_path) not in seen and item.refusal is None:
                new_files += 1
                findings.append({"partition": item.partition, "doc_type": item.doc_type,
                                 "source_name": item.source_name, "path": item.rel_path,
                                 "problem": "new file on disk, not migrated yet"})
    parts = sorted({f["partition"] for f in findings})
    if findings:
        message = (f"{plural(len(findings), 'source file')} drifted from the database (e.g. {findings[0]['path']}: "
                   f"{findings[0]['problem']}): run `doc-migrate full` to pick the changes up")
    else:
        message = f"{plural(hashed, 'source file')} re-hashed: all match the sha256 recorded in their rows"
    return check_result("source_drift", passed=not findings, severity=WARN, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=parts, files_hashed=hashed, new_files=new_files)


def check_embeddings(settings: Settings, url: str, keys: list[str],
                     config: ValidationConfig | None = None, written_by: str | None = None) -> dict[str, Any]:
    """No NULL, wrong-dimension, non-finite or zero vectors among the partitions' rows (those run
    ``written_by`` wrote, when given): every row can be found by a vector search (pgvector rejects
    NaN/Inf on input; the check also holds for altered columns)."""
    cfg = config or ValidationConfig()
    dims = settings.embedding_dims
    bad = audit.vector_problems(settings, url, keys, dims, written_by)
    findings = [{"partition": b[0], "doc_type": b[1], "source_name": b[2], "doc_path": b[3], "problem": b[4]}
                for b in bad]
    parts = sorted({f["partition"] for f in findings})
    if findings:
        message = (f"{plural(len(findings), 'row')} cannot be searched ({findings[0]['doc_path']}: "
                   f"{findings[0]['problem']}): run `doc-migrate validate --repair` to re-embed "
                   f"{', '.join(parts[:5])}{'…' if len(parts) > 5 else ''}")
    else:
        message = (f"every vector {'this run wrote ' if written_by else ''}has {dims} finite dimensions "
                   "and a non-zero norm")
    result = check_result("embeddings", passed=not findings, severity=ERROR, message=message, findings=findings,
                          cap=cfg.max_findings, partitions=parts, dims=dims)
    result["problems"] = result["findings"]  # name kept from the first version of this check
    return result


def check_orphans(settings: Settings, url: str, config: ValidationConfig | None = None) -> dict[str, Any]:
    """Rows in documents no partition owns: stale copies the pipeline will never update or delete. Only
    orphans of sources this pipeline manages are repaired; others may be the doc-server's own rows."""
    cfg = config or ValidationConfig()
    total, managed, rows = audit.orphan_rows(settings, url, cfg.max_findings)
    findings = [{"id": r[0], "doc_type": r[1], "source_name": r[2], "doc_path": r[3], "created_at": r[4].isoformat(),
                 "managed_source": bool(r[5])} for r in rows]
    if total:
        message = (f"no partition owns {plural(total, 'row')} in documents ({managed} of managed sources, "
                   f"e.g. {findings[0]['doc_type']}/{findings[0]['doc_path']}): "
                   + ("run `doc-migrate validate --repair` to delete the managed ones" if managed
                      else "they are not the pipeline's; delete them by hand if they are stale"))
    else:
        message = "every row in documents is owned by a partition"
    result = check_result("orphans", passed=not total, severity=cfg.orphans_severity, message=message,
                          findings=findings, cap=cfg.max_findings, orphans_managed=managed)
    result["total_findings"] = total
    result["truncated"] = total > len(result["findings"])
    result["orphans"] = result["findings"]  # name kept from the first version of this check
    return result


def check_rolled_back(settings: Settings, url: str, keys: list[str],
                      config: ValidationConfig | None = None) -> dict[str, Any]:
    """Partitions left rolled back serve their previous version: a WARN until they are loaded again."""
    cfg = config or ValidationConfig()
    wanted = set(keys)
    parts = [k for k in audit.rolled_back_partitions(settings, url) if k in wanted]
    findings = [{"partition": k, "problem": "latest load rolled back"} for k in parts]
    message = (f"{plural(len(parts), 'partition')} rolled back ({', '.join(parts[:5])}): run `doc-migrate full "
               f"--partition {parts[0]}` to load the current sources again" if parts
               else "no partition is left rolled back")
    return check_result("rolled_back", passed=not parts, severity=WARN, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=[])


def check_staged_chunks(settings: Settings, url: str, keys: list[str] | None = None,
                        config: ValidationConfig | None = None) -> dict[str, Any]:
    """Staged chunks (parsed, not yet loaded) are loadable: non-blank text, 1..max_tokens tokens, the
    metadata every row needs, a text hash that matches: catches a parser or chunker bug before any
    embedding is paid for."""
    cfg = config or ValidationConfig()
    staged, rows, n = audit.staged_chunk_problems(settings, url, keys, cfg.max_tokens, BASE_FIELDS)
    findings = [{"partition": r[0], "doc_type": r[1], "source_name": r[2], "doc_path": r[3], "problem": r[4]}
                for r in rows]
    parts = sorted({f["partition"] for f in findings})
    message = (f"{plural(len(findings), 'staged chunk')} cannot be loaded (e.g. {findings[0]['doc_path']}: "
               f"{findings[0]['problem']}): fix the parser or the file, then re-run the partitions" if findings
               else f"all {plural(n, 'staged chunk')} in {plural(len(staged), 'partition')} loadable")
    return check_result("staged_chunks", passed=not findings, severity=ERROR, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=parts, chunks_checked=n, partitions_staged=len(staged))


def check_staged_embeddings(settings: Settings, url: str, keys: list[str] | None = None,
                            config: ValidationConfig | None = None) -> dict[str, Any]:
    """Every staged chunk has a vector (carried or cached) of the configured dimension, finite and
    non-zero, unit length for unit-vector models: catches a broken embedder before rows are replaced.
    Chunks whose vectors the load computes (offline embedder) are checked after the load instead."""
    cfg = config or ValidationConfig()
    unit = settings.model_name in cfg.unit_norm_models
    staged, rows, n = audit.staged_vector_problems(settings, url, keys, unit, cfg.norm_tolerance)
    findings = [{"partition": r[0], "doc_type": r[1], "source_name": r[2], "doc_path": r[3], "problem": r[4]}
                for r in rows]
    parts = sorted({f["partition"] for f in findings})
    message = (f"no usable vector for {plural(len(findings), 'staged chunk')} (e.g. {findings[0]['doc_path']}: "
               f"{findings[0]['problem']}): check the embedder ({settings.model_name}) and re-run the partitions"
               if findings else f"well-formed {settings.embedding_dims}-dim vectors for all {plural(n, 'staged chunk')}")
    return check_result("staged_embeddings", passed=not findings, severity=ERROR, message=message,
                        findings=findings, cap=cfg.max_findings, partitions=parts, chunks_checked=n,
                        partitions_staged=len(staged))
