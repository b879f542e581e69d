"""What a run would do and cost, computed without embedding or writing anything.

Only the files a run would parse are parsed (new files, changed bytes, or a setting that shapes
their rows changed; they are cheap and offline); every chunk's text hash is looked up in the
embedding cache, so the token estimate is what the run will send.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Settings
from ..manifest import Manifest
from ..storage import embedding_cache, file_state, ledger
from ..storage.scans import known_digests
from .changes import FileChanges, partition_changes
from .parse import make_job, parse_files
from .scan import scan


@dataclass
class Plan:
    partitions_new: list[str] = field(default_factory=list)
    partitions_changed: list[str] = field(default_factory=list)
    partitions_unchanged: list[str] = field(default_factory=list)
    files_total: int = 0
    files_to_parse: int = 0  # new + changed + version changed: the only files the run reads
    files_new: int = 0
    files_changed: int = 0  # bytes differ
    files_version_changed: int = 0  # same bytes, a setting that shapes their rows changed
    files_deleted: int = 0
    files_unchanged: int = 0
    documents: int = 0
    chunks_total: int = 0
    chunks_new: int = 0
    chunks_changed: int = 0
    chunks_unchanged: int = 0
    chunks_to_delete: int = 0
    chunks_to_embed: int = 0
    cache_hits: int = 0
    tokens_to_embed: int = 0
    quarantined: int = 0
    estimated_dollars: float = 0.0
    estimated_embed_seconds: float | None = None
    model: str = ""
    embed_mode: str = "sync"  # "batch": priced at the Batch API's half price, no TPM-bound time estimate
    estimated_dollars_sync: float = 0.0  # the same tokens through the synchronous endpoint
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count_files(plan: Plan, changes: FileChanges) -> None:
    plan.files_to_parse += len(changes.parse)
    plan.files_new += changes.new
    plan.files_changed += changes.changed
    plan.files_version_changed += changes.version_changed
    plan.files_deleted += len(changes.deleted)
    plan.files_unchanged += changes.unchanged
    plan.chunks_unchanged += changes.unchanged_chunks
    plan.chunks_total += changes.unchanged_chunks


def make_plan(settings: Settings, manifest: Manifest, url: str, keys: list[str], parallel: int = 1,
              tpm: int | None = None) -> Plan:
    start = time.perf_counter()
    plan = Plan(model=settings.model_name, embed_mode=settings.embed_mode)
    scans = scan(settings, manifest, keys, known_digests(settings, url, keys))
    states = ledger.loaded_checksums(settings, url, keys)
    owned = ledger.owned_row_counts(settings, url, keys)
    for key, sc in scans.items():
        if key not in states:
            plan.partitions_new.append(key)
        elif states[key] != sc.checksum:
            plan.partitions_changed.append(key)
        else:
            plan.partitions_unchanged.append(key)
            plan.chunks_unchanged += owned.get(key, 0)
            plan.files_unchanged += sc.files
        plan.files_total += sc.files
    todo = plan.partitions_new + plan.partitions_changed
    to_embed: dict[bytes, int] = {}  # across partitions: a text shared by two is embedded once
    for key in todo:
        jobs = [(make_job(settings, manifest, i.source_name, i.rel_path, i.doc_type, i.fmt, i.refusal), digest)
                for i, digest in scans[key].items]
        changes = partition_changes(settings, url, key, jobs, manifest.source_names_for(key))
        _count_files(plan, changes)
        existing = ledger.owned_rows(settings, url, key)
        # rows the run may delete: all the partition's for a full re-parse, else the replaced files'
        replaceable = (file_state.rows_of_files(settings, url, key, changes.replaced) if changes.incremental
                       else set(existing))
        seen_ids: set[tuple[str, str, str]] = set()
        for fr in parse_files(changes.parse, parallel):
            if fr.quarantine is not None:
                plan.quarantined += 1
                continue
            plan.documents += fr.documents
            for row in fr.rows:
                ident = (row[1], row[2], row[3])
                seen_ids.add(ident)
                text_sha, tokens, carried = row[8], row[9], row[10]
                plan.chunks_total += 1
                if ident not in existing:
                    plan.chunks_new += 1
                elif existing[ident] != text_sha:
                    plan.chunks_changed += 1
                else:
                    plan.chunks_unchanged += 1
                if carried is None:
                    to_embed.setdefault(text_sha, tokens)
        plan.chunks_to_delete += sum(1 for ident in replaceable if ident not in seen_ids)
    if to_embed:
        hits = embedding_cache.cached(settings, url, settings.model_name, settings.embedding_dims, list(to_embed))
        for sha, tokens in to_embed.items():
            if sha in hits:
                plan.cache_hits += 1
            else:
                plan.chunks_to_embed += 1
                plan.tokens_to_embed += tokens
    if settings.embedder != "offline":
        from ..embedding.pricing import estimate_cost

        batch = plan.tokens_to_embed if settings.embed_mode == "batch" else 0
        plan.estimated_dollars = estimate_cost(plan.tokens_to_embed, settings.model_name, batch_tokens=batch)
        plan.estimated_dollars_sync = estimate_cost(plan.tokens_to_embed, settings.model_name)
        if tpm and not batch:
            plan.estimated_embed_seconds = round(60.0 * plan.tokens_to_embed / tpm, 1)
    plan.seconds = round(time.perf_counter() - start, 3)
    return plan

