"""Repair what validation found: reset broken partitions so ``full`` reloads them, delete orphans, merge
duplicates per the manifest's strategy.

Resetting a partition deletes its rows, their ownership and its ledger state in one transaction
(under the partition's advisory lock, like a load), so the next ``full`` run sees a partition
that was never loaded and rebuilds it from the sources. Invalidating the checksum alone would
not do: the loader rewrites a row only when content, metadata or token count differ, so a
corrupted vector would survive. Cached vectors that are themselves broken (or that the retrieval
test caught) are purged so they are re-embedded instead of reused.

Expected call sequence (``doc-migrate validate --repair``)::

    report = build_report(settings, url, keys, None)
    plan = plan_repair(report)                 # show plan.as_dict(); ask unless --yes
    result = apply_repair(settings, url, plan)
    full(plan.partitions)                      # the normal migration, only those partitions
    report = build_report(settings, url, keys, None)
    if not (plan2 := plan_repair(report)).is_empty():   # duplicates of reloaded partitions
        apply_repair(settings, url, plan2)      # (plan2.partitions is empty unless a reload failed)

Duplicates are merged after reloads because a reload restores every row of its sources; groups that
touch a partition being reset are deferred to the second pass.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from ..config import Settings
from ..manifest import load_manifest
from ..storage.database import connection
from ..storage.locks import lock_partition_xact
from ..storage.maintenance import delete_orphans, drop_rows, reset_partition
from .common import doc_type_of
from .config import DuplicateConfig, ValidationConfig
from .duplicates import Group, find_groups

RESET_BY = ("counts", "checksums", "embeddings", "schema", "retrieval")


@dataclass
class RepairPlan:
    """What a repair will do; built from a report, applied by :func:`apply_repair`."""

    partitions: list[str] = field(default_factory=list)  # reset now, then re-materialize with `full`
    reasons: dict[str, list[str]] = field(default_factory=dict)  # partition -> checks that failed there
    never_loaded: list[str] = field(default_factory=list)  # only need `full`
    purge_cache_ids: list[str] = field(default_factory=list)  # rows whose cached vector must be re-embedded
    delete_orphans: bool = False
    orphans_expected: int = 0
    duplicate_strategy: str = "keep_all"
    merge_near: bool = False
    duplicate_groups_expected: int = 0
    keys: list[str] = field(default_factory=list)  # partitions the report covered (duplicates are re-found there)

    def is_empty(self) -> bool:
        return not (self.partitions or self.delete_orphans or self.duplicate_groups_expected)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("keys")
        return out


def plan_repair(report: dict[str, Any]) -> RepairPlan:
    """Failing or missing partitions to reload, managed orphans to delete, duplicates to merge."""
    checks: dict[str, dict[str, Any]] = report.get("checks", {})
    reasons: dict[str, list[str]] = defaultdict(list)
    never: list[str] = []
    for name in RESET_BY:
        c = checks.get(name)
        if not c or c.get("passed"):
            continue
        for key in c.get("partitions", []):
            reasons[key].append(name)
        if name == "counts":
            never += list(c.get("never_loaded", []))
    plan = RepairPlan(
        partitions=sorted(k for k in reasons if k not in never),
        reasons={k: sorted(set(v)) for k, v in sorted(reasons.items())},
        never_loaded=sorted(set(never)),
        purge_cache_ids=list(checks.get("retrieval", {}).get("misplaced_ids", []))
        if not checks.get("retrieval", {}).get("passed", True) else [],
        keys=sorted(report.get("keys") or []),
    )
    orphans = checks.get("orphans")
    if orphans and not orphans.get("passed") and orphans.get("orphans_managed"):
        plan.delete_orphans = True
        plan.orphans_expected = int(orphans["orphans_managed"])
    dup = checks.get("duplicates")
    if dup and not dup.get("passed") and dup.get("strategy") in ("canonical", "drop"):
        plan.duplicate_strategy = str(dup["strategy"])
        plan.merge_near = bool(dup.get("merge_near"))
        plan.duplicate_groups_expected = int(dup.get("exact_groups", 0)) + (
            int(dup.get("near_groups", 0)) if plan.merge_near else 0)
    return plan


def _record_aliases(settings: Settings, url: str, groups: list[Group]) -> int:
    """``canonical``: list the copies in the canonical row's metadata (rows stay; searches can fold them)."""
    by_part: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        by_part[g.canonical.partition].append(g)
    done = 0
    for key, gs in sorted(by_part.items()):
        with connection(url) as conn:
            lock_partition_xact(conn, key)
            for g in gs:
                aliases = sorted({(m.source_name, m.doc_path, m.source_file) for m in g.others}
                                 | {(sn, dp, "") for sn, dp in g.canonical.aliases})
                value = [{"source_name": sn, "doc_path": dp, **({"source_file": sf} if sf else {})}
                         for sn, dp, sf in aliases]
                done += conn.execute(
                    "UPDATE documents SET metadata = metadata || jsonb_build_object('aliases', %s::jsonb), "
                    "updated_at = now() WHERE id = %s", (Jsonb(value), g.canonical.id)).rowcount
            conn.commit()
    return done


def _drop_copies(settings: Settings, url: str, groups: list[Group], run_id: str) -> tuple[int, int]:
    """``drop``: delete non-canonical rows and their ownership, keep the ledger consistent, and record a
    file whose every row was dropped as quarantined (stage ``validate``) so counts still add up."""
    by_part: dict[str, dict[str, tuple[str, str, str, str]]] = defaultdict(dict)
    for g in groups:
        for m in g.others:
            by_part[m.partition][m.id] = (m.source_name, m.source_file, m.doc_type, g.canonical.source_file)
    return drop_rows(settings, url, by_part, run_id)


def apply_repair(settings: Settings, url: str, plan: RepairPlan, config: ValidationConfig | None = None,
                 run_id: str = "validate-repair", requested_by: str = "") -> dict[str, Any]:
    """Do the database part of ``plan``; the caller then runs ``full`` on ``plan.partitions``
    (and ``plan.never_loaded``)."""
    cfg = config or load_manifest(settings.sources_path).validation
    merged: dict[str, Any] = {"strategy": plan.duplicate_strategy, "groups": 0, "deferred_groups": 0,
                              "aliases_recorded": 0, "rows_dropped": 0, "files_quarantined": 0}
    ready: list[Group] = []
    merging = plan.duplicate_strategy in ("canonical", "drop") and bool(plan.duplicate_groups_expected)
    dcfg = DuplicateConfig(**{**asdict(cfg.duplicates), "strategy": plan.duplicate_strategy,
                              "merge_near": plan.merge_near})
    if merging and plan.keys:
        # Found before any reset: a group touching a partition that is about to be reloaded waits for the
        # reload (which restores every row of its sources) and is merged by the next pass.
        groups, _ = find_groups(settings, url, plan.keys, dcfg)
        todo = [g for g in groups if (g.kind == "exact" or dcfg.merge_near)
                and not (dcfg.strategy == "canonical" and g.aliased)]
        resetting = set(plan.partitions)
        ready = [g for g in todo if not {m.partition for m in g.members} & resetting]
        merged["groups"], merged["deferred_groups"] = len(ready), len(todo) - len(ready)
    reset: dict[str, dict[str, int]] = {}
    for key in plan.partitions:
        reason = "validate --repair: " + ", ".join(plan.reasons.get(key, [])) + " failed"
        reset[key] = reset_partition(settings, url, key, plan.purge_cache_ids, reason, requested_by)
    orphans = delete_orphans(settings, url) if plan.delete_orphans else 0
    if ready and dcfg.strategy == "canonical":
        merged["aliases_recorded"] = _record_aliases(settings, url, ready)
    elif ready:
        merged["rows_dropped"], merged["files_quarantined"] = _drop_copies(settings, url, ready, run_id)
    to_run = sorted(set(plan.partitions) | set(plan.never_loaded))
    return {
        "partitions_reset": sorted(reset),
        "rows_deleted": sum(r["rows_deleted"] for r in reset.values()),
        "cache_entries_purged": sum(r["cache_purged"] for r in reset.values()),
        "orphans_deleted": orphans,
        "duplicates": merged,
        "partitions_to_materialize": to_run,
        "doc_types": sorted({doc_type_of(k) for k in to_run}),
        "next": (f"doc-migrate full {' '.join('--partition ' + k for k in to_run)}" if to_run
                 else "nothing to re-materialize"),
    }


__all__ = ["RepairPlan", "apply_repair", "delete_orphans", "plan_repair", "reset_partition"]
