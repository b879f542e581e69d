"""Stage 2, parsed docs: read, parse and chunk one file into staged rows.

``parse_file`` is a pure function of (file, configuration) so it can run in a worker process;
``pipeline/stage.py`` decides which files to parse and writes the partition's staged version.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chunking import chunk_document
from ..config import Settings
from ..manifest import LEGACY_FORMAT, ChunkingConfig, Manifest
from ..redaction import redact
from ..sources.base import ParseContext, ParsedDocument, ParseLimits, QuarantineError
from ..sources.registry import Detection, detect, get_parser
from .workers import run_bounded

NOT_READ = "unread"  # format of a file refused before its bytes were read (too large, unreadable)
ROW_NAMESPACE = uuid.UUID("6f1d3c1e-7b0a-5d6e-9a43-2f0d1c9e8b71")


def row_id(doc_type: str, source_name: str, doc_path: str) -> uuid.UUID:
    """Deterministic ids: a retried or doubled load can never create a second row."""
    return uuid.uuid5(ROW_NAMESPACE, f"{doc_type}\x1f{source_name}\x1f{doc_path}")


@dataclass
class FileJob:
    source_name: str
    doc_type: str
    rel_path: str
    abs_path: str
    fmt: str
    refusal: str | None
    default_metadata: dict[str, Any]
    options: dict[str, Any]
    chunking: ChunkingConfig
    limits: ParseLimits
    dims: int
    model: str


@dataclass
class FileResult:
    rel_path: str
    source_name: str
    sha256: str | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    documents: int = 0
    quarantine: dict[str, str] | None = None
    partial: list[dict[str, str]] = field(default_factory=list)  # rows of a file refused, the rest loaded
    seconds: float = 0.0
    fmt: str = NOT_READ  # the format the file was read as, and why: recorded with its rows or refusal
    detected_by: str = ""


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _quarantine(job: FileJob, stage: str, reason: str, hint: str) -> dict[str, str]:
    return {"path": job.rel_path, "source_name": job.source_name, "doc_type": job.doc_type,
            "stage": stage, "reason": reason, "hint": hint}


def parse_file(job: FileJob) -> FileResult:
    """Read, parse and chunk one file; any refusal becomes a quarantine record, never an exception.

    The format decision and its evidence go with the outcome (row metadata ``detected_format`` /
    ``detected_by``, or the quarantine record), so ``status --files`` explains every file."""
    result = _parse_file(job)
    detected = {"format": result.fmt, "detected_by": result.detected_by}
    if result.quarantine is not None:
        result.quarantine = {**result.quarantine, **detected}
    result.partial = [{**p, **detected} for p in result.partial]
    return result


def _detect(job: FileJob, data: bytes, result: FileResult) -> str:
    """The format to parse with, noted on ``result``; binary content raises QuarantineError."""
    try:
        found = Detection(job.fmt, f"manifest format '{job.fmt}'") if job.fmt != "auto" else detect(job.rel_path, data)
    except QuarantineError as exc:
        result.fmt, result.detected_by = "binary", exc.reason
        raise
    result.fmt, result.detected_by = found.fmt, found.evidence
    return found.fmt


def _parse_file(job: FileJob) -> FileResult:
    start = time.perf_counter()
    result = FileResult(job.rel_path, job.source_name)
    if job.refusal:
        result.quarantine = _quarantine(job, "scan", job.refusal, "see docs/troubleshooting.md")
        return result
    if job.fmt == LEGACY_FORMAT:
        result.fmt, result.detected_by = LEGACY_FORMAT, "manifest format 'legacy-db'"
        try:
            return _chunk_documents(job, result, _read_legacy(job), start)
        except QuarantineError as exc:
            result.quarantine = _quarantine(job, exc.stage, exc.reason, exc.hint)
            result.rows, result.documents = [], 0
            return result
    try:
        with open(job.abs_path, "rb") as fh:
            data = fh.read(job.limits.max_file_bytes + 1)
    except OSError as exc:
        result.quarantine = _quarantine(job, "read", f"cannot read file: {exc.strerror}", "check permissions")
        return result
    if len(data) > job.limits.max_file_bytes:
        result.quarantine = _quarantine(job, "read", f"file too large: over {job.limits.max_file_bytes:,} bytes",
                                        "raise limits.max_file_bytes in the manifest or exclude the file")
        return result
    result.sha256 = hashlib.sha256(data).hexdigest()
    use_alarm = hasattr(signal, "setitimer") and _in_worker
    if _in_worker:
        _limit_memory(job.limits)
    try:
        fmt = _detect(job, data, result)
        ctx = ParseContext(job.rel_path, job.doc_type, job.source_name, fmt, job.options, job.limits)
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, job.limits.parse_timeout_s)
        try:
            docs = get_parser(fmt)(data, ctx)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if not docs:
            raise QuarantineError("no documents found in the file", "check the file's content and format")
        for problem in getattr(docs, "problems", ()):  # e.g. SQL dump rows skipped while the rest loads
            if getattr(problem, "skipped", True):
                result.partial.append({
                    **_quarantine(job, "parse", str(problem.reason), "fix or remove this row in the dump"),
                    "path": f"{job.rel_path}#row{problem.row}"})
        _chunk_documents(job, result, docs, start)
    except QuarantineError as exc:
        result.quarantine = _quarantine(job, exc.stage, exc.reason, exc.hint)
        result.rows = []
        result.documents = 0
    except _Timeout:
        result.quarantine = _quarantine(job, "parse", f"parsing took longer than {job.limits.parse_timeout_s:g} s",
                                        "raise limits.parse_timeout_s or exclude the file")
        result.rows, result.documents = [], 0
    except RecursionError:
        result.quarantine = _quarantine(job, "parse", "document nested too deeply to parse", "exclude the file")
        result.rows, result.documents = [], 0
    except MemoryError:
        result.quarantine = _quarantine(
            job, "parse", f"parsing needed more than {job.limits.max_parse_memory_mb} MB of memory",
            "raise limits.max_parse_memory_mb in the manifest or exclude the file")
        result.rows, result.documents = [], 0
    except Exception as exc:  # a parser bug must not stop the run; it is recorded with its type
        # Redacted before truncation, so a secret cut in half by [:300] cannot survive.
        result.quarantine = _quarantine(job, "parse", f"parser error: {type(exc).__name__}: {redact(str(exc))[:300]}",
                                        "report this as a bug with the file attached")
        result.rows, result.documents = [], 0
    result.seconds = time.perf_counter() - start
    return result


def _chunk_documents(job: FileJob, result: FileResult, docs: list[ParsedDocument], start: float) -> FileResult:
    """Turn parsed documents into staged rows (ids, metadata, hashes); raises QuarantineError."""
    rows: list[tuple[Any, ...]] = []
    seen_paths: set[str] = set()
    for doc in docs:
        source_name = doc.source_name or job.source_name
        carried = None
        if doc.embedding is not None and len(doc.embedding) == job.dims:
            carried_model = doc.embedding_model or job.options.get("carried_model") or job.model
            if carried_model == job.model:
                carried = np.asarray(doc.embedding, dtype=np.float32)
        chunk_list: list[tuple[str, tuple[str, ...], int | None]]
        if carried is not None:
            text = doc.text
            chunk_list = [(text, (), None)] if text.strip() else []
        else:
            chunk_list = [(c.text, c.heading_path, c.token_count) for c in chunk_document(doc, job.chunking)]
        if not chunk_list:
            continue
        result.documents += 1
        n = len(chunk_list)
        for i, (text, heading_path, tokens) in enumerate(chunk_list):
            if "\x00" in text:
                raise QuarantineError("NUL byte in extracted text", "PostgreSQL text cannot store NUL; fix the file")
            doc_path = doc.path if n == 1 else f"{doc.path}#chunk{i:04d}"
            if doc_path in seen_paths:
                raise QuarantineError(f"duplicate document path {doc_path!r} inside the file",
                                      "each record must have a unique path")
            seen_paths.add(doc_path)
            if tokens is None:
                from ..tokens import count_tokens

                tokens = count_tokens(text)
            meta: dict[str, Any] = {
                **job.default_metadata,
                **doc.metadata,
                "source_file": job.rel_path,
                "source_sha256": result.sha256,
                "document_path": doc.path,
                "chunk_index": i,
                "chunk_count": n,
                "embedding_model": job.model,
                "embedding_dims": job.dims,
                "detected_format": result.fmt,
                "detected_by": result.detected_by,
            }
            if doc.title and "title" not in meta:
                meta["title"] = doc.title
            if heading_path:
                meta["section_path"] = list(heading_path)
            rows.append((
                row_id(job.doc_type, source_name, doc_path), job.doc_type, source_name, doc_path,
                job.rel_path, doc.path, text, json.loads(json.dumps(meta, ensure_ascii=False, default=str)),
                hashlib.sha256(text.encode("utf-8")).digest(), tokens, carried,
            ))
    if not rows:
        raise QuarantineError("no text could be extracted", "check that the file has readable content")
    result.rows = rows
    result.seconds = time.perf_counter() - start
    return result


# Imported by the pool's fork server before any worker starts: a worker costs milliseconds.
PRELOAD = ("doc_migration.pipeline.parse", "doc_migration.sources.registry")
_in_worker = False
_baseline_vm: int | None = None  # address space of the worker once started (bytes); Linux only


def worker_init() -> None:
    """In a worker process: Python-level parser loops get a soft SIGALRM limit per file, and the
    address space a file may add is capped (see _limit_memory)."""
    global _in_worker, _baseline_vm
    _in_worker = True
    signal.signal(signal.SIGALRM, _alarm)
    try:
        with open("/proc/self/statm") as fh:
            _baseline_vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        _baseline_vm = None


def _limit_memory(limits: ParseLimits) -> None:
    """RLIMIT_AS = start-up size + limits.max_parse_memory_mb, set per file (the soft limit may go
    up again for the next file). Python allocations then raise MemoryError; a C library that
    aborts on a failed allocation (PDFium) kills only this worker, and the pool's hard deadline
    quarantines the file."""
    if _baseline_vm is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _baseline_vm + limits.max_parse_memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _timed_out(job: FileJob) -> FileResult:
    result = FileResult(job.rel_path, job.source_name)
    result.quarantine = _quarantine(
        job, "parse", f"parsing took longer than {job.limits.parse_timeout_s:g} s (parser stopped)",
        "the parser was stuck, or crashed over limits.max_parse_memory_mb; raise limits.parse_timeout_s / "
        "limits.max_parse_memory_mb in the manifest or exclude the file")
    result.quarantine.update(format=job.fmt if job.fmt != "auto" else "unknown",
                             detected_by="the parser process stopped before reporting")
    return result


def parse_files(jobs: list[FileJob], parallel: int) -> Iterable[FileResult]:
    """Parse in worker processes, so every file is bounded in time (and a crash of a parser cannot
    take the run down), using ``parallel`` cores."""
    if not jobs:
        return
    yield from run_bounded(parse_file, jobs, max(1, parallel), lambda j: j.limits.parse_timeout_s, _timed_out,
                           initializer=worker_init, preload=PRELOAD)


def make_job(settings: Settings, manifest: Manifest, source_name: str, rel_path: str, doc_type: str, fmt: str,
             refusal: str | None) -> FileJob:
    src = next(s for s in manifest.sources if s.source_name_for(doc_type) == source_name)
    meta = {**manifest.doc_types_meta.get(doc_type, {}).get("metadata", {}), **src.metadata}
    options = dict(src.options)
    if src.path is None:  # a legacy database: the item is a crate read through the URL in url_env
        options.update(url_env=src.url_env, table=src.table)
    abs_path = str(src.path / rel_path) if src.path is not None else ""
    return FileJob(source_name, doc_type, rel_path, abs_path, fmt, refusal, meta, options,
                   manifest.chunking, manifest.limits, settings.embedding_dims, settings.model_name)


def _read_legacy(job: FileJob) -> list[ParsedDocument]:
    from ..sources.legacy_db import LegacyDatabaseError, read_crate

    url = os.environ.get(str(job.options.get("url_env")), "")
    try:
        return read_crate(url, job.rel_path, str(job.options.get("table", "doc_embeddings")), job.dims)
    except LegacyDatabaseError as exc:
        raise QuarantineError(f"cannot read crate from the legacy database: {exc}", "check the legacy database",
                              stage="read") from None
