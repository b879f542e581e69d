"""Validation of the real shared corpora (skipped without ../shared/corpus): every ERROR check passes,
WARN checks report only true findings (verified independently here), and recall@1 ≥ 0.99 with the
offline embedder. The doc-server exports also exercise the ``canonical`` duplicate strategy."""

from __future__ import annotations

import json
import os
import posixpath
import time
from pathlib import Path

import psycopg
import pytest

from doc_migration.config import Settings
from doc_migration.manifest import load_manifest
from doc_migration.validation.config import DuplicateConfig, ValidationConfig
from doc_migration.validation.duplicates import simhash
from doc_migration.validation.html import render_html
from doc_migration.validation.repair import apply_repair, plan_repair
from doc_migration.validation.report import build_report
from doc_migration_tests.helpers import REPO_ROOT, run_cli
from doc_migration_tests.validation.test_units import parse_html

EXPORTS = REPO_ROOT / "examples" / "shared-doc-server-exports.yaml"
REAL = REPO_ROOT / "examples" / "shared-real-formats.yaml"


def _contents(url: str, paths: list[tuple[str, str]]) -> list[str]:
    with psycopg.connect(url) as conn:
        return [conn.execute("SELECT content FROM documents WHERE source_name = %s AND doc_path = %s",
                             p).fetchone()[0] for p in paths]  # type: ignore[index]


def _verify_duplicates(url: str, result: dict[str, object], bits: int) -> None:
    """Exact groups hold identical text; near groups differ but are within ``bits`` SimHash bits."""
    findings = result["findings"]
    assert isinstance(findings, list)
    for f in findings:
        members = [f["canonical"], *f["duplicates"]]
        texts = _contents(url, [(m["source_name"], m["doc_path"]) for m in members])
        assert all(len(m["doc_path"]) >= len(f["canonical"]["doc_path"]) for m in members)
        if f["kind"] == "exact":
            assert len(set(texts)) == 1, f
        else:
            fps = [simhash(t) for t in texts]
            assert len(set(texts)) > 1 and all(fp is not None for fp in fps)
            assert any(bin(fps[0] ^ fp).count("1") <= bits for fp in fps[1:]), f  # type: ignore[operator]


def _verify_links(url: str, manifest: Path, result: dict[str, object]) -> None:
    """Each dangling link really has no migrated target."""
    root = load_manifest(manifest).sources[0].path
    assert root is not None
    with psycopg.connect(url) as conn:
        migrated = {r[0] for r in conn.execute("SELECT DISTINCT metadata->>'source_file' FROM documents")}
        module_of: dict[str, str] = dict(conn.execute(
            "SELECT DISTINCT metadata->>'source_file', metadata->>'module_path' FROM documents "
            "WHERE metadata ? 'module_path'").fetchall())
    modules = {posixpath.normpath(m) for m in module_of.values()}
    suffixes = ("", ".rst", ".md", ".txt", ".ipynb", ".mdx")
    findings = result["findings"]
    assert isinstance(findings, list)
    for f in findings:
        path = f["link"].split("#", 1)[0]
        if f["reason"] == "target is not among the exported records":
            target = posixpath.normpath(posixpath.join(posixpath.dirname(module_of[f["source_file"]]), path))
            assert not any(target + s in modules for s in suffixes), f
            continue
        base = (root / f["source_file"]).parent
        local = os.path.normpath(base / path) if not path.startswith("/") else None
        if local is not None:
            rel = os.path.relpath(local, root)
            variants = [rel] if f["kind"] != "doc" else [rel + s for s in suffixes]
            assert not any(v in migrated for v in variants), f
            if f["reason"] == "target does not exist":
                assert not any((root / v).exists() for v in variants), f


@pytest.mark.shared_corpus
@pytest.mark.parametrize("manifest", [EXPORTS, REAL], ids=["doc-server-exports", "real-formats"])
def test_shared_corpus_validates(manifest: Path, tmp_path: Path, database_url: str, shared_corpus: Path) -> None:
    run = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url, home=tmp_path)
    assert run.code == 0, run.stderr[-3000:]  # the blocking asset checks passed inside the run
    reports = list((tmp_path / "reports").glob("validation-*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["passed"] is True

    settings = Settings(home=tmp_path, database_url=database_url, sources_path=manifest.resolve())
    keys = load_manifest(manifest).partition_keys()
    start = time.perf_counter()
    report = build_report(settings, database_url, keys, "shared")
    seconds = time.perf_counter() - start
    timings = {n: c["seconds"] for n, c in report["checks"].items()}
    print(f"\n{manifest.name}: {report['totals']['rows']} rows, report in {seconds:.2f} s: {timings}")

    assert report["passed"] and report["errors"] == [], {n: report["checks"][n]["message"] for n in report["errors"]}
    assert set(report["warnings"]) <= {"duplicates", "links"}, report["warnings"]
    retrieval = report["checks"]["retrieval"]
    assert retrieval["recall_at_1"] >= 0.99 and retrieval["sampled"] >= 5 * len(keys) * 0.5, retrieval["message"]
    assert retrieval["index_used"] is True
    assert report["checks"]["counts"]["total_quarantined"] == run.json["quarantined"]
    _verify_duplicates(database_url, report["checks"]["duplicates"], 3)
    _verify_links(database_url, manifest, report["checks"]["links"])

    html = parse_html(render_html(report))
    assert html.by_id["total-rows"] == f"{report['totals']['rows']:,}"
    assert html.by_id["overall-status"] == "PASSED"

    if manifest == EXPORTS:  # the canonical strategy: aliases recorded, the group counts as resolved
        cfg = ValidationConfig(duplicates=DuplicateConfig(strategy="canonical"))
        dup = build_report(settings, database_url, keys, None, config=cfg, only=["duplicates"])
        plan = plan_repair(dup)
        assert plan.partitions == [] and plan.duplicate_strategy == "canonical"
        done = apply_repair(settings, database_url, plan, config=cfg)
        assert done["duplicates"]["aliases_recorded"] == done["duplicates"]["groups"] == dup["checks"]["duplicates"][
            "exact_groups"]
        after = build_report(settings, database_url, keys, None, config=cfg)
        assert after["checks"]["duplicates"]["exact_groups"] == 0
        assert after["checks"]["duplicates"]["aliased_groups"] >= done["duplicates"]["groups"]
        assert after["passed"] and "checksums" not in after["errors"]  # aliases live in metadata, not content
        with psycopg.connect(database_url) as conn:
            aliased = conn.execute("SELECT metadata->'aliases' FROM documents WHERE metadata ? 'aliases' LIMIT 1"
                                   ).fetchone()
        assert aliased is not None and {"source_name", "doc_path"} <= set(aliased[0][0])
