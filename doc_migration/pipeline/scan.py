"""Stage 1, the source manifest: which files each partition holds, and their checksums.

The partition checksum covers every file's bytes plus the configuration that shapes rows
(chunking, embedding model and dimension, source metadata): equal checksum = nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Settings
from ..manifest import Manifest, SourceItem, discover

PIPELINE_VERSION = "1"
# A recorded sha256 is reused only for a file whose mtime and ctime were this much older than the
# moment it was hashed: a write in the same clock tick as the hash could not change the stat key.
RACY_NS = 2_000_000_000


@dataclass
class PartitionScan:
    key: str
    checksum: str
    files: int = 0
    bytes: int = 0
    items: list[tuple[SourceItem, str | None]] = field(default_factory=list)


def file_sha256(path: str, max_bytes: int) -> tuple[str | None, str | None]:
    """(sha256, refusal). Opened without blocking and checked to be a regular file once open (a
    FIFO swapped in after the walk would otherwise hang the run), and read at most to the limit."""
    h = hashlib.sha256()
    read = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb", closefd=True) as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, "not a regular file; it is never read: exclude it in the manifest"
            while block := fh.read(1 << 20):
                read += len(block)
                if read > max_bytes:
                    return None, (f"file too large: grew past the limit {max_bytes:,} bytes while being read "
                                  "(raise limits.max_file_bytes in the manifest or exclude the file)")
                h.update(block)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror}"
    return h.hexdigest(), None


def config_fingerprint(settings: Settings, manifest: Manifest) -> str:
    sources = [(s.source_name, s.format, json.dumps(s.metadata, sort_keys=True, default=str)) for s in manifest.sources]
    # Limits are included so that raising, e.g., parse_timeout_s re-parses the files it refused.
    return json.dumps([PIPELINE_VERSION, manifest.fingerprint(), settings.model_name, settings.embedding_dims,
                       sources, manifest.limits.__dict__], sort_keys=True, default=str)


def partition_checksum(fingerprint: str, entries: list[tuple[str, str, str]]) -> str:
    h = hashlib.sha256(fingerprint.encode())
    for source_name, rel_path, digest in sorted(entries):
        h.update(f"\n{source_name}\x1f{rel_path}\x1f{digest}".encode())
    return h.hexdigest()


def _settled(stat_key: str, hashed_at_ns: int) -> bool:
    """The file's mtime and ctime are older than its hash by RACY_NS (see file_stat_key)."""
    _, mtime, ctime, _, _ = stat_key.split(":")
    return max(int(mtime), int(ctime)) < hashed_at_ns - RACY_NS


def scan(settings: Settings, manifest: Manifest, keys: list[str],
         known: Mapping[tuple[str, str], tuple[str, str]] | None = None) -> dict[str, PartitionScan]:
    """``known``: (source, path) -> (stat key, sha256) recorded by an earlier scan; a file whose stat
    key is unchanged is not read again (a nightly scan of a large corpus reads only what changed).
    Items keep their stat key only when it may be trusted next time."""
    fingerprint = config_fingerprint(settings, manifest)
    by_key: dict[str, list[tuple[SourceItem, str | None]]] = {k: [] for k in keys}
    for item in discover(manifest, set(keys)):
        digest: str | None = None
        refusal = item.refusal
        stat_key = item.stat_key
        if item.fingerprint is not None:
            digest = item.fingerprint
        elif refusal is None and item.size > manifest.limits.max_file_bytes:
            refusal = (f"file too large: {item.size:,} bytes > limit {manifest.limits.max_file_bytes:,} "
                       "(raise limits.max_file_bytes in the manifest or exclude the file)")
        if refusal is None and digest is None:
            recorded = known.get((item.source_name, item.rel_path)) if known and stat_key else None
            if recorded is not None and recorded[0] == stat_key:
                digest = recorded[1]
            else:
                assert item.abs_path is not None
                digest, refusal = file_sha256(str(item.abs_path), manifest.limits.max_file_bytes)
                if stat_key is not None and not _settled(stat_key, time.time_ns()):
                    stat_key = None
        if refusal is not None or stat_key != item.stat_key:
            item = SourceItem(**{**item.__dict__, "refusal": refusal,
                                 "stat_key": None if refusal is not None else stat_key})
        by_key[item.partition].append((item, digest))
    out: dict[str, PartitionScan] = {}
    for key, items in by_key.items():
        entries = [(i.source_name, i.rel_path, d or f"refused:{i.refusal}:{i.size}") for i, d in items]
        out[key] = PartitionScan(key, partition_checksum(fingerprint, entries), len(items),
                                 sum(i.size for i, _ in items), items)
    return out
