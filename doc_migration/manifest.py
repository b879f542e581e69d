"""The source manifest: which folders hold which documentation, and how they map to partitions.

A partition is ``<doc_type>-<shard>`` where shard = a stable hash of (source_name, file path)
modulo ``shards``. ``shards`` is fixed per deployment: changing it moves files between partitions
and makes the next run reload everything (documented in docs/operations.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .sources.base import ParseLimits
from .validation.config import ValidationConfig, parse_validation_config

DOC_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,47}$")
KNOWN_FORMATS = {"auto", "markdown", "mdx", "text", "docserver-json", "rst", "html", "openapi", "notebook", "pdf", "sql-dump",
                 "json-text", "yaml-text", "docx"}
FOLDER = "{folder}"


@dataclass(frozen=True)
class ChunkingConfig:
    max_tokens: int = 800
    overlap_tokens: int = 64
    hard_max_tokens: int = 8191

    def fingerprint(self) -> str:
        return f"chunk:{self.max_tokens}:{self.overlap_tokens}"


@dataclass(frozen=True)
class SourceConfig:
    """One manifest entry. ``doc_type`` may be ``{folder}``: the first folder level names it."""

    source_name: str
    doc_type: str
    path: Path | None
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()
    format: str = "auto"
    metadata: dict[str, Any] = field(default_factory=dict)
    url_env: str | None = None  # live legacy database: name of the env var holding its URL
    table: str = "doc_embeddings"
    options: dict[str, Any] = field(default_factory=dict)

    def source_name_for(self, doc_type: str) -> str:
        return self.source_name.replace("{doc_type}", doc_type)


@dataclass(frozen=True)
class Manifest:
    path: Path
    sources: tuple[SourceConfig, ...]
    shards: int = 4
    chunking: ChunkingConfig = ChunkingConfig()
    limits: ParseLimits = ParseLimits()
    doc_types_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: ValidationConfig = field(default_factory=ValidationConfig)  # `validation:`, parsed with the rest

    def doc_types(self) -> list[str]:
        """Every doc type the manifest can produce (folder-named ones are listed from disk)."""
        found: set[str] = set()
        for src in self.sources:
            if src.doc_type == FOLDER:
                if src.path is not None and src.path.is_dir():
                    for entry in os.scandir(src.path):
                        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                            dt = normalise_doc_type(entry.name)
                            if dt:
                                found.add(dt)
            else:
                found.add(src.doc_type)
        return sorted(found)

    def check_paths(self) -> None:
        """Fail fast, before any run starts, when a source folder is missing."""
        for src in self.sources:
            if src.path is not None and not src.path.is_dir():
                raise ConfigError(f"{self.path}: source {src.source_name!r}: folder {src.path} does not exist")

    def partition_keys(self) -> list[str]:
        return [partition_key(dt, s) for dt in self.doc_types() for s in range(self.shards)]

    def source_names_for(self, key: str) -> set[str]:
        """The source names this manifest writes into partition ``key`` (doc-server records may add their
        own at parse time): rows of any other source there were loaded by something else."""
        doc_type = split_partition_key(key)[0]
        return {s.source_name_for(doc_type) for s in self.sources if s.doc_type in (doc_type, FOLDER)}

    def fingerprint(self) -> str:
        """Parts of the configuration whose change must reload partitions."""
        return f"{self.chunking.fingerprint()}|shards:{self.shards}"


def normalise_doc_type(name: str) -> str | None:
    dt = name.strip().lower().replace("-", "_").replace(" ", "_")
    return dt if DOC_TYPE_RE.match(dt) else None


def partition_key(doc_type: str, shard: int) -> str:
    return f"{doc_type}-{shard:02d}"


def split_partition_key(key: str) -> tuple[str, int]:
    doc_type, _, shard = key.rpartition("-")
    if not doc_type or not shard.isdigit():
        raise ConfigError(f"'{key}' is not a partition key (expected <doc_type>-<NN>, e.g. cilium-00)")
    return doc_type, int(shard)


def shard_of(source_name: str, rel_path: str, shards: int) -> int:
    digest = hashlib.sha256(f"{source_name}\x1f{rel_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


@cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a gitignore-like glob (``**`` spans folders, ``*`` does not) to a regex."""
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def matches(rel_path: str, patterns: tuple[str, ...]) -> bool:
    return any(glob_regex(p).match(rel_path) for p in patterns)


def _as_tuple(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a string or a list of strings")


def _shards(raw: dict[str, Any], path: Path) -> int:
    shards = raw.get("shards", 4)
    if os.environ.get("DOC_MIGRATION_SHARDS"):
        shards = os.environ["DOC_MIGRATION_SHARDS"]
    try:
        shards = int(shards)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: 'shards' must be an integer") from None
    if not 1 <= shards <= 100:
        raise ConfigError(f"{path}: 'shards' must be between 1 and 100, got {shards}")
    return shards


def _chunking(raw: dict[str, Any], path: Path) -> ChunkingConfig:
    ch = raw.get("chunking") or {}
    try:
        chunking = ChunkingConfig(
            max_tokens=int(ch.get("max_tokens", 800)), overlap_tokens=int(ch.get("overlap_tokens", 64))
        )
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: chunking.max_tokens/overlap_tokens must be integers") from None
    if not 16 <= chunking.max_tokens <= 8191:
        raise ConfigError(f"{path}: chunking.max_tokens must be 16..8191 (the embedding model's input limit)")
    if not 0 <= chunking.overlap_tokens < chunking.max_tokens // 2:
        raise ConfigError(f"{path}: chunking.overlap_tokens must be below half of max_tokens")
    return chunking


def _limits(raw: dict[str, Any], path: Path) -> ParseLimits:
    lim = raw.get("limits") or {}
    try:
        return ParseLimits(**{k: type(getattr(ParseLimits(), k))(v) for k, v in lim.items()})
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: bad 'limits' entry: {exc}") from None


def _source_entry(entry: Any, where: str, base: Path, seen: set[str]) -> SourceConfig:
    """One ``sources:`` entry, checked (``seen``: the source names so far, updated)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(entry) - {"source_name", "doc_type", "path", "include", "exclude", "format", "metadata",
                            "url_env", "table", "options"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    name = entry.get("source_name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'source_name' is required")
    doc_type = entry.get("doc_type")
    if not isinstance(doc_type, str) or not (doc_type == FOLDER or DOC_TYPE_RE.match(doc_type)):
        raise ConfigError(
            f"{where} ({name}): 'doc_type' must be '{FOLDER}' or match {DOC_TYPE_RE.pattern}, got {doc_type!r}"
        )
    if name in seen:
        raise ConfigError(f"{where}: duplicate source_name {name!r}")
    seen.add(name)
    fmt = entry.get("format", "auto")
    if fmt not in KNOWN_FORMATS:
        raise ConfigError(f"{where} ({name}): unknown format {fmt!r}; use one of {sorted(KNOWN_FORMATS)}")
    src_path: Path | None = None
    if entry.get("path") is not None:
        src_path = (base / str(entry["path"])).resolve()
    elif not entry.get("url_env"):
        raise ConfigError(f"{where} ({name}): give 'path' (a folder) or 'url_env' (a legacy database)")
    elif doc_type == FOLDER:
        raise ConfigError(f"{where} ({name}): a legacy database source needs a fixed doc_type (e.g. rust)")
    metadata = entry.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where} ({name}): 'metadata' must be a mapping")
    return SourceConfig(
        source_name=name,
        doc_type=doc_type,
        path=src_path,
        include=_as_tuple(entry.get("include", ["**/*"]), f"{where}.include") or ("**/*",),
        exclude=_as_tuple(entry.get("exclude"), f"{where}.exclude"),
        format=fmt,
        metadata=metadata,
        url_env=entry.get("url_env"),
        table=str(entry.get("table", "doc_embeddings")),
        options=dict(entry.get("options") or {}),
    )


def load_manifest(path: Path) -> Manifest:
    """Parse and validate a manifest file; every error names the file and the entry."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"source manifest {path} does not exist (set --sources or DOC_MIGRATION_SOURCES)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"source manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise ConfigError(f"source manifest {path}: expected a mapping with a non-empty 'sources:' list")
    shards, chunking, limits = _shards(raw, path), _chunking(raw, path), _limits(raw, path)
    seen: set[str] = set()
    sources = [_source_entry(entry, f"{path}: sources[{i}]", path.parent, seen)
               for i, entry in enumerate(raw["sources"])]
    doc_types_meta = raw.get("doc_types") or {}
    if not isinstance(doc_types_meta, dict):
        raise ConfigError(f"{path}: 'doc_types' must be a mapping of doc type to settings")
    validation = parse_validation_config(raw, str(path))  # a typo in validation: fails here (exit 2)
    return Manifest(path=path, sources=tuple(sources), shards=shards, chunking=chunking, limits=limits,
                    doc_types_meta=doc_types_meta, validation=validation)


@dataclass(frozen=True)
class SourceItem:
    """One file (or virtual item) that belongs to exactly one partition."""

    source_name: str
    doc_type: str
    rel_path: str
    abs_path: Path | None
    fmt: str
    size: int
    partition: str
    source_index: int
    refusal: str | None = None  # set when discovery itself must quarantine the item
    fingerprint: str | None = None  # change detector for items that are not files (legacy DB crates)
    stat_key: str | None = None  # the file's identity and times when discovered (see file_stat_key)


def file_stat_key(st: os.stat_result) -> str:
    """What a file's bytes cannot change without changing: size, mtime, ctime (which no tool can set
    back), inode and device. Equal keys let a scan reuse the sha256 recorded with the key."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gave surrogate escapes for undecodable bytes
        return False
    return True


def _file_kind(entry: os.DirEntry[str]) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "unknown type"
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "unknown type"


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Iterative walk (no recursion limit) that does not follow directory symlinks."""
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((rel + "/", Path(entry.path)))
            else:
                yield rel, entry


LEGACY_FORMAT = "legacy-db"


def _discover_database(manifest: Manifest, index: int, src: SourceConfig,
                       partitions: set[str] | None) -> Iterator[SourceItem]:
    """A live legacy database: one item per crate, fingerprinted server-side."""
    from .sources.legacy_db import LegacyDatabaseError, list_crates

    assert src.url_env is not None
    url = os.environ.get(src.url_env)
    if not url:
        raise ConfigError(f"source {src.source_name!r}: environment variable {src.url_env} (the legacy database URL) "
                          "is not set")
    try:
        crates = list_crates(url, src.table)
    except LegacyDatabaseError as exc:
        raise ConfigError(f"source {src.source_name!r}: {exc}") from None
    for crate, fingerprint, n_rows in crates:
        key = partition_key(src.doc_type, shard_of(src.source_name, crate, manifest.shards))
        if partitions is None or key in partitions:
            yield SourceItem(src.source_name, src.doc_type, crate, None, LEGACY_FORMAT, n_rows, key, index,
                             fingerprint=fingerprint)


def discover(manifest: Manifest, partitions: set[str] | None = None) -> Iterator[SourceItem]:
    """Every item of the manifest (optionally only those of some partitions), in a stable order."""
    for index, src in enumerate(manifest.sources):
        if src.path is None:
            yield from _discover_database(manifest, index, src, partitions)
            continue
        if not src.path.is_dir():
            raise ConfigError(f"source {src.source_name!r}: folder {src.path} does not exist")
        root_real = os.path.realpath(src.path)
        for rel, entry in _walk(src.path):
            if not matches(rel, src.include) or (src.exclude and matches(rel, src.exclude)):
                continue
            if src.doc_type == FOLDER:
                if "/" not in rel:
                    continue
                doc_type = normalise_doc_type(rel.split("/", 1)[0])
                if doc_type is None:
                    continue
            else:
                doc_type = src.doc_type
            source_name = src.source_name_for(doc_type)
            refusal = None
            if not _is_utf8(rel):
                # A POSIX name that is not UTF-8 cannot be a doc_path (PostgreSQL text) as it is:
                # refused under its escaped name, which is what the operator sees in the quarantine.
                rel = os.fsencode(rel).decode("utf-8", "backslashreplace")
                refusal = ("file name is not valid UTF-8 (shown with \\x escapes); rename the file "
                           "to UTF-8 to load it")
            key = partition_key(doc_type, shard_of(source_name, rel, manifest.shards))
            if partitions is not None and key not in partitions:
                continue
            size = 0
            stat_key = None
            if refusal is not None:
                pass
            elif entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([root_real, target]) != root_real:
                    refusal = "symlink escapes the source folder"
                elif not os.path.isfile(target):
                    refusal = "symlink does not point to a regular file"
            elif not entry.is_file(follow_symlinks=False):
                refusal = (f"not a regular file ({_file_kind(entry)}); it is never opened: "
                           "exclude it in the manifest or replace it with the file it stands for")
            if refusal is None:
                try:
                    st = entry.stat()
                    size, stat_key = st.st_size, file_stat_key(st)
                except OSError as exc:
                    refusal = f"cannot stat file: {exc.strerror}"
            yield SourceItem(source_name, doc_type, rel, Path(entry.path), src.format, size, key, index, refusal,
                             stat_key=stat_key)
