"""Asset checks: the validation gates of every migration run.

ERROR checks are ``blocking``: when one fails, the step fails and downstream assets of the same run
(``validation_report``) do not materialize. WARN checks report without blocking. Checks are
unpartitioned (per-partition checks are a preview in Dagster 1.13): the ``loaded_rows`` checks
evaluate every loaded partition of the manifest, with sampling where a full pass would cost
(schema: ``validation.schema.sample_per_partition`` rows per partition; retrieval:
``validation.retrieval.per_partition`` fresh embeddings per partition); the ``parsed_docs`` and
``embeddings`` checks look at what the run staged, before anything is paid for or replaced.
"""

import json
import time
from typing import Any

import dagster as dg
from psycopg import sql

from ..storage.database import connection
from ..storage.ledger import run_loaded_partitions
from ..validation.checks import check_staged_chunks, check_staged_embeddings, rolled_back_partitions
from ..validation.common import ERROR, timed
from ..validation.config import ValidationConfig, load_validation_config
from ..validation.report import run_check
from .assets import PARTITIONS, embeddings, loaded_rows, parsed_docs
from .resources import MigrationResource
from .tags import PARTITION, RANGE_END, RANGE_START

MAX_FINDINGS_IN_METADATA = 20


def _config(migration: MigrationResource) -> ValidationConfig:
    return load_validation_config(migration.settings.sources_path)


def _loaded_keys(migration: MigrationResource) -> list[str]:
    """Partitions of this code location that have been loaded at least once."""
    s = sql.Identifier(migration.settings.pipeline_schema)
    with connection(migration.url) as conn:
        loaded = {r[0] for r in conn.execute(sql.SQL("SELECT partition_key FROM {}.partition_state").format(s))}
    return [k for k in PARTITIONS.get_partition_keys() if k in loaded]


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
# every loaded partition with them. The costly checks (vectors, pandera, retrieval, SimHash, links,
# re-hashing sources) look at what the run loaded; `doc-migrate validate` runs all over everything.
WHOLE_DATABASE_CHECKS = {"counts", "checksums", "orphans"}


def _keys_to_check(name: str, context: dg.AssetCheckExecutionContext | None,
                   migration: MigrationResource) -> list[str]:
    """The partitions a check looks at: all loaded ones outside a run or for cheap checks, else the
    partitions the run loaded."""
    try:
        run_id = context.run.run_id if context is not None else None
    except Exception:  # invoked directly (tests, notebooks): there is no run
        run_id = None
    if not run_id or name in WHOLE_DATABASE_CHECKS:
        return _loaded_keys(migration)
    return run_loaded_partitions(migration.settings, migration.url, run_id)


def _loaded_check(name: str, migration: MigrationResource,
                  context: dg.AssetCheckExecutionContext | None = None) -> dg.AssetCheckResult:
    keys = _keys_to_check(name, context, migration)
    if not keys and context is not None and name not in WHOLE_DATABASE_CHECKS:
        return dg.AssetCheckResult(passed=True, description="this run loaded no partition: nothing changed to check",
                                   metadata={"partitions_checked": 0})
    result = run_check(name, migration.settings, migration.url, keys, config=_config(migration),
                       manifest=migration.manifest, embedder=migration.embedder if name == "retrieval" else None,
                       require_loaded=False)
    # The whole result (findings capped at validation.max_findings) for the run's validation_report to reuse.
    full = json.loads(json.dumps(result, default=str))
    return _result(result, partitions_checked=len(keys), **{RESULT_KEY: dg.MetadataValue.json(full)})


RESULT_KEY = "check_result"
REUSE_WAIT_SECONDS = 300.0  # a check step that died without an event must not stall the report for long
_STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.STEP_SKIPPED, dg.DagsterEventType.STEP_UP_FOR_RETRY}


def run_check_results(context: dg.AssetExecutionContext, wait_seconds: float = REUSE_WAIT_SECONDS,
                      poll_seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    """The full results of the ``loaded_rows`` checks this run has evaluated, by check name, for the
    validation report to reuse instead of running every check a second time (it doubled the cost of
    validation). Non-blocking checks may still be running in parallel steps: those are waited for
    (recomputing one beside itself would only split the CPU); checks that have not started are left
    to the report. Any problem reading the event log means nothing is reused, never a failed report."""
    step_suffixes = {f"_{next(iter(c.check_specs)).name}" for c in CHECKS}
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            records = context.instance.get_records_for_run(
                context.run_id, of_type={dg.DagsterEventType.ASSET_CHECK_EVALUATION, *_STEP_EVENTS}).records
        except Exception as exc:  # an event log we cannot read: the report computes every check itself
            context.log.warning(f"cannot read this run's asset check results ({type(exc).__name__}); "
                                "the report runs every check itself")
            return {}
        results: dict[str, dict[str, Any]] = {}
        running: set[str] = set()
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                value = getattr(event.event_specific_data, "metadata", {}).get(RESULT_KEY)
                data = getattr(value, "data", None)
                if isinstance(data, dict) and isinstance(data.get("name"), str):
                    results[data["name"]] = data
            elif event.step_key and event.step_key.endswith(tuple(step_suffixes)):
                if event.event_type == dg.DagsterEventType.STEP_START:
                    running.add(event.step_key)
                else:
                    running.discard(event.step_key)
        if not running or time.monotonic() >= deadline:
            return results
        time.sleep(poll_seconds)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="Every loaded partition owns exactly the rows and documents its ledger records, all "
                            "present in documents; every scanned file is loaded or quarantined.")
def rows_match_ledger(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("counts", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="sha256 of every row's content equals the hash recorded at load (no truncated or "
                            "edited rows).")
def content_matches_checksums(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("checksums", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="No NULL, wrong-dimension, NaN/Inf or zero embeddings among the pipeline's rows.")
def embeddings_well_formed(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("embeddings", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="Sampled rows conform to their doc type's pandera schema: types, token limits, vector "
                            "dims and unit norm, required metadata.")
def rows_conform_to_schema(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("schema", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="Sampled chunks, embedded afresh, find themselves first through the HNSW (halfvec) "
                            "query form; fails below the configured recall@1.")
def retrieval_smoke_test(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("retrieval", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=False,
                description="Exact (sha256) and near (SimHash) duplicate content per doc type (WARN).")
def no_duplicate_content(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("duplicates", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=False,
                description="Links between corpus documents (Markdown, RST :doc:, HTML, OpenAPI $ref) lead to "
                            "migrated documents (WARN).")
def cross_references_resolve(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("links", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="No row in documents outside every partition's ownership (WARN, or ERROR when "
                            "validation.orphans.severity says so; only ERROR blocks).")
def no_orphan_rows(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("orphans", migration, context)


@dg.asset_check(asset=loaded_rows, blocking=False,
                description="Source files on disk still hash to the sha256 recorded in their rows (WARN: the next "
                            "run reloads drifted files).")
def sources_unchanged(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    return _loaded_check("source_drift", migration, context)


@dg.asset_check(asset=loaded_rows, name="partition_not_rolled_back", blocking=False,
                description="Fails (WARN) while a partition stays rolled back; re-materialize it to clear.")
def partition_not_rolled_back(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
    keys = rolled_back_partitions(migration.settings, migration.url)
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
    return _result(timed("staged_embeddings", ERROR, lambda: check_staged_embeddings(
        migration.settings, migration.url, _run_keys(context), cfg)))


CHECKS = [rows_match_ledger, content_matches_checksums, embeddings_well_formed, rows_conform_to_schema,
          retrieval_smoke_test, no_duplicate_content, cross_references_resolve, no_orphan_rows, sources_unchanged,
          partition_not_rolled_back, staged_chunks_loadable, staged_chunks_embedded]
