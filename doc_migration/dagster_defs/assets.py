"""The five assets of the migration. Bulky data lives in PostgreSQL, not in IO managers: each asset
returns a MaterializeResult with metadata, so range runs and Kubernetes pods need no shared disk.

Every asset handles the partitions of its run one by one; a partition that fails is recorded and
skipped downstream, the others go on; the run fails at the end if any partition failed.
"""


import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
from dagster import AssetExecutionContext

from ..embedding.pricing import estimate_cost
from ..pipeline import interrupt, progress
from ..pipeline.embed import EmbedResult, embed_partition
from ..pipeline.scan import scan
from ..pipeline.stage import stage_partition
from ..storage import check_results, ledger
from ..storage.database import drop_vector_index_for_rewrite, ensure_vector_index, explain_error
from ..storage.loading import load_partition
from ..storage.scans import known_digests, record_scans
from ..validation.html import render_html
from ..validation.report import build_report
from .partitions import build_partitions
from .resources import MigrationResource

PARTITIONS = build_partitions()
POLICY = dg.BackfillPolicy.single_run()
OWNERS = ["team:doc-platform"]
GROUP = "doc_migration"
CODE_VERSION = "1"


def k8s_resources(cpu: str, memory: str) -> dict[str, Any]:
    """Per-step pod size under the k8s executor (ignored by other executors)."""
    return {"dagster-k8s/config": {"container_config": {"resources": {
        "requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}}}}

PROGRESS_LOG_SECONDS = 10.0


@contextmanager
def progress_in_run_log(context: AssetExecutionContext, stages: set[str],
                        every: float = PROGRESS_LOG_SECONDS) -> Iterator[None]:
    """Mirror this step's ``progress.report`` calls into the run log at most every ``every`` seconds per
    (stage, unit), plus each count's end, and say "still working" when nothing was reported for
    ``every`` seconds: a long parse or embedding step must not look frozen in the UI.

    Progress sinks are process-global: only ``stages`` are taken (another step's reports are not this
    step's), and the sink is removed however the step ends."""
    lock = threading.Lock()
    started = time.monotonic()
    latest: dict[tuple[str, str], tuple[int, int]] = {}
    logged_at: dict[tuple[str, str], float] = {}
    last_line = [started]
    stop = threading.Event()

    def line(stage: str, unit: str, done: int, total: int, prefix: str = "") -> None:
        context.log.info(f"{prefix}{stage}: {done}/{total} {unit} ({time.monotonic() - started:.0f} s)")
        last_line[0] = time.monotonic()

    def sink(stage: str, done: int, total: int, unit: str) -> None:
        if stage not in stages:
            return
        key = (stage, unit)
        with lock:
            latest[key] = (done, total)
            now = time.monotonic()
            if done >= total or now - logged_at.get(key, float("-inf")) >= every:  # first one at once
                logged_at[key] = now
                line(stage, unit, done, total)

    def heartbeat() -> None:
        while not stop.wait(every / 2):
            with lock:
                if time.monotonic() - last_line[0] >= every:
                    unfinished = [(k, v) for k, v in latest.items() if v[0] < v[1]]
                    if unfinished:
                        for (stage, unit), (done, total) in unfinished:
                            line(stage, unit, done, total, prefix="still working: ")
                    else:
                        context.log.info(f"still working: {', '.join(sorted(stages))} "
                                         f"({time.monotonic() - started:.0f} s)")
                        last_line[0] = time.monotonic()

    progress.add_sink(sink)
    beat = threading.Thread(target=heartbeat, name="progress-log", daemon=True)
    beat.start()
    try:
        yield
    finally:
        progress.remove_sink(sink)
        stop.set()
        beat.join(timeout=every)


def per_partition_metadata(context: AssetExecutionContext, by_key: dict[str, dict[str, Any]],
                           totals: dict[str, Any]) -> dg.MaterializeResult:
    """One materialization per partition of the run, each with its own facts (``add_asset_metadata``
    with ``partition_key``); MaterializeResult metadata would be copied onto every partition, so the
    run's totals go to the run log instead."""
    for key in context.partition_keys:
        context.add_asset_metadata(by_key.get(key, {"status": "not processed"}), partition_key=key)
    context.log.info(f"{context.assets_def.key.to_user_string()} run totals: "
                     f"{json.dumps(totals, default=str, sort_keys=True)}")
    return dg.MaterializeResult()


def _failed(failed: list[str]) -> dict[str, dict[str, Any]]:
    return {k: {"status": "failed", "failed": True} for k in failed}


T = TypeVar("T")


def _each_partition(context: AssetExecutionContext, migration: MigrationResource, stage: str,
                    fn: Callable[[str], T], workers: int = 1) -> tuple[dict[str, T], list[str]]:
    """Run ``fn`` per partition of the run, skipping those an earlier stage failed, recording failures.

    With ``workers`` > 1 that many partitions run at once (each in its own transaction), which
    hides per-partition round trips and lets the client and PostgreSQL work at the same time.
    """
    keys = list(context.partition_keys)
    failed_before = ledger.failed_partitions(migration.settings, migration.url, context.run_id)
    results: dict[str, T] = {}
    failed: list[str] = []
    todo = [k for k in keys if k not in failed_before]
    failed.extend(k for k in keys if k in failed_before)
    done = len(failed)

    def finish(key: str, future: Future[T]) -> None:
        nonlocal done
        try:
            results[key] = future.result()
        except Exception as exc:  # recorded, then the next partition goes on
            message = explain_error(exc, migration.settings, migration.url)
            context.log.error(f"partition {key} failed in {stage}: {message}")
            ledger.record_failure(migration.settings, migration.url, context.run_id, key, stage, message)
            failed.append(key)
        done += 1
        progress.report(stage, done, len(keys))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"{stage}-partition") as pool:
        running: dict[Future[T], str] = {}
        try:
            for key in todo:
                while len(running) >= max(1, workers):
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        finish(running.pop(future), future)
                interrupt.check()  # a stop lets the partitions in flight commit, and starts no new one
                running[pool.submit(fn, key)] = key
        finally:
            for future in list(running):
                future.exception()  # wait
                finish(running.pop(future), future)
    order = {k: i for i, k in enumerate(keys)}
    failed.sort(key=order.__getitem__)
    return {k: results[k] for k in keys if k in results}, failed


@dg.asset(
    partitions_def=PARTITIONS, backfill_policy=POLICY, group_name=GROUP, owners=OWNERS, code_version=CODE_VERSION,
    kinds={"python", "filesystem"},
    description="Files of each partition (doc_type × shard) listed from the source manifest, with sha256 checksums.",
)
def source_manifest(context: AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
    start = time.perf_counter()
    keys = list(context.partition_keys)
    with progress_in_run_log(context, {"scan"}):
        scans = scan(migration.settings, migration.manifest, keys,
                     known_digests(migration.settings, migration.url, keys))
        record_scans(migration.settings, migration.url, scans, context.run_id)
        progress.report("scan", len(keys), len(keys))
    by_key = {k: {"files": s.files, "bytes": s.bytes, "checksum": s.checksum,
                  "refused_at_scan": sum(1 for i, _ in s.items if i.refusal)} for k, s in scans.items()}
    return per_partition_metadata(context, by_key, {
        "partitions": len(keys),
        "files": sum(s.files for s in scans.values()),
        "bytes": sum(s.bytes for s in scans.values()),
        "refused_at_scan": sum(m["refused_at_scan"] for m in by_key.values()),
        "seconds": round(time.perf_counter() - start, 3),
    })


@dg.asset(
    deps=[source_manifest], partitions_def=PARTITIONS, backfill_policy=POLICY, group_name=GROUP, owners=OWNERS,
    code_version=CODE_VERSION, kinds={"python", "postgres"}, op_tags=k8s_resources("2", "3Gi"),
    description="The new and changed files of changed partitions parsed and chunked (cl100k tokens) into the "
                "pipeline's staging tables (unchanged files keep their rows); "
                "bad files are quarantined with a reason.",
)
def parsed_docs(context: AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
    start = time.perf_counter()
    files = progress.Tally("parse", "files")
    # Two partitions at once: while one waits for its last file or commits, the other keeps the
    # parser processes busy.
    with progress_in_run_log(context, {"parse"}):
        results, failed = _each_partition(context, migration, "parse", lambda key: stage_partition(
            migration.settings, migration.manifest, migration.url, key, context.run_id, migration.parallel,
            tally=files), workers=min(2, migration.parallel))
    quarantined = [q for r in results.values() for q in r.quarantined]
    for q in quarantined:
        context.log.warning(f"quarantined {q['doc_type']}/{q['path']}: {q['reason']}")
    by_key: dict[str, dict[str, Any]] = {k: {
        "status": r.status, "files": r.files, "files_parsed": r.files_parsed, "files_deleted": r.files_deleted,
        "incremental": r.incremental, "documents": r.documents, "chunks": r.chunks,
        "quarantined": len(r.quarantined), "quarantine": dg.MetadataValue.json(r.quarantined[:200]),
        "seconds": round(r.seconds, 3)} for k, r in results.items()}
    return per_partition_metadata(context, {**by_key, **_failed(failed)}, {
        "partitions_staged": sum(1 for r in results.values() if r.status == "staged"),
        "partitions_unchanged": sum(1 for r in results.values() if r.status == "unchanged"),
        "files_parsed": sum(r.files_parsed for r in results.values()),
        "files_deleted": sum(r.files_deleted for r in results.values()),
        "documents": sum(r.documents for r in results.values()),
        "chunks": sum(r.chunks for r in results.values()),
        "quarantined": len(quarantined),
        "failed_partitions": failed,
        "seconds": round(time.perf_counter() - start, 3),
    })


@dg.asset(
    deps=[parsed_docs], partitions_def=PARTITIONS, backfill_policy=POLICY, group_name=GROUP, owners=OWNERS,
    code_version=CODE_VERSION, kinds={"openai", "postgres"}, pool="embeddings", op_tags=k8s_resources("1", "2Gi"),
    description="Vectors for every staged chunk, from the embedding cache or the configured embedder (the offline "
                "embedder's are computed while loading: cheaper than storing them).",
)
def embeddings(context: AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
    start = time.perf_counter()
    model = migration.settings.model_name
    chunks = progress.Tally("embed", "chunks")
    with progress_in_run_log(context, {"embed"}):
        if migration.settings.embed_mode == "batch":
            results, failed = _embed_through_batches(context, migration)
        else:
            embedder = migration.embedder
            results, failed = _each_partition(context, migration, "embed", lambda key: embed_partition(
                migration.settings, migration.url, key, context.run_id, embedder, tally=chunks))
    batch = migration.settings.embed_mode == "batch"
    by_key: dict[str, dict[str, Any]] = {k: {
        "model": model, "dims": migration.settings.embedding_dims, "chunks": r.chunks,
        "chunks_embedded": r.embedded, "cache_hits": r.cache_hits, "carried_over": r.carried,
        "computed_at_load": r.deferred, "tokens": r.tokens, "embed_mode": migration.settings.embed_mode,
        "dollars": round(estimate_cost(r.tokens, model, batch_tokens=r.tokens if batch else 0), 6),
        "requests": r.requests, "retries": r.retries, "seconds": round(r.seconds, 3)} for k, r in results.items()}
    tokens = sum(r.tokens for r in results.values())
    return per_partition_metadata(context, {**by_key, **_failed(failed)}, {
        "model": model,
        "embed_mode": migration.settings.embed_mode,
        "chunks_embedded": sum(r.embedded for r in results.values()),
        "cache_hits": sum(r.cache_hits for r in results.values()),
        "computed_at_load": sum(r.deferred for r in results.values()),
        "tokens": tokens,
        "dollars": round(estimate_cost(tokens, model, batch_tokens=tokens if batch else 0), 6),
        "requests": sum(r.requests for r in results.values()),
        "failed_partitions": failed,
        "seconds": round(time.perf_counter() - start, 3),
    })


def _embed_through_batches(context: AssetExecutionContext,
                           migration: MigrationResource) -> tuple[dict[str, EmbedResult], list[str]]:
    """Batch mode: one set of Batch API batches for all the run's partitions, waited for here (blocking);
    a failure fails every partition of the run (their vectors already stored are kept in the cache)."""
    from ..embedding.batch import BatchConfig
    from ..embedding.factory import require_embedder_config
    from ..pipeline.batch_embed import embed_with_batches
    from .terminal_logger import emit_line

    keys = list(context.partition_keys)
    settings, url = migration.settings, migration.url
    failed_before = ledger.failed_partitions(settings, url, context.run_id)
    todo = [k for k in keys if k not in failed_before]

    def say(line: str) -> None:
        context.log.info(line)
        emit_line(f"doc-migrate: {line}")

    try:
        require_embedder_config(settings)
        cfg = BatchConfig.from_env()
        run = embed_with_batches(settings, url, todo, context.run_id, say=say,
                                 sync_embedder=migration.embedder if cfg.retry == "sync" else None)
    except interrupt.Interrupted:
        raise
    except Exception as exc:
        message = explain_error(exc, settings, url)
        context.log.error(f"batch embedding of {len(todo)} partition(s) failed: {message}")
        for key in todo:
            ledger.record_failure(settings, url, context.run_id, key, "embed", message)
        return {}, keys
    progress.report("embed", len(todo), len(keys))
    return run.results, [k for k in keys if k in failed_before]


@dg.asset(
    deps=[embeddings], partitions_def=PARTITIONS, backfill_policy=POLICY, group_name=GROUP, owners=OWNERS,
    code_version=CODE_VERSION, kinds={"postgres", "pgvector"},
    description="The doc-server's documents rows of each partition, replaced atomically with a ledger entry.",
)
def loaded_rows(context: AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
    start = time.perf_counter()
    embedder = migration.embedder
    if migration.settings.vector_index != "defer":
        dropped = drop_vector_index_for_rewrite(migration.url, migration.settings.pipeline_schema,
                                                list(context.partition_keys), migration.settings.index_rebuild_min_rows)
        if dropped:
            context.log.info(f"new text for {dropped[0]:,} of {dropped[1]:,} rows: the HNSW index is rebuilt after "
                             "the load (faster than maintaining it row by row)")
    with progress_in_run_log(context, {"load"}):
        results, failed = _each_partition(context, migration, "load", lambda key: load_partition(
            migration.settings, migration.url, key, context.run_id, embedder), workers=min(2, migration.parallel))
        index_built = False
        if migration.settings.vector_index != "defer":  # built once, after the first bulk load; then a no-op
            index_built = ensure_vector_index(migration.url, migration.settings.embedding_dims)
    totals: dict[str, Any] = {
        "partitions_loaded": sum(1 for r in results.values() if r.status == "loaded"),
        "partitions_unchanged": sum(1 for r in results.values() if r.status == "unchanged"),
        "rows_inserted": sum(r.inserted for r in results.values()),
        "rows_updated": sum(r.updated for r in results.values()),
        "rows_deleted": sum(r.deleted for r in results.values()),
        "documents_written": sum(r.documents_written for r in results.values()),
        "hnsw_index_built": index_built,
        "failed_partitions": dg.MetadataValue.json(failed),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} partition(s) failed: {', '.join(failed[:20])}; the others were loaded. "
                        "Re-run the same partitions to resume.",
            metadata=totals,
        )
    facts = ledger.partition_facts(migration.settings, migration.url, context.run_id, list(results))
    by_key: dict[str, dict[str, Any]] = {}
    for key, r in results.items():
        f = facts[key]
        by_key[key] = {
            "status": r.status, "dagster/row_count": f["rows"], "rows": f["rows"], "documents": f["documents"],
            "chunks": f["chunks"], "files": f["files"], "quarantined": f["quarantined"],
            "rows_inserted": r.inserted, "rows_updated": r.updated, "rows_deleted": r.deleted,
            "documents_written": r.documents_written, "tokens": f["tokens"], "dollars": round(f["dollars"], 6),
            "load_id": r.load_id if r.load_id is not None else dg.MetadataValue.null(),
            "seconds": round(r.seconds, 3),
        }
    totals["failed_partitions"] = failed
    totals["tokens"] = sum(f["tokens"] for f in facts.values())
    totals["dollars"] = round(sum(f["dollars"] for f in facts.values()), 6)
    return per_partition_metadata(context, by_key, totals)


@dg.asset(
    deps=[loaded_rows], partitions_def=PARTITIONS, backfill_policy=POLICY, group_name=GROUP, owners=OWNERS,
    code_version=CODE_VERSION, kinds={"python", "html"},
    description="Validation of the run's partitions (counts, checksums, vectors, schema, retrieval, duplicates, "
                "links, orphans, drift), written as JSON and as one self-contained HTML page for operators.",
)
def validation_report(context: AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
    # The run's report covers what the run changed (plus the cheap whole-database checks);
    # `doc-migrate validate` reports on everything.
    changed = ledger.run_loaded_partitions(migration.settings, migration.url, context.run_id)
    # The run's asset checks have computed most results already (same partitions, same settings):
    # reuse them rather than validating everything twice.
    report = build_report(migration.settings, migration.url, changed or list(context.partition_keys),
                          context.run_id, embedder=migration.embedder, manifest=migration.manifest,
                          only=None if changed else ["counts", "checksums", "orphans", "rolled_back"],
                          reuse=check_results.for_run(migration.settings, migration.url, context.run_id),
                          written_by=context.run_id)
    folder = migration.settings.home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"validation-{context.run_id}.json"
    html_path = folder / f"validation-{context.run_id}.html"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    metadata: dict[str, Any] = {
        "report": dg.MetadataValue.path(str(path)),
        "html_report": dg.MetadataValue.path(str(html_path)),
        "passed": report["passed"],
        "errors": len(report["errors"]),
        "warnings": len(report["warnings"]),
        "failed_checks": dg.MetadataValue.json({"errors": report["errors"], "warnings": report["warnings"]}),
        "rows": report["totals"]["rows"],
        "documents": report["totals"]["documents_loaded"],
        "quarantined": report["totals"]["quarantined"],
        "seconds": report["seconds"],
    }
    if report["totals"].get("recall_at_1") is not None:
        metadata["recall_at_1"] = float(report["totals"]["recall_at_1"])
    metadata["summary"] = dg.MetadataValue.md(checks_markdown(report["checks"]))
    # The run's totals over all its partitions (each partition's materializations carry only their own).
    run = ledger.run_summary(migration.settings, migration.url, [context.run_id], list(context.partition_keys))
    metadata["run_totals"] = dg.MetadataValue.json({k: run[k] for k in RUN_TOTALS if k in run})
    return dg.MaterializeResult(metadata=metadata)


RUN_TOTALS = ("partitions", "partitions_loaded", "documents_loaded", "documents_unchanged", "chunks", "rows_written",
              "rows_inserted", "rows_updated", "rows_deleted", "chunks_embedded", "tokens_sent",
              "estimated_dollars", "failed_partitions")


def _md_cell(value: Any) -> str:
    """Table cells are one line; a ``|`` in a message would split the row."""
    return " ".join(str(value).split()).replace("|", "\\|")


def checks_markdown(checks: dict[str, dict[str, Any]]) -> str:
    """One row per check (name, severity, passed, message): the report at a glance in the UI."""
    lines = ["| check | severity | passed | message |", "| --- | --- | --- | --- |"]
    for name, c in checks.items():
        passed = "yes" if c.get("passed") else "**no**"
        lines.append(f"| {_md_cell(name)} | {_md_cell(c.get('severity', ''))} | {passed} | "
                     f"{_md_cell(str(c.get('message', ''))[:300])} |")
    return "\n".join(lines)


ASSETS = [source_manifest, parsed_docs, embeddings, loaded_rows, validation_report]
