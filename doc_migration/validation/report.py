"""The validation report: every check over the given partitions, per-doc-type tables and load throughput.

Shared by the ``validation_report`` asset (JSON + HTML under ``<home>/reports``), the Dagster asset
checks and ``doc-migrate validate``. A report ``passed`` when no ERROR check failed; WARN checks
(duplicates, links, orphans by default, source drift, rolled-back partitions) are listed but do not
fail it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..config import ConfigError, Settings
from ..embedding.base import Embedder
from ..manifest import Manifest, load_manifest
from ..storage import audit, ledger
from .checks import (
    check_checksums,
    check_counts,
    check_embeddings,
    check_orphans,
    check_rolled_back,
    check_source_drift,
)
from .common import ERROR, WARN, doc_type_of, timed
from .config import ValidationConfig
from .duplicates import check_duplicates
from .links import check_links
from .retrieval import check_retrieval

__all__ = ["ALL_CHECKS", "build_report", "check_counts", "check_embeddings", "check_orphans", "reuse_stamp",
           "run_check"]

# name -> severity when failing (orphans: from the config)
ALL_CHECKS: dict[str, str] = {
    "counts": ERROR, "checksums": ERROR, "embeddings": ERROR, "schema": ERROR, "retrieval": ERROR,
    "duplicates": WARN, "links": WARN, "orphans": WARN, "source_drift": WARN, "rolled_back": WARN,
}


# Checks whose result does not depend on the partitions asked for.
KEY_INDEPENDENT = {"orphans"}
# The costly row-level checks: in a migration run they look at the rows the run wrote (the rows it left
# alone were checked by the run that wrote them); the cheap aggregates (counts, checksums, orphans)
# still cover every row, and `doc-migrate validate` runs everything over everything.
ROW_SCOPED = {"embeddings", "schema", "retrieval", "duplicates"}


def reuse_stamp(name: str, settings: Settings, keys: list[str], config: ValidationConfig,
                written_by: str | None = None) -> str:
    """What a check's result depends on besides the database: the partitions it covered, the validation
    settings, the model and the manifest. A result computed earlier in the same run (a Dagster asset check)
    with the same stamp is the result the report would compute, so the report takes it instead of running
    the check a second time."""
    scope = [] if name in KEY_INDEPENDENT else sorted(set(keys))
    rows = written_by if name in ROW_SCOPED else None
    what = [name, scope, *([rows] if rows else []), repr(config), settings.model_name, settings.embedding_dims, settings.pipeline_schema,
            str(settings.sources_path)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def _reusable(name: str, result: Mapping[str, Any] | None, settings: Settings, keys: list[str],
              config: ValidationConfig, written_by: str | None) -> bool:
    if not isinstance(result, Mapping) or result.get("crashed") or result.get("name") != name:
        return False
    if result.get("reuse_stamp") != reuse_stamp(name, settings, keys, config, written_by):
        return False
    # The asset check counts without ``require_loaded``: the same result only when every key was loaded.
    return name != "counts" or result.get("partitions_checked") == len(set(keys))


def _manifest(settings: Settings) -> Manifest | None:
    try:
        return load_manifest(settings.sources_path)
    except ConfigError:
        return None


def _check_schema(settings: Settings, url: str, keys: list[str], config: ValidationConfig,
                  written_by: str | None) -> dict[str, Any]:
    """The pandera check, imported when it runs: pandas and pandera cost 0.6 s to import, which every
    ``doc-migrate`` command (and every re-run of one changed file) would otherwise pay."""
    from .schemas import check_schema

    return check_schema(settings, url, keys, config, written_by)


def run_check(name: str, settings: Settings, url: str, keys: list[str], *, config: ValidationConfig,
              manifest: Manifest | None, embedder: Embedder | None = None,
              require_loaded: bool = True, written_by: str | None = None) -> dict[str, Any]:
    """Run one check by name (timed, crash-safe); used by the report and the Dagster asset checks.
    ``written_by``: a run id; the ROW_SCOPED checks then look only at the rows that run wrote."""
    calls: dict[str, Callable[[], dict[str, Any]]] = {
        "counts": lambda: check_counts(settings, url, keys, config, require_loaded=require_loaded),
        "checksums": lambda: check_checksums(settings, url, keys, config),
        "embeddings": lambda: check_embeddings(settings, url, keys, config, written_by),
        "schema": lambda: _check_schema(settings, url, keys, config, written_by),
        "retrieval": lambda: check_retrieval(settings, url, keys, config, embedder, written_by),
        "duplicates": lambda: check_duplicates(settings, url, keys, config, written_by),
        "links": lambda: check_links(settings, url, keys, manifest, config),
        "orphans": lambda: check_orphans(settings, url, config),
        "source_drift": lambda: check_source_drift(settings, url, keys, manifest, config),
        "rolled_back": lambda: check_rolled_back(settings, url, keys, config),
    }
    severity = config.orphans_severity if name == "orphans" else ALL_CHECKS[name]
    result = timed(name, severity, calls[name])
    result["reuse_stamp"] = reuse_stamp(name, settings, keys, config, written_by)
    if written_by and name in ROW_SCOPED:
        result["scope"] = f"rows written by run {written_by}"
    return result


def _per_doc_type(settings: Settings, url: str, keys: list[str], checks: dict[str, dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    rows, quarantined, loaded = audit.per_doc_type(settings, url, keys)
    stats = {r[0]: r[1:] for r in rows}
    out = []
    for doc_type in sorted({doc_type_of(k) for k in keys}):
        n_rows, docs, files, tokens = stats.get(doc_type, (0, 0, 0, 0))
        failures = {name: int(c.get("findings_by_doc_type", {}).get(doc_type, 0)) for name, c in checks.items()
                    if not c["passed"]}
        out.append({
            "doc_type": doc_type,
            "partitions": sum(1 for k in keys if doc_type_of(k) == doc_type),
            "partitions_loaded": int(loaded.get(doc_type, 0)),
            "rows": int(n_rows), "documents": int(docs), "files": int(files), "tokens": int(tokens),
            "quarantined": int(quarantined.get(doc_type, 0)),
            "failures": sum(failures.values()),
            "failed_checks": sorted(name for name, n in failures.items() if n),
        })
    return out


def _throughput(settings: Settings, url: str, keys: list[str], limit: int = 20) -> dict[str, Any]:
    """Rows written per second per run, from the ledger's loads (newest runs first)."""
    runs = audit.run_throughput(settings, url, keys, limit)
    out = []
    for run_id, partitions, written, chunks, docs, started, committed, seconds, rolled in runs:
        secs = max(float(seconds or 0.0), 1e-3)
        out.append({"run_id": run_id, "partitions": int(partitions), "rows_written": int(written or 0),
                    "chunks": int(chunks or 0), "documents_written": int(docs or 0),
                    "started_at": started.isoformat(), "committed_at": committed.isoformat(),
                    "seconds": round(secs, 3), "rows_per_second": round(int(written or 0) / secs, 1),
                    "rolled_back_partitions": int(rolled)})
    return {"runs": out, "latest_rows_per_second": out[0]["rows_per_second"] if out else None}


def build_report(settings: Settings, url: str, keys: list[str], run_id: str | None, *,
                 embedder: Embedder | None = None, manifest: Manifest | None = None,
                 config: ValidationConfig | None = None, only: list[str] | None = None,
                 reuse: Mapping[str, Mapping[str, Any]] | None = None,
                 written_by: str | None = None) -> dict[str, Any]:
    """Run every check (or ``only`` these) over ``keys``; orphans are global and run once;
    ``written_by`` scopes the ROW_SCOPED checks to the rows that run wrote (see :func:`run_check`).

    ``reuse``: results the run's asset checks already computed, by check name; one whose
    :func:`reuse_stamp` matches (same partitions, same settings) is taken as is (``"reused": true``)."""
    start = time.perf_counter()
    man = manifest if manifest is not None else _manifest(settings)
    cfg = config or (man.validation if man is not None else ValidationConfig())
    checks: dict[str, dict[str, Any]] = {}
    for name in ALL_CHECKS:
        if only is None or name in only:
            earlier = (reuse or {}).get(name)
            if earlier is not None and _reusable(name, earlier, settings, keys, cfg, written_by):
                checks[name] = {**earlier, "reused": True}
            else:
                checks[name] = run_check(name, settings, url, keys, config=cfg, manifest=man, embedder=embedder,
                                         written_by=written_by)
    errors = [n for n, c in checks.items() if not c["passed"] and c["severity"] == ERROR]
    warnings = [n for n, c in checks.items() if not c["passed"] and c["severity"] != ERROR]
    st = ledger.status(settings, url, keys)
    retrieval = checks.get("retrieval", {})
    return {
        "run_id": run_id,
        "keys": list(keys),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": not errors,
        "errors": errors,
        "warnings": warnings,
        "checks": checks,
        "totals": {
            "rows": st["rows"], "documents_loaded": st["documents_loaded"], "files": st["files"],
            "quarantined": len(st["quarantined"]), "partitions": len(keys),
            "partitions_loaded": st["partitions_loaded"],
            "checks": len(checks), "checks_passed": sum(1 for c in checks.values() if c["passed"]),
            "checks_failed": len(errors) + len(warnings),
            "recall_at_1": retrieval.get("recall_at_1"),
            "duplicate_groups": checks.get("duplicates", {}).get("total_findings"),
            "dangling_links": checks.get("links", {}).get("total_findings"),
            "orphans": checks.get("orphans", {}).get("total_findings"),
        },
        "per_doc_type": _per_doc_type(settings, url, keys, checks),
        "throughput": _throughput(settings, url, keys),
        "quarantined": st["quarantined"],
        "settings": {"embedding_model": settings.model_name, "embedding_dims": settings.embedding_dims,
                     "pipeline_schema": settings.pipeline_schema, "manifest": str(settings.sources_path)},
        "config": {"max_findings": cfg.max_findings, "seed": cfg.seed,
                   "sample_per_partition": cfg.sample_per_partition,
                   "retrieval_per_partition": cfg.retrieval_per_partition, "min_recall_at_1": cfg.min_recall_at_1,
                   "duplicate_strategy": cfg.duplicates.strategy, "simhash_bits": cfg.duplicates.simhash_bits,
                   "orphans_severity": cfg.orphans_severity},
        "seconds": round(time.perf_counter() - start, 3),
    }
