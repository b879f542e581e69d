"""Smoke test of the benchmark: the corpus generator and a tiny end-to-end benchmark run.

Not a timed test: it checks that the generator is deterministic and writes files every parser
accepts, and that the runner measures and reports a (tiny) migration correctly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmarks.corpus import CorpusInfo, generate_corpus, modify_files
from benchmarks.report import evaluate_targets, write_report
from benchmarks.runner import BenchConfig, run_benchmark
from doc_migration.config import OFFLINE_MODEL, Settings
from doc_migration.manifest import discover, load_manifest
from doc_migration.pipeline.parse import make_job, parse_file
from doc_migration.sources.base import ParseContext
from doc_migration.sources.registry import get_parser

SMALL = {"seed": 5, "size_mb": 0.3, "dump_docs": 4, "shards": 1, "dump_doc_types": ("jupiter",),
         "doc_types": ["rust", "solana", "jupyter", "ietf_rfc", "jupiter", "cilium"]}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"}


def test_generator_is_deterministic_realistic_and_parseable(tmp_path: Path) -> None:
    a = generate_corpus(tmp_path / "a", **SMALL)  # type: ignore[arg-type]
    b = generate_corpus(tmp_path / "b", **SMALL)  # type: ignore[arg-type]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert {"md", "mdx", "rst", "html", "json", "yaml", "ipynb", "txt", "pdf"} <= set(a.by_format)
    assert 0.25e6 < a.bytes < 0.6e6 and a.files == b.files
    cached = generate_corpus(tmp_path / "a", **SMALL)  # type: ignore[arg-type]
    assert cached.seconds == CorpusInfo.load(tmp_path / "a").seconds  # type: ignore[union-attr]

    manifest = load_manifest(a.manifest)
    settings = Settings.from_env(a.manifest)
    texts: set[str] = set()
    rows = 0
    for item in discover(manifest):
        result = parse_file(make_job(settings, manifest, item.source_name, item.rel_path, item.doc_type, item.fmt,
                                     item.refusal))
        assert result.quarantine is None, (item.rel_path, result.quarantine)
        assert result.rows, item.rel_path
        rows += len(result.rows)
        texts.update(str(r[6]) for r in result.rows)
    assert len(texts) > 0.8 * rows  # varied text: the embedding cache cannot dedupe the corpus away

    dumps = sorted((a.root / "dump").rglob("*.sql"))
    assert dumps and a.dump_docs == 4
    data = dumps[0].read_bytes()
    docs = get_parser("sql-dump")(data, ParseContext(dumps[0].name, "jupiter", "jupiter-docs", "sql-dump"))
    assert len(docs) == 4
    assert all(d.embedding is not None and len(d.embedding) == 3072 for d in docs)
    assert all(d.embedding_model == OFFLINE_MODEL for d in docs)

    edited = modify_files(a.docs_dir, 0.2, seed=1)
    assert edited and _digest(tmp_path / "a") != _digest(tmp_path / "b")


def test_tiny_benchmark_run(tmp_path: Path, pg_server_url: str) -> None:
    config = BenchConfig(home=tmp_path / "bench", seed=3, size_mb=0.08, dump_docs=3,
                         scenarios=("first", "copy", "one_file", "changed", "deleted", "chunker", "dump"), doc_types=("rust", "talos"),
                         shards=1, dump_doc_types=("jupiter",), database_url=pg_server_url, log=lambda _msg: None)
    results = run_benchmark(config)
    assert not results.get("errors"), results.get("errors")
    sc = results["scenarios"]

    first = sc["first"]
    assert first["exit_code"] == 0, first.get("stderr_tail")
    assert first["summary"]["chunks"] > 0 and first["summary"]["chunks_embedded"] > 0
    assert {"scan", "parse", "embed", "load"} <= set(first["dagster"]["stages"])
    assert first["derived"]["chunks_per_min"] > 0
    assert first["processes"]["peak_pss_total"] > 0 and "doc-migrate" in first["processes"]["kinds"]
    assert first["sizes"]["documents_rows"] == first["summary"]["chunks"]

    assert sc["copy"]["rows"] == first["sizes"]["documents_rows"] and sc["copy"]["copy_rows_per_s"] > 0
    changed = sc["changed"]  # one file of one partition edited: the other partition is an unchanged re-run
    assert changed["files_edited"] == 1
    assert changed["summary"]["chunks_embedded"] == changed["new_distinct_texts"] > 0
    assert changed["summary"]["documents_unchanged"] > 0
    # Incremental: each edit re-processes exactly the files it touched, the rest is not read.
    files = first["summary"]["files_parsed"]
    assert sc["one_file"]["incremental"]["files_parsed"] == changed["incremental"]["files_parsed"] == 1
    assert sc["deleted"]["incremental"]["files_parsed"] == 0
    assert sc["deleted"]["summary"]["rows_deleted"] > 0 and sc["deleted"]["incremental"]["chunks_embedded"] == 0
    assert sc["chunker"]["incremental"]["files_parsed"] == files - 1  # every file left after the deletion
    assert 0 < sc["one_file"]["incremental"]["wall_ratio_to_first"]

    dump = sc["dump"]
    assert dump["exit_code"] == 0, dump.get("stderr_tail")
    assert dump["rows_with_embedding"] == 3 and dump["summary"]["chunks_embedded"] == 0

    md = tmp_path / "benchmarks.md"
    svg = write_report(results, md)
    text = md.read_text(encoding="utf-8")
    assert "## Targets" in text and "## Runs" in text and svg.read_text().startswith("<svg")
    assert "## Incremental re-runs" in text and "| 1 file deleted | 1 |" in text
    met = {row["target"]: row["met"] for row in evaluate_targets(results)}
    assert any("1 %-changed" in t and m for t, m in met.items())


def test_merge_keeps_the_start_of_the_run_that_measured_each_scenario(tmp_path: Path) -> None:
    """Merging twice must not relabel old scenarios with the intermediate run's start."""
    import json

    from benchmarks.__main__ import merge

    older = tmp_path / "older.json"
    older.write_text(json.dumps({"started_at": "T2", "merged_from": {"first": "T1"},
                                 "scenarios": {"first": {"wall_seconds": 1}, "dump": {"wall_seconds": 2},
                                               "scale4x": {"wall_seconds": 3}}}), encoding="utf-8")
    results = {"started_at": "T3", "scenarios": {"scale4x": {"wall_seconds": 4}}}
    merge(results, older)
    assert results["merged_from"] == {"first": "T1", "dump": "T2"}
    assert results["scenarios"]["scale4x"] == {"wall_seconds": 4}  # this run's own measurement wins
