"""Which files of a changed partition must be parsed again, and which files are gone.

A file is unchanged when its bytes (sha256) and the version of everything that shapes its rows
(format, doc type, metadata, parser options, chunking, limits, model, dimension, pipeline version)
equal what its partition's latest load recorded for it; its rows then stay as they are and it is
not read. Deleted files are the recorded ones the scan no longer finds, among the sources this
manifest writes into the partition (a removed source's rows stay foreign, as in a full load).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ..config import Settings
from ..storage import file_state
from ..storage.file_state import FileKey, LoadedFile
from .parse import FileJob
from .scan import PIPELINE_VERSION


def file_version(job: FileJob) -> str:
    """Changes exactly when a setting that shapes this file's rows changes."""
    shape = [PIPELINE_VERSION, job.doc_type, job.fmt, job.refusal, job.default_metadata, job.options,
             job.chunking.fingerprint(), asdict(job.limits), job.dims, job.model]
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class FileChanges:
    """``base_load_id`` None: a full re-parse (the partition has no file records: first load, loaded
    before file records existed, or rolled back / reset since)."""

    base_load_id: int | None
    parse: list[FileJob] = field(default_factory=list)
    deleted: list[FileKey] = field(default_factory=list)
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    version_changed: int = 0
    unchanged_chunks: int = 0

    @property
    def incremental(self) -> bool:
        return self.base_load_id is not None

    @property
    def replaced(self) -> list[FileKey]:
        """Files whose rows the staged version replaces (re-parsed or deleted)."""
        return [(j.source_name, j.rel_path) for j in self.parse] + self.deleted


def classify(jobs: list[tuple[FileJob, str | None]], loaded: dict[FileKey, LoadedFile], base_load_id: int | None,
             scope: set[str]) -> FileChanges:
    """``jobs``: the scanned files with their scanned sha256 (None: not read by the scan)."""
    if base_load_id is None or not loaded:
        return FileChanges(None, parse=[j for j, _ in jobs], new=len(jobs))
    out = FileChanges(base_load_id)
    seen: set[FileKey] = set()
    for job, digest in jobs:
        k = (job.source_name, job.rel_path)
        seen.add(k)
        prev = loaded.get(k)
        if prev is None:
            out.new += 1
        elif digest is None or prev.sha256 != digest:
            out.changed += 1
        elif prev.version != file_version(job):
            out.version_changed += 1
        else:
            out.unchanged += 1
            out.unchanged_chunks += prev.chunks
            continue
        out.parse.append(job)
    out.deleted = sorted(k for k in loaded if k not in seen and k[0] in scope)
    return out


def partition_changes(settings: Settings, url: str, key: str, jobs: list[tuple[FileJob, str | None]],
                      scope: set[str]) -> FileChanges:
    base_load_id, loaded = file_state.loaded_files(settings, url, key)
    return classify(jobs, loaded, base_load_id, scope)
