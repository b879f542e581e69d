"""``python -m benchmarks``: run the benchmark and write docs/benchmarks.md (+ .svg)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .corpus import DEFAULT_DUMP_DOCS, DEFAULT_SEED, DEFAULT_SIZE_MB
from .report import write_report
from .runner import ALL_SCENARIOS, DEFAULT_SCENARIOS, BenchConfig, run_benchmark, save_results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--size-mb", type=float, default=DEFAULT_SIZE_MB, help="corpus size (default 184)")
    p.add_argument("--dump-docs", type=int, default=DEFAULT_DUMP_DOCS, help="documents of the SQL-dump case")
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma-separated, of {','.join(ALL_SCENARIOS)} (default: all but scale4x)")
    p.add_argument("--scale4x", action="store_true", help="also run the 4x corpus (memory flatness; long)")
    p.add_argument("--changed-share", type=float, default=0.01, help="share of files edited for the 'changed' re-run")
    p.add_argument("--tpm-size-mb", type=float, default=4.0, help="corpus size of the TPM-capped scenario")
    p.add_argument("--tpm", type=int, default=None, help="TPM cap (default: the planned tokens / 3.3)")
    p.add_argument("--parse-share", type=float, default=0.1,
                   help="share of the files parsed in-process under cProfile in the 'profile' scenario")
    p.add_argument("--doc-types", default=None, help="comma-separated subset of the doc types (quick runs)")
    p.add_argument("--shards", type=int, default=8, help="shards of the generated manifests (default 8)")
    p.add_argument("--home", type=Path, default=None,
                   help="bench home: corpus cache, runs, logs, results (default $DOC_MIGRATION_BENCH_HOME or "
                        "./.doc_migration/bench)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="report to write")
    p.add_argument("--no-report", action="store_true", help="only print the results JSON")
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.add_argument("--merge", type=Path, default=None, metavar="RESULTS_JSON",
                   help="take the scenarios this invocation did not run from an earlier results file")
    p.add_argument("--report-only", type=Path, default=None, metavar="RESULTS_JSON",
                   help="rewrite the report from a results file without running anything")
    return p


def merge(results: dict[str, Any], path: Path) -> None:
    """Add the scenarios of an earlier results file that ``results`` lacks (noted in ``merged_from``)."""
    earlier = json.loads(path.read_text(encoding="utf-8"))
    merged = results.setdefault("merged_from", {})
    for name, value in (earlier.get("scenarios") or {}).items():
        if name not in results.setdefault("scenarios", {}):
            results["scenarios"][name] = value
            # A scenario merged before keeps the start of the run that measured it.
            merged[name] = (earlier.get("merged_from") or {}).get(name) or earlier.get("started_at", str(path))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        results = json.loads(args.report_only.read_text(encoding="utf-8"))
        if args.merge:
            merge(results, args.merge)
        write_report(results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in ALL_SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {ALL_SCENARIOS}", file=sys.stderr)
        return 2
    if args.scale4x and "scale4x" not in scenarios:
        scenarios = (*scenarios, "scale4x")
    home = args.home or Path(os.environ.get("DOC_MIGRATION_BENCH_HOME") or Path.cwd() / ".doc_migration" / "bench")
    config = BenchConfig(home=home.resolve(), seed=args.seed, size_mb=args.size_mb, dump_docs=args.dump_docs,
                         scenarios=scenarios, changed_share=args.changed_share, tpm_size_mb=args.tpm_size_mb,
                         doc_types=tuple(d for d in args.doc_types.split(",") if d) if args.doc_types else None,
                         shards=args.shards, tpm=args.tpm, parse_share=args.parse_share,
                         database_url=os.environ.get("DATABASE_URL") or None, keep=args.keep)
    results = run_benchmark(config)
    if args.merge:
        merge(results, args.merge)
        save_results(config, results)
    if not args.no_report:
        svg = write_report(results, args.out)
        print(f"wrote {args.out} and {svg}", file=sys.stderr)
    print(json.dumps({k: v for k, v in results.items() if k != "scenarios"}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
