"""Asset checks: the validation gates of every migration run.

ERROR checks are ``blocking``: when one fails, the step fails and downstream assets of the same run
(``validation_report``) do not materialize. WARN checks report without blocking. Checks are
unpartitioned (per-partition checks are a preview in Dagster 1.13): the ``loaded_rows`` checks
evaluate every loaded partition of the manifest, with sampling where a full pass would cost
(schema: ``validation.schema.sample_per_partition`` rows per partition; retrieval:
``validation.retrieval.per_partition`` fresh embeddings per partition); the ``parsed_docs`` and
``embeddings`` checks look at what the run staged, before anything is paid for or replaced.
"""

# No `from __future__ import annotations`: Dagster reads the context parameter's annotation at definition time.
from typing import Any

import dagster as dg

from ..storage import audit, check_results, ledger
from ..validation.checks import check_staged_chunks, check_staged_embeddings
from ..validation.common import ERROR, timed
from ..validation.config import ValidationConfig
from ..validation.report import ROW_SCOPED, run_check
from .assets import PARTITIONS, embeddings, loaded_rows, parsed_docs
from .resources import MigrationResource
from .tags import PARTITION, RANGE_END, RANGE_START

MAX_FINDINGS_IN_METADATA = 20


def _config(migration: MigrationResource) -> ValidationConfig:
    return migration.manifest.validation


def _loaded_keys(migration: MigrationResource) -> list[str]:
    """Partitions of this code location that have been loaded at least once."""
    keys = list(PARTITIONS.get_partition_keys())
    loaded = ledger.loaded_checksums(migration.settings, migration.url, keys)
    return [k for k in keys if k in loaded]


def _run_keys(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The run's partitions from its tags (single key or range), None for an unpartitioned run."""
    try:
        tags = context.run.tags
    except Exception:  # invoked directly (tests, notebooks): no run, check everything staged
        return None
    keys = list(PARTITIONS.get_partition_keys())
    if tags.get(PARTITION) in keys:
        return [tags[PARTITION]]
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start in keys and end in keys:
        return keys[keys.index(start): keys.index(end) + 1]
    return None


def _result(result: dict[str, Any], **extra: Any) -> dg.AssetCheckResult:
    """A check's dict as an AssetCheckResult: the message is the description, scalars become metadata."""
    metadata: dict[str, Any] = {
        "message": result["message"],
        "total_findings": result["total_findings"],
        "findings": dg.MetadataValue.json(result["findings"][:MAX_FINDINGS_IN_METADATA]),
        "seconds": result.get("seconds", 0.0),
    }
    if result.get("partitions"):
        metadata["partitions_to_repair"] = dg.MetadataValue.json(result["partitions"])
    skip = {"name", "passed", "severity", "message", "findings", "total_findings", "partitions", "seconds"}
    for key, value in result.items():
        if key not in skip and isinstance(value, bool | int | float | str) and value is not None:
            metadata[key] = value
    metadata.update(extra)
    severity = dg.AssetCheckSeverity.ERROR if result["severity"] == ERROR else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=bool(result["passed"]), severity=severity,
                               description=str(result["message"])[:1000], metadata=metadata)


# Cheap SQL aggregates that catch tampering anywhere (a deleted or edited row): every run checks
# every loaded partition with them. The costly checks look at what the run loaded: links and
# re-hashing sources at its partitions, and the row-level ones (vectors, pandera, retrieval,
# SimHash: report.ROW_SCOPED) at the rows it wrote, compared with everything else where they
# compare; `doc-migrate validate` runs all over everything.
WHOLE_DATABASE_CHECKS = {"counts", "checksums", "orphans"}


def _keys_to_check(name: str, context: dg.AssetCheckExecutionContext | None,
                   migration: MigrationResource) -> list[str]:
    """The partitions a check looks at: all loaded ones outside a run or for cheap checks, else the
    partitions the run loaded."""
    run_id = _run_id(context)
    if not run_id or name in WHOLE_DATABASE_CHECKS:
        return _loaded_keys(migration)
    return ledger.run_loaded_partitions(migration.settings, migration.url, run_id)


def _run_id(context: dg.AssetCheckExecutionContext | None) -> str | None:
    try:
        return context.run.run_id if context is not None else None
    except Exception:  # invoked directly (tests, notebooks): there is no run
        return None


def _loaded_check(name: str, migration: MigrationResource,
                  context: dg.AssetCheckExecutionContext | None = None) -> dg.AssetCheckResult:
    keys = _keys_to_check(name, context, migration)
    if not keys and context is not None and name not in WHOLE_DATABASE_CHECKS:
        return dg.AssetCheckResult(passed=True, description="this run loaded no partition: nothing changed to check",
                                   metadata={"partitions_checked": 0})

    run_id = _run_id(context)

    def compute() -> dict[str, Any]:
        return run_check(name, migration.settings, migration.url, keys, config=_config(migration),
                         manifest=migration.manifest, embedder=migration.embedder if name == "retrieval" else None,
                         require_loaded=False, written_by=run_id if name in ROW_SCOPED else None)

    if run_id is None:
        return _result(compute(), partitions_checked=len(keys))
    # The whole result (findings capped at validation.max_findings) for the run's validation_report to reuse.
    with check_results.recording(migration.settings, migration.url, run_id, name) as stored:
        stored.update(compute())
    return _result(stored, partitions_checked=len(keys))


# The checks of loaded_rows, one row each: (Dagster check name, validation check, blocking, description).
# Blocking checks are ERROR gates; the others report (WARN) without stopping the run.
LOADED_ROWS_CHECKS: list[tuple[str, str, bool, str]] = [
    ("rows_match_ledger", "counts", True,
     "Every loaded partition owns exactly the rows and documents its ledger records, all present in documents; "
     "every scanned file is loaded or quarantined."),
    ("content_matches_checksums", "checksums", True,
     "sha256 of every row's content equals the hash recorded at load (no truncated or edited rows)."),
    ("embeddings_well_formed", "embeddings", True,
     "No NULL, wrong-dimension, NaN/Inf or zero embeddings among the pipeline's rows."),
    ("rows_conform_to_schema", "schema", True,
     "Sampled rows conform to their doc type's pandera schema: types, token limits, vector dims and unit norm, "
     "required metadata."),
    ("retrieval_smoke_test", "retrieval", True,
     "Sampled chunks, embedded afresh, find themselves first through the HNSW (halfvec) query form; fails below "
     "the configured recall@1."),
    ("no_duplicate_content", "duplicates", False,
     "Exact (sha256) and near (SimHash) duplicate content per doc type (WARN)."),
    ("cross_references_resolve", "links", False,
     "Links between corpus documents (Markdown, RST :doc:, HTML, OpenAPI $ref) lead to migrated documents (WARN)."),
    ("no_orphan_rows", "orphans", True,
     "No row in documents outside every partition's ownership (WARN, or ERROR when validation.orphans.severity "
     "says so; only ERROR blocks)."),
    ("sources_unchanged", "source_drift", False,
     "Source files on disk still hash to the sha256 recorded in their rows (WARN: the next run reloads drifted "
     "files)."),
]


def loaded_rows_check(check_name: str, validation_check: str, blocking: bool,
                      description: str) -> dg.AssetChecksDefinition:
    """One asset check of loaded_rows that runs validation check ``validation_check``."""

    @dg.asset_check(asset=loaded_rows, name=check_name, blocking=blocking, description=description)
    def _check(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
        return _loaded_check(validation_check, migration, context)

    return _check


LOADED_CHECKS = [loaded_rows_check(*row) for row in LOADED_ROWS_CHECKS]


@dg.asset_check(asset=loaded_rows, name="partition_not_rolled_back", blocking=False,
                description="Fails (WARN) while a partition stays rolled back; re-materialize it to clear.")
def partition_not_rolled_back(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    keys = audit.rolled_back_partitions(migration.settings, migration.url)
    return dg.AssetCheckResult(passed=not keys, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"rolled_back_partitions": dg.MetadataValue.json(keys)})


@dg.asset_check(asset=parsed_docs, blocking=True,
                description="The run's staged chunks are loadable: non-blank, 1..8191 tokens, hash matches, base "
                            "metadata present (before any embedding is paid for).")
def staged_chunks_loadable(context: dg.AssetCheckExecutionContext,
                           migration: MigrationResource) -> dg.AssetCheckResult:
    cfg = _config(migration)
    return _result(timed("staged_chunks", ERROR, lambda: check_staged_chunks(
        migration.settings, migration.url, _run_keys(context), cfg)))


@dg.asset_check(asset=embeddings, blocking=True,
                description="Every staged chunk of the run has a vector of the configured dims, finite, non-zero, "
                            "unit length (before rows are replaced).")
def staged_chunks_embedded(context: dg.AssetCheckExecutionContext,
                           migration: MigrationResource) -> dg.AssetCheckResult:
    cfg = _config(migration)
    keys = _run_keys(context)
    if keys is not None:  # a partition whose embed step failed is reported as failed and not loaded:
        failed = set(ledger.failed_partitions(migration.settings, migration.url, context.run.run_id))  # others go on
        keys = [k for k in keys if k not in failed]
    return _result(timed("staged_embeddings", ERROR, lambda: check_staged_embeddings(
        migration.settings, migration.url, keys, cfg)))


CHECKS = [*LOADED_CHECKS, partition_not_rolled_back, staged_chunks_loadable, staged_chunks_embedded]
