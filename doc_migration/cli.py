"""``doc-migrate``: the operator's command line. It drives the same Dagster assets as the UI.

Exit codes: 0 ok; 1 some partitions failed; 2 bad configuration or usage; 3 validation failed;
4 another run holds a partition's lock; 5 the database is unreachable (retry later);
130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings, redact
from .manifest import Manifest, load_manifest, split_partition_key

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_VALIDATION, EXIT_BUSY, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = (
    0, 1, 2, 3, 4, 5, 130)


class Progress:
    """A bar with percent, rate and ETA on a terminal; plain periodic lines otherwise (Kubernetes logs)."""

    def __init__(self, stream: Any = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.started: dict[str, float] = {}
        self.last_line = 0.0

    def __call__(self, stage: str, done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        start = self.started.setdefault(stage, now)
        elapsed = max(now - start, 1e-6)
        pct = 100.0 * done / total if total else 100.0
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        text = f"{stage:<6} {done}/{total} {unit} {pct:5.1f}% {rate:6.1f}/s ETA {eta:5.0f}s"
        if self.tty:
            filled = int(pct / 5)
            self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {text}")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
        elif done >= total or now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(f"progress: {text}\n")
            self.stream.flush()


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print(human)


def _settings(args: argparse.Namespace) -> tuple[Settings, Manifest]:
    if args.sources:
        os.environ["DOC_MIGRATION_SOURCES"] = str(Path(args.sources).resolve())
    settings = Settings.from_env(args.sources)
    manifest = load_manifest(settings.sources_path)
    manifest.check_paths()
    return settings, manifest


def _select(manifest: Manifest, partitions: Sequence[str] | None, doc_types: Sequence[str] | None) -> list[str]:
    keys = manifest.partition_keys()
    if partitions:
        unknown = [p for p in partitions if p not in keys]
        for p in unknown:
            split_partition_key(p)
        if unknown:
            raise ConfigError(f"unknown partition(s) {unknown}; this manifest has {len(keys)}, e.g. {keys[:3]}")
        keys = [k for k in keys if k in set(partitions)]
    if doc_types:
        known = set(manifest.doc_types())
        missing = [d for d in doc_types if d not in known]
        if missing:
            raise ConfigError(f"unknown doc type(s) {missing}; known: {sorted(known)}")
        keys = [k for k in keys if split_partition_key(k)[0] in set(doc_types)]
    return keys


def _changed_span(settings: Settings, manifest: Manifest, url: str, keys: list[str]) -> list[str]:
    """The selected partitions from the first to the last one whose files changed since its last
    load (a make-style skip): an unchanged re-run starts no Dagster run at all, and the unchanged
    partitions between changed ones cost one cheap no-op each instead of a run per gap."""
    from psycopg import sql

    from .pipeline.scan import scan
    from .storage.database import connection

    scans = scan(settings, manifest, keys)
    with connection(url) as conn:
        loaded = dict(conn.execute(sql.SQL(
            "SELECT partition_key, checksum FROM {}.partition_state WHERE partition_key = ANY(%s)").format(
                sql.Identifier(settings.pipeline_schema)), (keys,)).fetchall())
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


def _dagster_instance(settings: Settings) -> Any:
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.home / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("# Local instance of doc-migrate (SQLite). See dagster.yaml at the repo root.\n"
                              "telemetry:\n  enabled: false\n", encoding="utf-8")
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def cmd_full(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings, manifest = _settings(args)
    keys = _select(manifest, args.partition, args.doc_type)
    if not keys:
        raise ConfigError("no partitions selected")
    if args.dry_run:
        return cmd_plan(args)
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from .dagster_defs.resources import MigrationResource
    from .definitions import defs
    from .pipeline import interrupt, progress
    from .storage import ledger

    migration = MigrationResource(sources=str(settings.sources_path), parallel=args.parallel)
    url = migration.url  # connect and migrate before starting runs: bad config fails fast
    lock_conn = acquire_run_locks(url, keys)
    run_keys = keys if args.all_partitions else _changed_span(settings, manifest, url, keys)
    instance = _dagster_instance(settings)
    job = defs.resolve_job_def("migrate")
    run_ids: list[str] = []
    failed_steps: list[str] = []
    outcome: dict[str, Any] = {"ok": True, "error": None}

    def execute() -> None:
        try:
            for first, last in _ranges(manifest.partition_keys(), run_keys):
                if interrupt.stop_requested():
                    break
                result = job.execute_in_process(
                    instance=instance,
                    tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
                    run_config={
                        "resources": {"migration": {"config": {"sources": str(settings.sources_path),
                                                               "parallel": args.parallel}}},
                        "loggers": {"console": {"config": {"log_level": args.log_level}}},
                    },
                    resources={"migration": migration},
                    raise_on_error=False,
                )
                run_ids.append(result.run_id)
                outcome["ok"] = outcome["ok"] and result.success
                failed_steps.extend(e.step_key for e in result.all_events
                                    if e.event_type_value == "STEP_FAILURE" and e.step_key)
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    # Runs execute in a worker thread so that SIGTERM/SIGINT reach our handler in the main thread
    # (a graceful stop between partitions) instead of Dagster's, which aborts the step mid-way.
    worker = threading.Thread(target=execute, name="doc-migrate-run", daemon=True)
    sink = Progress()
    progress.add_sink(sink)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.2)
    finally:
        progress.remove_sink(sink)
        lock_conn.close()
    if outcome["error"] is not None:
        raise outcome["error"]
    ok = bool(outcome["ok"])
    if interrupt.stop_requested():
        raise KeyboardInterrupt()
    summary = ledger.run_summary(settings, url, run_ids, keys)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["partitions_skipped_unchanged"] = len(keys) - len(run_keys)
    if not run_ids and not interrupt.stop_requested():
        # No run, so no asset checks: still verify what a run's cheap whole-database checks would,
        # so a tampered or half-restored database never passes as "nothing to do".
        from .validation.report import build_report

        report = build_report(settings, url, keys, None, manifest=manifest,
                              only=["counts", "checksums", "orphans", "rolled_back"])
        summary["checks"] = {"passed": report["passed"], "errors": report["errors"], "warnings": report["warnings"]}
        ok = ok and bool(report["passed"])
        for name in report["errors"]:
            print(f"check failed: {name}: {report['checks'][name]['message']} (details: doc-migrate validate; "
                  "fix: doc-migrate validate --repair)", file=sys.stderr)
    summary["success"] = ok and not summary["failed_partitions"]
    summary["failed_steps"] = failed_steps  # e.g. a blocking validation check
    run_part = (f"run {summary['run_id']}" if run_ids else
                f"all {len(keys)} partitions unchanged since their last load, no run started "
                "(--all-partitions re-runs them; `doc-migrate validate` re-checks)")
    human = (
        f"doc-migrate full: {run_part}: {summary['documents_loaded']} documents loaded, "
        f"{summary['documents_unchanged']} unchanged, {summary['quarantined']} quarantined; "
        f"{summary['rows_written']} rows written ({summary['rows_inserted']} inserted, {summary['rows_updated']} "
        f"updated, {summary['rows_deleted']} deleted); {summary['chunks_embedded']} chunks embedded "
        f"({summary['embedding_cache_hits']} cache hits, {summary['tokens_sent']} tokens sent); "
        f"failed partitions: {len(summary['failed_partitions'])}"
        + (f"; failed steps: {', '.join(failed_steps)}" if failed_steps else "")
        + f"; {summary['seconds']} s"
    )
    for q in summary["quarantined_files"][:50]:
        print(f"quarantined: {q['doc_type']}/{q['path']}: {q['reason']}", file=sys.stderr)
    for f in summary["failures"]:
        print(f"failed: {f['partition']} ({f['stage']}): {f['error']}", file=sys.stderr)
    _emit(args, summary, human)
    return EXIT_OK if summary["success"] else EXIT_FAILED


def _database(settings: Settings) -> str:
    from .storage.database import migrate, resolve_database_url

    url = resolve_database_url(settings)
    migrate(settings, url)
    return url


def acquire_run_locks(url: str, keys: list[str]) -> Any:
    """Session advisory locks on a dedicated connection: a second run on the same partitions fails fast,
    and the server releases them if this process dies."""
    from .pipeline.load import PartitionBusy
    from .storage.database import connect

    conn = connect(url, autocommit=True)
    for key in keys:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"doc_migration:run:{key}",)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise PartitionBusy(f"partition {key} is being migrated by another doc-migrate run; "
                                "wait for it to finish (see 'doc-migrate status') or stop it")
    return conn


def cmd_plan(args: argparse.Namespace) -> int:
    from .config import env_int
    from .pipeline.plan import make_plan

    settings, manifest = _settings(args)
    keys = _select(manifest, getattr(args, "partition", None), getattr(args, "doc_type", None))
    url = _database(settings)
    plan = make_plan(settings, manifest, url, keys, parallel=getattr(args, "parallel", 1),
                     tpm=env_int("DOC_MIGRATION_OPENAI_TPM", 0) or None)
    d = plan.as_dict()
    eta = f"{d['estimated_embed_seconds']} s at the configured TPM" if d["estimated_embed_seconds"] else "n/a"
    human = (f"plan ({settings.model_name}): partitions new {len(d['partitions_new'])}, changed "
             f"{len(d['partitions_changed'])}, unchanged {len(d['partitions_unchanged'])}; chunks new "
             f"{d['chunks_new']}, changed {d['chunks_changed']}, unchanged {d['chunks_unchanged']}, to delete "
             f"{d['chunks_to_delete']}; to embed {d['chunks_to_embed']} chunks / {d['tokens_to_embed']} tokens "
             f"after {d['cache_hits']} cache hits; estimated ${d['estimated_dollars']:.4f}; embedding time {eta}; "
             f"{d['quarantined']} files would be quarantined")
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
            applied = apply_repair(settings, url, plan)
            repairs.append({"plan": plan.as_dict(), "applied": applied})
            if applied["partitions_to_materialize"]:
                code = cmd_full(argparse.Namespace(**{
                    **vars(args), "partition": applied["partitions_to_materialize"], "doc_type": None,
                    "dry_run": False, "parallel": getattr(args, "parallel", 1), "json": False}))
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
    _emit(args, report, "\n".join(human))
    return EXIT_OK if report["passed"] else EXIT_VALIDATION


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
    from .pipeline.rollback import RollbackError, rollback_partition, rollback_run

    settings, manifest = _settings(args)
    if bool(args.partitions) == bool(args.run):
        raise ConfigError("give partition keys or --run RUN_ID (not both)")
    url = _database(settings)
    who = f"cli:{os.environ.get('USER', 'unknown')}"
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
        else:
            lines.append(f"{e['at']}  rollback  {e['partition']:<24} of run {e['run_id']}  "
                         f"{e['rows_deleted']} deleted, {e['rows_restored']} restored")
    _emit(args, {"events": events}, "\n".join(lines) or "no history yet")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings, manifest = _settings(args)
    from .storage import ledger

    url = _database(settings)
    st = ledger.status(settings, url)
    keys = manifest.partition_keys()
    st["partitions_total"] = len(keys)
    st["partitions_missing"] = [k for k in keys if k not in st["partitions"]]
    lines = [f"{st['documents_loaded']} documents in {st['rows']} rows; {len(st['quarantined'])} files quarantined; "
             f"{st['partitions_loaded']}/{len(keys)} partitions loaded"]
    for key, p in st["partitions"].items():
        lines.append(f"  {key:<28} {p['documents']:>6} docs {p['rows']:>7} rows  loaded {p['loaded_at']}")
    for q in st["quarantined"]:
        lines.append(f"  quarantined {q['doc_type']}/{q['path']}: {q['reason']}")
    _emit(args, st, "\n".join(lines))
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    settings, manifest = _settings(args)
    payload = {**settings.public_dict(), "shards": manifest.shards, "partitions": len(manifest.partition_keys()),
               "doc_types": manifest.doc_types(), "chunking": manifest.chunking.__dict__}
    _emit(args, payload, "\n".join(f"{k}: {v}" for k, v in payload.items()))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON object (the last line of stdout)")
    parser = argparse.ArgumentParser(
        prog="doc-migrate", parents=[common],
        description="Bootstrap, migrate and validate the doc-server's PostgreSQL + pgvector database.",
        epilog="Exit codes: 0 ok, 1 partitions failed, 2 bad configuration, 3 validation failed, "
               "4 partition locked by another run, 5 database unreachable (retry), 130 interrupted.")
    parser.add_argument("--sources", metavar="FILE", help="source manifest (default: $DOC_MIGRATION_SOURCES or the "
                        "packaged sample corpus)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="Dagster log level on stderr")
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
    full.set_defaults(func=cmd_full)

    plan = sub.add_parser("plan", parents=[common], help="what a full run would do and cost, without doing it")
    plan.add_argument("--partition", action="append", metavar="KEY", help="only this partition (repeatable)")
    plan.add_argument("--doc-type", action="append", metavar="TYPE", help="only this doc type (repeatable)")
    plan.add_argument("--parallel", type=int, default=1, metavar="N", help="parser processes (default: 1)")
    plan.set_defaults(func=cmd_plan)

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
    status.set_defaults(func=cmd_status)

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*resolve_job_def.*")
    for name in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
        import dagster

        warnings.filterwarnings("ignore", category=getattr(dagster, name, DeprecationWarning))
    if not hasattr(args, "json"):
        args.json = False
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    from .pipeline.load import PartitionBusy
    from .storage.database import DatabaseError

    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"doc-migrate: configuration error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseError as exc:
        print(f"doc-migrate: database error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.retryable else EXIT_CONFIG
    except PartitionBusy as exc:
        print(f"doc-migrate: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt:
        print("doc-migrate: interrupted; committed partitions are kept, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # never a raw traceback: exception texts may quote a connection string
        import traceback

        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        print(f"doc-migrate: unexpected error: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
