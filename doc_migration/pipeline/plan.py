"""What a run would do and cost, computed without embedding or writing anything.

Parsing and chunking are run for changed partitions (they are cheap and offline); every chunk's
text hash is looked up in the embedding cache, so the token estimate is what the run will send.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Settings
from ..manifest import Manifest
from ..storage import embedding_cache, ledger
from .parse import make_job, parse_files
from .scan import scan


@dataclass
class Plan:
    partitions_new: list[str] = field(default_factory=list)
    partitions_changed: list[str] = field(default_factory=list)
    partitions_unchanged: list[str] = field(default_factory=list)
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
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(settings: Settings, manifest: Manifest, url: str, keys: list[str], parallel: int = 1,
              tpm: int | None = None) -> Plan:
    start = time.perf_counter()
    plan = Plan(model=settings.model_name)
    scans = scan(settings, manifest, keys)
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
    todo = plan.partitions_new + plan.partitions_changed
    to_embed: dict[bytes, int] = {}  # across partitions: a text shared by two is embedded once
    for key in todo:
        jobs = [make_job(settings, manifest, i.source_name, i.rel_path, i.doc_type, i.fmt, i.refusal)
                for i, _ in scans[key].items]
        existing = ledger.owned_rows(settings, url, key)
        seen_ids: set[tuple[str, str, str]] = set()
        for fr in parse_files(jobs, parallel):
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
        plan.chunks_to_delete += sum(1 for ident in existing if ident not in seen_ids)
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

        plan.estimated_dollars = estimate_cost(plan.tokens_to_embed, settings.model_name)
        if tpm:
            plan.estimated_embed_seconds = round(60.0 * plan.tokens_to_embed / tpm, 1)
    plan.seconds = round(time.perf_counter() - start, 3)
    return plan

