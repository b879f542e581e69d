"""Stage 2, parsed docs: a changed partition's staged version, written in one transaction.

Only the files that changed are parsed (``changes.py``); the staged version then holds their rows
and names every file it replaces, so the load swaps exactly those files' rows and leaves the rest
where they are. A partition without file records (first load, or rolled back since) is staged in
full. A crash leaves either the complete staged version or the previous one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import Settings
from ..faults import crash_point
from ..manifest import Manifest
from ..storage import file_state, staging
from ..storage.file_state import Identity, StagedFile
from ..storage.scans import scanned_files
from .changes import file_version, partition_changes
from .parse import FileJob, FileResult, make_job, parse_files
from .progress import Tally


@dataclass
class StageResult:
    key: str
    status: str  # "unchanged" | "staged" | "already-staged"
    checksum: str
    files: int = 0  # files the partition holds
    documents: int = 0  # documents and chunks of the parsed files
    chunks: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    files_parsed: int = 0
    files_deleted: int = 0
    incremental: bool = False


def file_jobs(settings: Settings, manifest: Manifest, url: str, key: str) -> list[tuple[FileJob, str | None]]:
    """The partition's files as recorded by its latest scan (so every pod parses the same list),
    each with the sha256 the scan read."""
    return [(make_job(settings, manifest, *row[:5]), row[5]) for row in scanned_files(settings, url, key)]


def _collision(fr: FileResult, seen: dict[Identity, str]) -> dict[str, str] | None:
    """A file whose row key another file of the partition produced already is refused, naming both."""
    dup = next((r for r in fr.rows if (r[1], r[2], r[3]) in seen), None)
    if dup is None:
        return None
    return {"path": fr.rel_path, "source_name": fr.source_name, "doc_type": dup[1], "stage": "parse",
            "reason": f"document path {dup[3]!r} already produced by another file of this partition, "
                      f"{seen[(dup[1], dup[2], dup[3])]!r}",
            "hint": "make document paths unique: rename one of the two files", "format": fr.fmt,
            "detected_by": fr.detected_by}


def stage_partition(settings: Settings, manifest: Manifest, url: str, key: str, run_id: str,
                    parallel: int = 1, tally: Tally | None = None) -> StageResult:
    """``tally`` counts parsed files across the run's partitions (progress of a long parse)."""
    start = time.perf_counter()
    sums = staging.checksums(settings, url, key)
    if sums.scanned is None:
        raise RuntimeError(f"partition {key} has not been scanned: materialize source_manifest first")
    checksum = sums.scanned
    if sums.loaded == checksum:
        return StageResult(key, "unchanged", checksum, seconds=time.perf_counter() - start)
    if sums.staged == checksum and sums.staged_current:
        return StageResult(key, "already-staged", checksum, seconds=time.perf_counter() - start)

    jobs = file_jobs(settings, manifest, url, key)
    scope = manifest.source_names_for(key)
    changes = partition_changes(settings, url, key, jobs, scope)
    scanned = {(j.source_name, j.rel_path): (j, d) for j, d in jobs}
    result = StageResult(key, "staged", checksum, files=len(jobs), files_parsed=len(changes.parse),
                         files_deleted=len(changes.deleted), incremental=changes.incremental)
    if tally is not None:
        tally.add_total(len(changes.parse))
    staged_files = [StagedFile(src, rel, None, "", "deleted", 0, []) for src, rel in changes.deleted]
    with staging.StagedWriter(settings, url, key) as writer:
        # rows that stay as they are (unchanged files', or nobody's), with their file: a re-parsed file
        # may not take one over
        seen = file_state.kept_rows(settings, url, key, changes.replaced) if changes.incremental else {}
        for fr in parse_files(changes.parse, parallel):  # in the order files finish
            job, digest = scanned[(fr.source_name, fr.rel_path)]
            if tally is not None:
                tally.advance()
            if fr.quarantine is None:
                fr.quarantine = _collision(fr, seen)
            result.quarantined.extend(fr.partial)
            refused = fr.quarantine is not None
            staged_files.append(StagedFile(job.source_name, job.rel_path, digest, file_version(job),
                                           "refused" if refused else "loaded", 0 if refused else fr.documents,
                                           [] if refused else [r[0] for r in fr.rows]))
            if fr.quarantine is not None:
                result.quarantined.append(fr.quarantine)
                continue
            crash_point("parse-file")
            for row in fr.rows:
                seen[(row[1], row[2], row[3])] = fr.rel_path
                scope.add(row[2])
                writer.write_chunk(row)
            result.documents += fr.documents
            result.chunks += len(fr.rows)
        writer.finish(checksum, run_id, result.files, result.documents, result.chunks, result.quarantined,
                      sorted(scope), staged_files, changes.base_load_id, result.files_parsed)
    result.seconds = time.perf_counter() - start
    return result
