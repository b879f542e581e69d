"""``doc-migrate``: the operator's command line. It drives the same Dagster assets as the UI.

Exit codes: 0 ok; 1 some partitions failed; 2 bad configuration or usage; 3 validation failed;
4 another run holds a partition's lock; 5 the database is unreachable (retry later);
130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings
from .embedding.breaker import UNREACHABLE
from .faults import crash_point
from .manifest import Manifest, load_manifest, split_partition_key
from .redaction import redact

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_VALIDATION, EXIT_BUSY, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = (
    0, 1, 2, 3, 4, 5, 130)


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print(human)


def _settings(args: argparse.Namespace) -> tuple[Settings, Manifest]:
    if args.sources:
        os.environ["DOC_MIGRATION_SOURCES"] = str(Path(args.sources).resolve())
    if getattr(args, "embed_mode", None):  # the Dagster resource reads it from the environment too
        os.environ["DOC_MIGRATION_EMBED_MODE"] = args.embed_mode
    settings = Settings.from_env(args.sources)
    manifest = load_manifest(settings.sources_path)
    manifest.check_paths()
    return settings, manifest


def _unknown(kind: str, names: Sequence[str], known: Sequence[str], listing: str) -> ConfigError:
    """The error for names not in ``known``, each with its nearest known name when one is close."""
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ConfigError(f"unknown {kind} {', '.join(parts)}; {listing}")


def _select(manifest: Manifest, partitions: Sequence[str] | None, doc_types: Sequence[str] | None) -> list[str]:
    keys = manifest.partition_keys()
    if partitions:
        unknown = [p for p in partitions if p not in keys]
        if unknown:
            raise _unknown("partition", unknown, keys, f"this manifest has {len(keys)} partitions "
                           f"({keys[0]} … {keys[-1]}; `doc-migrate config` shows the doc types and shards)"
                           if keys else "this manifest has no partitions")
        keys = [k for k in keys if k in set(partitions)]
    if doc_types:
        known = sorted(manifest.doc_types())
        missing = [d for d in doc_types if d not in known]
        if missing:
            raise _unknown("doc type", missing, known, f"known: {', '.join(known)}")
        keys = [k for k in keys if split_partition_key(k)[0] in set(doc_types)]
    return keys


def _changed_span(settings: Settings, manifest: Manifest, url: str, keys: list[str]) -> list[str]:
    """The selected partitions from the first to the last one whose files changed since its last
    load (a make-style skip): an unchanged re-run starts no Dagster run at all, and the unchanged
    partitions between changed ones cost one cheap no-op each instead of a run per gap."""
    from .pipeline.scan import scan
    from .storage.ledger import loaded_checksums
    from .storage.scans import known_digests

    scans = scan(settings, manifest, keys, known_digests(settings, url, keys))
    loaded = loaded_checksums(settings, url, keys)
    changed = [i for i, k in enumerate(keys) if loaded.get(k) != scans[k].checksum]
    return keys[changed[0]:changed[-1] + 1] if changed else []


def _ranges(all_keys: list[str], selected: list[str]) -> list[tuple[str, str]]:
    """Contiguous key ranges: each becomes one Dagster run (a run per partition costs seconds)."""
    chosen = set(selected)
    out: list[tuple[str, str]] = []
    start: str | None = None
    prev: str | None = None
    for key in all_keys:
        if key in chosen:
            start = start or key
            prev = key
        elif start is not None:
            assert prev is not None
            out.append((start, prev))
            start = None
    if start is not None and prev is not None:
        out.append((start, prev))
    return out


LOCAL_INSTANCE_HEADER = "# Local instance of doc-migrate (SQLite)."
# No compute-log capture: the CLI prints what matters itself, and the capture's helper processes
# (Dagster's watch_orphans) would print stack traces on the operator's Ctrl-C, which reaches them too.
LOCAL_INSTANCE_YAML = (f"{LOCAL_INSTANCE_HEADER} See dagster.yaml at the repo root.\n"
                       "telemetry:\n  enabled: false\n"
                       "compute_logs:\n  module: dagster._core.storage.noop_compute_log_manager\n"
                       "  class: NoOpComputeLogManager\n")


def _dagster_instance(settings: Settings) -> Any:
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.home / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        current = config.read_text(encoding="utf-8") if config.exists() else None
        # Ours (by its header) and out of date, or absent: (re)written; an operator's own file is kept.
        if current is None or current != LOCAL_INSTANCE_YAML and current.startswith(LOCAL_INSTANCE_HEADER):
            config.write_text(LOCAL_INSTANCE_YAML, encoding="utf-8")
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


OWNER_HOST, OWNER_PID = "doc_migration/cli_host", "doc_migration/cli_pid"


def _owner_tags() -> dict[str, str]:
    """Which process runs a `full` run: a later `full` can tell a run whose process died (kill -9,
    OOM) from one still running, and mark only the dead one failed."""
    import socket

    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}


def _fail_abandoned_runs(instance: Any) -> list[tuple[str, int]]:
    """Runs of this machine's `doc-migrate full` left STARTED by a process that no longer exists
    (Dagster cannot know that the in-process run died): reported failed, so the UI and
    `dagster run list` do not show them running forever. A run of a live process is never touched."""
    import socket

    import dagster as dg

    host = socket.gethostname()
    marked: list[tuple[str, int]] = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                                   tags={OWNER_HOST: host}))
    for run in runs:
        try:
            pid = int(run.tags.get(OWNER_PID, ""))
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        instance.report_run_failed(run, message=f"the doc-migrate process (pid {pid}) that ran it no longer exists "
                                                "(killed); marked failed by the next `doc-migrate full`")
        marked.append((str(run.run_id), pid))
    return marked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class ForeignRowsFound(Exception):
    """The database holds rows in this manifest's partitions that it does not produce (exit 3)."""


@dataclass
class RunOutcome:
    """What the Dagster runs of one ``full`` did, read from their public results."""

    run_ids: list[str] = field(default_factory=list)
    success: bool = True
    failed_steps: list[str] = field(default_factory=list)
    failed_checks: list[dict[str, str]] = field(default_factory=list)  # blocking ERROR checks that failed
    step_errors: list[str] = field(default_factory=list)  # failures of steps that are not checks
    error: BaseException | None = None


def _read_result(result: Any, outcome: RunOutcome, check_steps: set[str]) -> None:
    """Failed ERROR checks (exit 3, with their message) and failed steps, from the run's public result."""
    import dagster as dg

    outcome.run_ids.append(result.run_id)
    outcome.success = outcome.success and bool(result.success)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            meta = evaluation.metadata or {}
            message = getattr(meta.get("message"), "value", None) or evaluation.description or "failed"
            outcome.failed_checks.append({"check": evaluation.check_name, "message": str(message)})
    for event in result.get_step_failure_events():
        key = event.step_key or "?"
        outcome.failed_steps.append(key)
        if key not in check_steps:
            error = getattr(event.step_failure_data, "error", None)
            text = (getattr(error, "message", "") or "").strip().splitlines()
            outcome.step_errors.append(f"{key}: {text[0] if text else 'failed'}")


def _prune_command(args: argparse.Namespace) -> str:
    """The prune command for the manifest this command was given, as the operator would type it."""
    sources = f"--sources {args.sources} " if getattr(args, "sources", None) else ""
    return f"doc-migrate {sources}prune --foreign"


def _foreign(settings: Settings, manifest: Manifest, url: str) -> list[Any]:
    from .storage.maintenance import foreign_rows

    return foreign_rows(settings, url, {k: manifest.source_names_for(k) for k in manifest.partition_keys()},
                        str(settings.sources_path))


def _run_migrate_job(args: argparse.Namespace, settings: Settings, manifest: Manifest, migration: Any,
                     run_keys: list[str], display: Any, lock_conn: Any) -> RunOutcome:
    """The ``migrate`` job in-process, one run per contiguous range of ``run_keys``; closes the display
    and releases the run locks when done. Raises what a run raised, or KeyboardInterrupt on a stop."""
    from .dagster_defs.checks import CHECKS
    from .dagster_defs.tags import range_tags
    from .definitions import defs
    from .pipeline import interrupt, progress
    from .storage.database import DatabaseUnavailable
    from .storage.locks import RUN_LOCKS_LOST, run_locks_lost

    instance = _dagster_instance(settings)
    for run_id, pid in _fail_abandoned_runs(instance):
        display.write_line(f"doc-migrate full: run {run_id} of a doc-migrate process that died (pid {pid}) is "
                           "marked failed; its committed partitions are kept, this run resumes the rest")
    job = defs.resolve_job_def("migrate")
    check_steps = {f"{spec.asset_key.to_python_identifier()}_{spec.name}" for c in CHECKS for spec in c.check_specs}
    outcome = RunOutcome()

    def execute() -> None:
        try:
            for first, last in _ranges(manifest.partition_keys(), run_keys):
                if interrupt.stop_requested():
                    break
                result = job.execute_in_process(
                    instance=instance,
                    tags={**range_tags(first, last), **_owner_tags()},
                    run_config={
                        "resources": {"migration": {"config": {"sources": str(settings.sources_path),
                                                               "parallel": args.parallel}}},
                        "loggers": {"terminal": {"config": {"log_level": args.log_level, "debug": args.debug}}},
                    },
                    resources={"migration": migration},
                    raise_on_error=False,
                )
                _read_result(result, outcome, check_steps)
        except BaseException as exc:  # re-raised in the main thread
            outcome.error = exc

    # Runs execute in a worker thread so that SIGTERM/SIGINT reach our handler in the main thread
    # (a graceful stop between partitions) instead of Dagster's, which aborts the step mid-way.
    # The main thread also watches the run-lock session: if the server drops it (a crash or a
    # restart that the pool's fresh connections survive), the locks are gone, so the run stops.
    worker = threading.Thread(target=execute, name="doc-migrate-run", daemon=True)
    progress.add_sink(display)
    locks_lost = False
    try:
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.2)
            if not locks_lost and run_locks_lost(lock_conn):
                locks_lost = True
                interrupt.request_stop(RUN_LOCKS_LOST)
        locks_lost = locks_lost or run_locks_lost(lock_conn, probe=True)
    finally:
        progress.remove_sink(display)
        display.close()
        lock_conn.close()
    if locks_lost:
        raise DatabaseUnavailable(RUN_LOCKS_LOST)
    if outcome.error is not None:
        raise outcome.error
    if interrupt.stop_requested():
        raise KeyboardInterrupt()
    return outcome


def _print_full_outcome(summary: dict[str, Any], outcome: RunOutcome, failed_checks: list[dict[str, str]],
                        run_part: str) -> str:
    """What went wrong, one line each on stderr; returns the one-line human summary."""
    human = (
        f"doc-migrate full: {run_part}: {summary['documents_loaded']} documents loaded, "
        f"{summary['documents_unchanged']} unchanged, {summary['quarantined']} quarantined; "
        f"{summary['rows_written']} rows written ({summary['rows_inserted']} inserted, {summary['rows_updated']} "
        f"updated, {summary['rows_deleted']} deleted); {summary['chunks_embedded']} chunks embedded "
        f"({summary['embedding_cache_hits']} cache hits, {summary['tokens_sent']} tokens sent); "
        f"failed partitions: {len(summary['failed_partitions'])}"
        + (f"; failed checks: {', '.join(c['check'] for c in failed_checks)}" if failed_checks else "")
        + f"; {summary['seconds']} s"
    )
    for q in summary["quarantined_files"][:50]:
        print(f"quarantined: {q['doc_type']}/{_printable(q['path'])}: {q['reason']}", file=sys.stderr)
    for f in summary["failures"]:
        print(f"failed: {f['partition']} ({f['stage']}): {f['error']}", file=sys.stderr)
    for line in outcome.step_errors:
        print(f"step failed: {line}", file=sys.stderr)
    for c in failed_checks:
        print(f"check failed: {c['check']}: {c['message']} (details: `doc-migrate validate`)", file=sys.stderr)
    return human


def cmd_full(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings, manifest = _settings(args)
    keys = _select(manifest, args.partition, args.doc_type)
    if not keys:
        raise ConfigError("no partitions selected")
    if args.dry_run:
        return cmd_plan(args)
    from .embedding.factory import require_embedder_config

    require_embedder_config(settings)  # a missing API key fails here, before any scan or parse
    display = _display(args)
    display.start(f"doc-migrate full: {len(keys)} partition(s) of {settings.sources_path}; "
                  "starting the database and Dagster…")
    _quiet_dagster()
    from .dagster_defs.resources import MigrationResource
    from .storage import ledger
    from .storage.locks import acquire_run_locks
    from .storage.maintenance import describe_foreign, pending_reloads

    migration = MigrationResource(sources=str(settings.sources_path), parallel=args.parallel)
    url = migration.url  # connect and migrate before starting runs: bad config fails fast
    found = _foreign(settings, manifest, url)
    if found:
        raise ForeignRowsFound(describe_foreign(found, _prune_command(args)))
    lock_conn = acquire_run_locks(url, keys)
    pending = [p["partition"] for p in pending_reloads(settings, url) if p["partition"] in keys]
    if pending:
        display.write_line(f"doc-migrate full: reloading {len(pending)} partition(s) that `doc-migrate validate "
                           f"--repair` reset and did not reload: {', '.join(pending[:10])}")
    run_keys = keys if args.all_partitions else _changed_span(settings, manifest, url, keys)
    outcome = _run_migrate_job(args, settings, manifest, migration, run_keys, display, lock_conn)
    run_ids = outcome.run_ids
    summary = ledger.run_summary(settings, url, run_ids, keys)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["partitions_skipped_unchanged"] = len(keys) - len(run_keys)
    failed_checks = list(outcome.failed_checks)
    if not run_ids:
        # No run, so no asset checks: still verify what a run's cheap whole-database checks would,
        # so a tampered or half-restored database never passes as "nothing to do".
        from .validation.report import build_report

        report = build_report(settings, url, keys, None, manifest=manifest,
                              only=["counts", "checksums", "orphans", "rolled_back"])
        summary["checks"] = {"passed": report["passed"], "errors": report["errors"], "warnings": report["warnings"]}
        failed_checks += [{"check": name, "message": str(report["checks"][name]["message"])}
                          for name in report["errors"]]
    summary["failed_checks"] = failed_checks
    summary["success"] = outcome.success and not failed_checks and not summary["failed_partitions"]
    summary["failed_steps"] = outcome.failed_steps  # e.g. a blocking validation check
    run_part = (f"run {summary['run_id']}" if run_ids else
                f"all {len(keys)} partitions unchanged since their last load, no run started "
                "(--all-partitions re-runs them; `doc-migrate validate` re-checks)")
    human = _print_full_outcome(summary, outcome, failed_checks, run_part)
    _emit(args, summary, human)
    if summary["success"]:
        return EXIT_OK
    if any(UNREACHABLE in f["error"] for f in summary["failures"]):
        return EXIT_UNAVAILABLE  # the embedding endpoint is gone: retry later, as for the database
    return EXIT_VALIDATION if failed_checks and not summary["failed_partitions"] else EXIT_FAILED


def _printable(text: str) -> str:
    """A file name as one harmless line: control characters (newlines, ANSI escapes) escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _display(args: argparse.Namespace) -> Any:
    from .dagster_defs.terminal_logger import set_line_writer
    from .terminal import ProgressDisplay

    display = ProgressDisplay()
    set_line_writer(display.write_line)
    return display


def _database(settings: Settings) -> str:
    from .storage.database import migrate, resolve_database_url

    url = resolve_database_url(settings)
    migrate(settings, url)
    return url


def cmd_plan(args: argparse.Namespace) -> int:
    from .config import env_int
    from .pipeline.plan import make_plan

    settings, manifest = _settings(args)
    keys = _select(manifest, getattr(args, "partition", None), getattr(args, "doc_type", None))
    if settings.embed_mode == "batch":
        from .embedding.factory import require_embedder_config

        require_embedder_config(settings)
    url = _database(settings)
    plan = make_plan(settings, manifest, url, keys, parallel=getattr(args, "parallel", 1),
                     tpm=env_int("DOC_MIGRATION_OPENAI_TPM", 0) or None)
    d = plan.as_dict()
    eta = f"{d['estimated_embed_seconds']} s at the configured TPM" if d["estimated_embed_seconds"] else "n/a"
    if d["embed_mode"] == "batch":
        eta = f"within 24 h (Batch API; ${d['estimated_dollars_sync']:.4f} through the synchronous endpoint)"
    human = (f"plan ({settings.model_name}): partitions new {len(d['partitions_new'])}, changed "
             f"{len(d['partitions_changed'])}, unchanged {len(d['partitions_unchanged'])}; files to parse "
             f"{d['files_to_parse']} (new {d['files_new']}, changed {d['files_changed']}, settings changed "
             f"{d['files_version_changed']}), deleted {d['files_deleted']}, unchanged {d['files_unchanged']}; chunks new "
             f"{d['chunks_new']}, changed {d['chunks_changed']}, unchanged {d['chunks_unchanged']}, to delete "
             f"{d['chunks_to_delete']}; to embed {d['chunks_to_embed']} chunks / {d['tokens_to_embed']} tokens "
             f"after {d['cache_hits']} cache hits; estimated ${d['estimated_dollars']:.4f}; embedding time {eta}; "
             f"{d['quarantined']} files would be quarantined")
    from .storage.maintenance import describe_foreign, pending_reloads

    found = _foreign(settings, manifest, url)
    d["foreign_rows"] = [f.as_dict() for f in found]
    d["partitions_awaiting_reload"] = [p["partition"] for p in pending_reloads(settings, url)]
    if found:
        human += f"\nblocked: {describe_foreign(found, _prune_command(args))}"
    if d["partitions_awaiting_reload"]:
        human += (f"\n{len(d['partitions_awaiting_reload'])} partition(s) reset by `doc-migrate validate --repair` "
                  f"await their reload: {', '.join(d['partitions_awaiting_reload'][:10])}")
    _emit(args, d, human)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .validation.html import render_html
    from .validation.repair import apply_repair, plan_repair
    from .validation.report import build_report

    settings, manifest = _settings(args)
    url = _database(settings)
    keys = manifest.partition_keys()
    report = build_report(settings, url, keys, None, manifest=manifest)
    repairs: list[dict[str, Any]] = []
    if getattr(args, "repair", False):
        # plan -> apply -> full on the reset partitions -> re-validate; a second pass merges duplicates
        # that sat in reloaded partitions (a reload restores every row of its sources).
        for _ in range(2):
            plan = plan_repair(report)
            if plan.is_empty():
                break
            _confirm(args, f"Repair: reset and reload {len(plan.partitions)} partition(s) {plan.partitions[:10]}, "
                           f"delete {plan.orphans_expected} orphan row(s), apply '{plan.duplicate_strategy}' to "
                           f"{plan.duplicate_groups_expected} duplicate group(s)")
            applied = apply_repair(settings, url, plan, requested_by=_who())
            repairs.append({"plan": plan.as_dict(), "applied": applied})
            crash_point("repair-after-reset")
            if applied["partitions_to_materialize"]:
                # The reset partitions are reloaded by this same command; if it dies here, the ledger
                # lists them as awaiting reload and the next `full` or `validate --repair` finishes them.
                code = cmd_full(_full_args(args, applied["partitions_to_materialize"]))
                if code != EXIT_OK:
                    return code
            report = build_report(settings, url, keys, None, manifest=manifest)
        report["repairs"] = repairs
    folder = settings.home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (folder / f"validation-cli-{stamp}.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (folder / f"validation-cli-{stamp}.html").write_text(render_html(report), encoding="utf-8")
    human = [(f"validation: {'PASSED' if report['passed'] else 'FAILED'}; errors {report['errors']}, "
              f"warnings {report['warnings']}; {report['totals']['rows']} rows; "
              f"report {folder}/validation-cli-{stamp}.html")]
    for name, check in report["checks"].items():
        human.append(f"  {name}: {'ok' if check['passed'] else check['severity']}: {check['message']}")
    for r in repairs:
        human.append(f"  repaired: {r['applied']}")
    from .storage.maintenance import describe_foreign

    found = _foreign(settings, manifest, url)
    report["foreign_rows"] = [f.as_dict() for f in found]
    if found:
        human.append(f"  foreign rows: {describe_foreign(found, _prune_command(args))}")
    _emit(args, report, "\n".join(human))
    return EXIT_OK if report["passed"] else EXIT_VALIDATION


def _full_args(args: argparse.Namespace, partitions: list[str]) -> argparse.Namespace:
    """``full``'s own arguments (every default its parser gives) for the given partitions, with this
    command's global options: a repair runs exactly what `doc-migrate full --partition KEY` would."""
    ns = build_parser().parse_args(["full", "--yes", "--all-partitions"])
    for name in ("sources", "log_level", "debug"):
        setattr(ns, name, getattr(args, name, getattr(ns, name, None)))
    ns.partition = list(partitions)
    ns.parallel = getattr(args, "parallel", ns.parallel)
    ns.json = False
    return ns


def _who() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question}: refusing without --yes when not run interactively")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise KeyboardInterrupt()


def cmd_rollback(args: argparse.Namespace) -> int:
    from .dagster_defs.visibility import report_rollbacks
    from .storage.rollback import RollbackError, rollback_partition, rollback_run

    settings, manifest = _settings(args)
    if bool(args.partitions) == bool(args.run):
        raise ConfigError("give partition keys or --run RUN_ID (not both)")
    url = _database(settings)
    who = _who()
    try:
        if args.run:
            _confirm(args, f"Roll back every partition loaded by run {args.run}")
            results = rollback_run(settings, url, args.run, who)
        else:
            keys = _select(manifest, args.partitions, None)
            _confirm(args, f"Roll back {len(keys)} partition(s) to their state before their latest load")
            results = [rollback_partition(settings, url, key, who) for key in keys]
    except RollbackError as exc:
        raise ConfigError(str(exc)) from None
    report_rollbacks(_dagster_instance(settings), results)
    payload = {"rolled_back": [r.__dict__ for r in results]}
    human = "\n".join(f"rolled back {r.partition}: load {r.load_id} of run {r.loaded_run_id} "
                      f"({r.rows_deleted} rows deleted, {r.rows_restored} restored)" for r in results)
    _emit(args, payload, human or "nothing to roll back")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from .storage import ledger

    settings, _ = _settings(args)
    url = _database(settings)
    events = ledger.history(settings, url, limit=args.limit)
    lines = []
    for e in events:
        if e["event"] == "load":
            lines.append(f"{e['at']}  load      {e['partition']:<24} run {e['run_id']}  {e['documents']} docs, "
                         f"+{e['rows_inserted']} ~{e['rows_updated']} -{e['rows_deleted']} rows, "
                         f"{e['quarantined']} quarantined [{e['status']}]")
        elif e["event"] == "rollback":
            lines.append(f"{e['at']}  rollback  {e['partition']:<24} of run {e['run_id']}  "
                         f"{e['rows_deleted']} deleted, {e['rows_restored']} restored")
        elif e["event"] == "reset":
            state = f"reloaded {e['reloaded_at']}" if e.get("reloaded_at") else "AWAITING RELOAD (run doc-migrate full)"
            lines.append(f"{e['at']}  reset     {e['partition']:<24} {e['rows_deleted']} rows deleted by "
                         f"{e['requested_by'] or '?'} ({e['reason']}); {state}")
        else:
            lines.append(f"{e['at']}  prune     {e['partition']:<24} {e['rows_deleted']} rows of source "
                         f"{e['source_name']} deleted by {e['requested_by'] or '?'} ({e['reason']})")
    _emit(args, {"events": events}, "\n".join(lines) or "no history yet")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings, manifest = _settings(args)
    from .storage import ledger

    url = _database(settings)
    st = ledger.status(settings, url)
    keys = manifest.partition_keys()
    from .storage.maintenance import describe_foreign, pending_reloads

    st["partitions_total"] = len(keys)
    st["partitions_missing"] = [k for k in keys if k not in st["partitions"]]
    st["partitions_outside_manifest"] = [k for k in st["partitions"] if k not in set(keys)]
    found = _foreign(settings, manifest, url)
    st["foreign_rows"] = [f.as_dict() for f in found]
    st["partitions_awaiting_reload"] = [p["partition"] for p in pending_reloads(settings, url)]
    if args.files:
        st.update(ledger.file_classifications(settings, url))
    st["batches_in_flight"] = _batch_dicts(settings, url, live_only=True)
    in_manifest = sum(1 for k in st["partitions"] if k in set(keys))
    lines = [f"{st['documents_loaded']} documents in {st['rows']} rows; {len(st['quarantined'])} files quarantined; "
             f"{in_manifest}/{len(keys)} partitions of this manifest loaded"
             + (f"; not loaded: {', '.join(st['partitions_missing'][:20])}"
                + (" …" if len(st["partitions_missing"]) > 20 else "") if st["partitions_missing"] else "")]
    if st["partitions_outside_manifest"]:
        lines.append(f"{len(st['partitions_outside_manifest'])} loaded partition(s) are not in this manifest "
                     f"(another manifest loaded them): {', '.join(st['partitions_outside_manifest'][:20])}")
    if found:
        lines.append(describe_foreign(found, _prune_command(args)))
    if st["partitions_awaiting_reload"]:
        lines.append(f"awaiting reload after `doc-migrate validate --repair`: "
                     f"{', '.join(st['partitions_awaiting_reload'])} (run `doc-migrate full`)")
    if st["batches_in_flight"]:
        lines.append(_batches_headline(st["batches_in_flight"]))
        lines.extend(_batch_line(b) for b in st["batches_in_flight"])
    for key, p in st["partitions"].items():
        lines.append(f"  {key:<28} {p['documents']:>6} docs {p['rows']:>7} rows  loaded {p['loaded_at']}")
    for q in st["quarantined"]:
        lines.append(f"  quarantined {q['doc_type']}/{_printable(q['path'])}: {q['reason']}")
    if args.files:
        lines.append("files, the format each was read as, and why:")
        for f in st["file_details"]:
            told = (f"{f['rows']} row{'' if f['rows'] == 1 else 's'}" if f["outcome"] == "loaded"
                    else f.get("reason", f["outcome"]))
            lines.append(f"  {f['doc_type']}/{_printable(f['path'])}: {f['format']} ({f['detected_by']}) -> {told}")
        for fmt, agg in st["formats"].items():
            lines.append(f"  {fmt:<16} {agg['files']:>6} files {agg['loaded']:>6} loaded {agg['refused']:>4} refused")
    _emit(args, st, "\n".join(lines))
    return EXIT_OK


def _batch_dicts(settings: Settings, url: str, *, live_only: bool) -> list[dict[str, Any]]:
    """Recorded Batch API batches with their age and expected cost (half the synchronous price)."""
    from datetime import UTC, datetime

    from .embedding.pricing import estimate_cost
    from .storage.batches import batches

    now = datetime.now(UTC)
    out = []
    for row in batches(settings, url, live_only=live_only):
        d = row.as_dict()
        d["age_seconds"] = round((now - row.created_at).total_seconds(), 1)
        d["expected_dollars"] = round(estimate_cost(row.tokens, row.model, batch_tokens=row.tokens), 6)
        out.append(d)
    return out


def _batches_headline(rows: list[dict[str, Any]]) -> str:
    dollars = sum(b["expected_dollars"] for b in rows)
    return (f"{len(rows)} Batch API batch(es) in flight: {sum(b['inputs'] for b in rows)} texts, "
            f"{sum(b['tokens'] for b in rows)} tokens, expected ${dollars:.4f} (`doc-migrate full --embed-mode batch` "
            "waits for them and loads; `doc-migrate batches cancel` cancels them)")


def _batch_line(b: dict[str, Any]) -> str:
    age = int(b["age_seconds"])
    return (f"  batch {b['batch_id'] or '(not created yet)'} [{b['status']}{', ingested' if b['ingested'] else ''}] "
            f"{b['requests']} requests / {b['inputs']} texts / {b['tokens']} tokens: {b['completed']} completed, "
            f"{b['failed']} failed, {b['stored']} vectors stored; age {age // 3600}h{age % 3600 // 60:02d}m"
            f"{age % 60:02d}s; expected ${b['expected_dollars']:.4f}" + (f"; {b['error']}" if b["error"] else ""))


def cmd_batches(args: argparse.Namespace) -> int:
    settings, _ = _settings(args)
    url = _database(settings)
    if args.action == "list":
        rows = _batch_dicts(settings, url, live_only=not args.all)
        human = "\n".join([_batches_headline(rows) if not args.all else f"{len(rows)} Batch API batch(es)",
                           *(_batch_line(b) for b in rows)]) if rows else "no Batch API batches in flight"
        _emit(args, {"batches": rows}, human)
        return EXIT_OK
    from .embedding.factory import require_embedder_config
    from .pipeline.batch_embed import cancel_batches

    require_embedder_config(settings.with_overrides(embed_mode="batch"))
    live = _batch_dicts(settings, url, live_only=True)
    if not live:
        _emit(args, {"cancelled": [], "batches": []}, "no Batch API batches in flight: nothing to cancel")
        return EXIT_OK
    _confirm(args, f"Cancel {len(live)} Batch API batch(es) in flight (what they embedded so far is kept and paid)")
    cancelled = cancel_batches(settings, url)
    rows = _batch_dicts(settings, url, live_only=True)
    _emit(args, {"cancelled": cancelled, "batches": rows},
          f"cancelled {len(cancelled)} batch(es): {', '.join(cancelled[:10]) or '-'}; the next "
          "`doc-migrate full --embed-mode batch` stores what they embedded and submits the rest")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    from .storage.maintenance import prune_foreign

    settings, manifest = _settings(args)
    if not args.foreign:
        raise ConfigError("say what to prune: --foreign (rows of sources this manifest does not produce)")
    url = _database(settings)
    found = _foreign(settings, manifest, url)
    payload: dict[str, Any] = {"foreign_rows": [f.as_dict() for f in found], "pruned": [], "dry_run": args.dry_run}
    if not found:
        _emit(args, payload, "no foreign rows: every row in this manifest's partitions comes from its sources")
        return EXIT_OK
    listing = "; ".join(f"{f.partition}: {f.rows} row(s) of {f.source_name}" for f in found[:10]) + (
        " …" if len(found) > 10 else "")
    rows = sum(f.rows for f in found)
    if args.dry_run:
        _emit(args, payload, f"would delete {rows} foreign row(s): {listing}")
        return EXIT_OK
    _confirm(args, f"Delete {rows} row(s) of sources this manifest does not produce ({listing}) from documents "
                   "(running the manifest that loaded them brings them back)")
    payload["pruned"] = prune_foreign(settings, url, found, _who(), str(settings.sources_path))
    _emit(args, payload, f"pruned {sum(p['rows_deleted'] for p in payload['pruned'])} foreign row(s) from "
                         f"{len({p['partition'] for p in payload['pruned']})} partition(s); `doc-migrate history` "
                         "lists them")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    settings, manifest = _settings(args)
    payload = {**settings.public_dict(), "shards": manifest.shards, "partitions": len(manifest.partition_keys()),
               "doc_types": manifest.doc_types(), "chunking": manifest.chunking.__dict__}
    _emit(args, payload, "\n".join(f"{k}: {v}" for k, v in payload.items()))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # Global options, accepted before or after the command (`doc-migrate full --sources X` too): SUPPRESS
    # keeps a subcommand's unset copy from overwriting a value given before it; main() fills defaults.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON object (the last line of stdout)")
    common.add_argument("--sources", metavar="FILE", default=argparse.SUPPRESS,
                        help="source manifest (default: $DOC_MIGRATION_SOURCES or the packaged sample corpus)")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="Dagster log level on stderr (default: WARNING)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show stack traces of errors (and Dagster's) instead of one line each")
    parser = argparse.ArgumentParser(
        prog="doc-migrate", parents=[common],
        description="Bootstrap, migrate and validate the doc-server's PostgreSQL + pgvector database.",
        epilog="Exit codes: 0 ok, 1 partitions failed, 2 bad configuration, 3 validation failed, "
               "4 partition locked by another run, 5 database unreachable (retry), 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    full = sub.add_parser("full", parents=[common], help="migrate all (or selected) partitions in-process")
    full.add_argument("--partition", action="append", metavar="KEY", help="only this partition (repeatable)")
    full.add_argument("--doc-type", action="append", metavar="TYPE", help="only this doc type (repeatable)")
    full.add_argument("--parallel", type=int, default=max(1, min(4, os.cpu_count() or 1)), metavar="N",
                      help="parser processes (default: cores, at most 4)")
    full.add_argument("--dry-run", action="store_true", help="print the plan without embedding or writing")
    full.add_argument("--all-partitions", action="store_true",
                      help="run every selected partition, also those unchanged since their last load "
                           "(by default they are skipped; `doc-migrate validate` re-checks them)")
    full.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    full.add_argument("--embed-mode", choices=["sync", "batch"], default=None,
                      help="sync: the embeddings endpoint; batch: the OpenAI Batch API at half price, waiting "
                           "for its batches (default: $DOC_MIGRATION_EMBED_MODE, else sync)")
    full.set_defaults(func=cmd_full)

    plan = sub.add_parser("plan", parents=[common], help="what a full run would do and cost, without doing it")
    plan.add_argument("--partition", action="append", metavar="KEY", help="only this partition (repeatable)")
    plan.add_argument("--doc-type", action="append", metavar="TYPE", help="only this doc type (repeatable)")
    plan.add_argument("--parallel", type=int, default=1, metavar="N", help="parser processes (default: 1)")
    plan.add_argument("--embed-mode", choices=["sync", "batch"], default=None,
                      help="price the embeddings as sent synchronously or through the Batch API (half price)")
    plan.set_defaults(func=cmd_plan)

    batches = sub.add_parser("batches", parents=[common], help="Batch API batches in flight: list or cancel them")
    batches.add_argument("action", nargs="?", choices=["list", "cancel"], default="list",
                         help="list (default) or cancel the batches in flight")
    batches.add_argument("--all", action="store_true", help="list finished batches too")
    batches.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    batches.set_defaults(func=cmd_batches)

    validate = sub.add_parser("validate", parents=[common], help="run the validation checks without migrating")
    validate.add_argument("--repair", action="store_true",
                          help="reset and reload failing partitions, delete orphans, merge duplicates per the manifest")
    validate.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    validate.add_argument("--parallel", type=int, default=max(1, min(4, os.cpu_count() or 1)), metavar="N",
                          help="parser processes for the reload (default: cores, at most 4)")
    validate.set_defaults(func=cmd_validate)

    rollback = sub.add_parser("rollback", parents=[common],
                              help="restore partitions (or everything a run loaded) to their previous version")
    rollback.add_argument("partitions", nargs="*", metavar="PARTITION")
    rollback.add_argument("--run", metavar="RUN_ID", help="roll back every partition this run loaded, newest first")
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rollback.set_defaults(func=cmd_rollback)

    history = sub.add_parser("history", parents=[common], help="loads and rollbacks, newest first")
    history.add_argument("--limit", type=int, default=200, metavar="N", help="at most N events (default: 200)")
    history.set_defaults(func=cmd_history)

    status = sub.add_parser("status", parents=[common], help="what is loaded, per partition and in total")
    status.add_argument("--files", action="store_true",
                        help="also list every file: the format it was read as, the evidence, and what happened to it")
    status.set_defaults(func=cmd_status)

    prune = sub.add_parser("prune", parents=[common],
                           help="delete rows in this manifest's partitions that its sources do not produce")
    prune.add_argument("--foreign", action="store_true",
                       help="rows of sources this manifest does not produce (e.g. loaded by another manifest)")
    prune.add_argument("--dry-run", action="store_true", help="list them without deleting")
    prune.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(func=cmd_prune)

    config = sub.add_parser("config", parents=[common], help="effective configuration, secrets redacted")
    config.set_defaults(func=cmd_config)
    return parser


def _on_signal(signum: int, frame: Any) -> None:
    """First signal: finish the partition in progress, start nothing new. Second: exit at once."""
    from .pipeline import interrupt

    if interrupt.stop_requested():
        os._exit(EXIT_INTERRUPTED)
    interrupt.request_stop()
    print(f"doc-migrate: {signal.Signals(signum).name} received; finishing the current partition "
          "(send it again to exit at once)", file=sys.stderr, flush=True)


def _quiet_dagster() -> None:
    """Dagster's API-stage warnings are for the code's authors, not for the operator's terminal."""
    import dagster

    for name in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
        warnings.filterwarnings("ignore", category=getattr(dagster, name, DeprecationWarning))


GLOBAL_DEFAULTS: dict[str, Any] = {"json": False, "sources": None, "log_level": "WARNING", "debug": False}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*resolve_job_def.*")
    if args.command != "full":  # full prints its first line before paying for Dagster's import
        _quiet_dagster()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    from .storage.database import DatabaseError, lost_connection
    from .storage.locks import PartitionBusy

    def fail(code: int, message: str, exc: BaseException | None = None) -> int:
        """One line on stderr (the stack trace too with --debug) and, with --json, a JSON last line."""
        if args.debug and exc is not None:
            import traceback

            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        print(f"doc-migrate: {redact(message)}", file=sys.stderr)
        if args.json:
            print(json.dumps({"success": False, "exit_code": code, "error": redact(message)}))
        return code

    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        return fail(EXIT_CONFIG, f"configuration error: {exc}", exc)
    except DatabaseError as exc:
        return fail(EXIT_UNAVAILABLE if exc.retryable else EXIT_CONFIG, f"database error: {exc}", exc)
    except PartitionBusy as exc:
        return fail(EXIT_BUSY, str(exc), exc)
    except ForeignRowsFound as exc:
        return fail(EXIT_VALIDATION, str(exc), exc)
    except KeyboardInterrupt as exc:
        return fail(EXIT_INTERRUPTED, "interrupted; committed partitions are kept, re-run to resume", exc)
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # never a raw traceback by default: exception texts may quote a connection string
        lost = lost_connection(exc)  # the server died under a query outside a partition: retryable
        if lost is not None:
            return fail(EXIT_UNAVAILABLE, f"database error: {lost}", exc)
        return fail(EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc} (run again with --debug for the "
                                 "stack trace)", exc)


if __name__ == "__main__":
    sys.exit(main())
