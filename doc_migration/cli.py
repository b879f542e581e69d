"""``doc-migrate``: the operator's command line. It drives the same Dagster assets as the UI.

Exit codes: 0 ok; 1 some partitions failed; 2 bad configuration or usage; 3 validation failed;
4 another run holds a partition's lock; 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings, redact
from .manifest import Manifest, load_manifest, split_partition_key

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_VALIDATION, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


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
    from .pipeline import progress
    from .storage import ledger

    migration = MigrationResource(sources=str(settings.sources_path), parallel=args.parallel)
    url = migration.url  # connect and migrate before starting runs: bad config fails fast
    instance = _dagster_instance(settings)
    job = defs.resolve_job_def("migrate")
    sink = Progress()
    progress.add_sink(sink)
    run_ids: list[str] = []
    ok = True
    try:
        for first, last in _ranges(manifest.partition_keys(), keys):
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
            ok = ok and result.success
    finally:
        progress.remove_sink(sink)
    summary = ledger.run_summary(settings, url, run_ids, keys)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["success"] = ok and not summary["failed_partitions"]
    human = (
        f"doc-migrate full: run {summary['run_id']}: {summary['documents_loaded']} documents loaded, "
        f"{summary['documents_unchanged']} unchanged, {summary['quarantined']} quarantined; "
        f"{summary['rows_written']} rows written ({summary['rows_inserted']} inserted, {summary['rows_updated']} "
        f"updated, {summary['rows_deleted']} deleted); {summary['chunks_embedded']} chunks embedded "
        f"({summary['embedding_cache_hits']} cache hits, {summary['tokens_sent']} tokens sent); "
        f"failed partitions: {len(summary['failed_partitions'])}; {summary['seconds']} s"
    )
    for q in summary["quarantined_files"][:50]:
        print(f"quarantined: {q['doc_type']}/{q['path']}: {q['reason']}", file=sys.stderr)
    for f in summary["failures"]:
        print(f"failed: {f['partition']} ({f['stage']}): {f['error']}", file=sys.stderr)
    _emit(args, summary, human)
    return EXIT_OK if summary["success"] else EXIT_FAILED


def cmd_plan(args: argparse.Namespace) -> int:
    raise ConfigError("'plan' is not implemented yet in this version")


def cmd_status(args: argparse.Namespace) -> int:
    settings, manifest = _settings(args)
    from .storage import ledger
    from .storage.database import migrate, resolve_database_url

    url = resolve_database_url(settings)
    migrate(settings, url)
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
               "4 partition locked by another run, 130 interrupted.")
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
    full.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    full.set_defaults(func=cmd_full)

    plan = sub.add_parser("plan", parents=[common], help="what a full run would do and cost, without doing it")
    plan.add_argument("--partition", action="append", metavar="KEY")
    plan.add_argument("--doc-type", action="append", metavar="TYPE")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser("status", parents=[common], help="what is loaded, per partition and in total")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser("config", parents=[common], help="effective configuration, secrets redacted")
    config.set_defaults(func=cmd_config)
    return parser


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt()


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
    signal.signal(signal.SIGTERM, _on_sigterm)
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
        return EXIT_CONFIG
    except PartitionBusy as exc:
        print(f"doc-migrate: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt:
        print("doc-migrate: interrupted; committed partitions are kept, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
