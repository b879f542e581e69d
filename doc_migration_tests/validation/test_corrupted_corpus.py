"""A migrated sample corpus corrupted behind the pipeline's back: each corruption is caught by the check
named for it, with an actionable message; the blocking asset checks stop a run; the repair plus a
``full`` run bring every check back to green.

The corpus is a copy of the packaged sample with one exact duplicate file and one broken link added,
and a manifest asking for full sampling, the ``drop`` duplicate strategy and required metadata.
One database is shared by the module (migrating costs seconds); the repair test runs last.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from doc_migration.config import Settings
from doc_migration.manifest import load_manifest
from doc_migration.storage.database import ensure_vector_index
from doc_migration.validation import retrieval
from doc_migration.validation.checks import check_embeddings, check_staged_chunks, check_staged_embeddings
from doc_migration.validation.html import render_html
from doc_migration.validation.repair import apply_repair, plan_repair
from doc_migration.validation.report import build_report
from doc_migration.validation.schemas import check_schema
from doc_migration_tests.helpers import SAMPLE_MANIFEST, CliResult, run_cli
from doc_migration_tests.validation.test_units import parse_html

LINK_LINE = "\nSee [the missing guide](missing-guide.md) and [ownership](ownership.md) for more.\n"
DRIFT_FILE = "ietf_rfc/rfc-sample-http-caching.txt"


@dataclass
class Scenario:
    url: str
    home: Path
    corpus: Path
    manifest: Path
    settings: Settings
    keys: list[str]
    partition_of: dict[str, str]  # doc_path -> partition
    baseline: dict[str, Any]
    wrong_dims: dict[str, dict[str, Any]]
    blocked: CliResult
    reports_before_block: set[str]
    report: dict[str, Any]
    skipped: CliResult  # `full` without --all-partitions: nothing changed on disk, so no Dagster run

    def cli(self, *args: str) -> CliResult:
        return run_cli(["--sources", str(self.manifest), *args], database_url=self.url, home=self.home)


def _write_corpus(root: Path) -> tuple[Path, Path]:
    """Copy the sample corpus, add a duplicate file and a broken link, write a strict manifest."""
    corpus = root / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, corpus)
    (corpus / "rust" / "ownership-copy.md").write_bytes((corpus / "rust" / "ownership.md").read_bytes())
    with open(corpus / "rust" / "error-handling.md", "a", encoding="utf-8") as fh:
        fh.write(LINK_LINE)
    raw = yaml.safe_load((corpus / "sources.yaml").read_text(encoding="utf-8"))
    raw["validation"] = {
        "schema": {"sample_per_partition": 10_000},
        "retrieval": {"per_partition": 10_000},
        "duplicates": {"strategy": "drop"},
    }
    raw["doc_types"] = {"rust": {"required_metadata": {"category": "str", "complexity": "str"}},
                        "cilium": {"required_metadata": {"category": "str"}}}
    manifest = corpus / "sources.yaml"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return corpus, manifest


def _exec(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)  # noqa: S608 - fixed test statements, values bound
        return cur.fetchall() if cur.description else []


def _corrupt_wrong_dims(s: Settings, url: str) -> dict[str, dict[str, Any]]:
    """A vector of the wrong dimension needs an untyped column (vector(3072) refuses it): alter, check,
    restore. NaN cannot be stored at all (pgvector refuses it), so non-finite is covered by the norm."""
    (rid, original), = _exec(url, "SELECT id, embedding::text FROM documents WHERE doc_type = 'birdeye' "
                                  "ORDER BY doc_path LIMIT 1")
    with pytest.raises(psycopg.Error, match="NaN"):
        _exec(url, "UPDATE documents SET embedding = %s::vector WHERE id = %s",
              ("[" + ",".join(["NaN"] + ["0"] * (s.embedding_dims - 1)) + "]", rid))
    _exec(url, "DROP INDEX IF EXISTS documents_embedding_hnsw")
    _exec(url, "ALTER TABLE documents ALTER COLUMN embedding TYPE vector")
    _exec(url, "UPDATE documents SET embedding = '[1,0,0,0]' WHERE id = %s", (rid,))
    keys = load_manifest(s.sources_path).partition_keys()
    found = {"embeddings": check_embeddings(s, url, keys), "schema": check_schema(s, url, keys)}
    _exec(url, "UPDATE documents SET embedding = %s::vector WHERE id = %s", (original, rid))
    _exec(url, f"ALTER TABLE documents ALTER COLUMN embedding TYPE vector({int(s.embedding_dims)})")
    ensure_vector_index(url, s.embedding_dims)
    return found


def _corrupt(url: str, corpus: Path) -> None:
    """Everything behind the pipeline's back: SQL on documents, and one source file edited on disk."""
    _exec(url, "UPDATE documents SET content = left(content, 60) WHERE doc_path = 'cargo-features.md'")
    _exec(url, "UPDATE documents SET embedding = array_fill(0::real, ARRAY[vector_dims(embedding)])::vector "
               "WHERE doc_path = 'hubble.json'")
    _exec(url, "WITH a AS (SELECT id, embedding FROM documents WHERE doc_path = 'upgrades.mdx'), "
               "b AS (SELECT id, embedding FROM documents WHERE doc_path = 'machine-config.mdx') "
               "UPDATE documents d SET embedding = CASE WHEN d.id = (SELECT id FROM a) THEN (SELECT embedding FROM b) "
               "ELSE (SELECT embedding FROM a) END WHERE d.id IN (SELECT id FROM a UNION ALL SELECT id FROM b)")
    _exec(url, "UPDATE documents SET metadata = metadata - 'chunk_index' WHERE doc_path = 'network-policy.rst'")
    _exec(url, "UPDATE documents SET metadata = metadata - 'category' WHERE doc_path = 'ownership.md'")
    _exec(url, "DELETE FROM documents WHERE doc_path = 'limit-orders.md'")
    _exec(url, "INSERT INTO documents (id, doc_type, source_name, doc_path, content, metadata, embedding, token_count) "
               "SELECT %s, 'rust', 'rust-sample', 'stale/old-page.md', 'An old page nobody owns any more.', "
               "'{}'::jsonb, embedding, 8 FROM documents WHERE doc_path = 'ownership.md'", (uuid.uuid4(),))


@pytest.fixture(scope="module")
def scenario(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    name = f"t_val_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    root = tmp_path_factory.mktemp("corrupted")
    home = root / "home"
    home.mkdir()
    corpus, manifest = _write_corpus(root)
    try:
        first = run_cli(["--sources", str(manifest), "full", "--json"], database_url=url, home=home)
        assert first.code == 0, first.stderr[-3000:]
        settings = Settings(home=home, database_url=url, sources_path=manifest)
        keys = load_manifest(manifest).partition_keys()
        baseline = build_report(settings, url, keys, "baseline")
        partition_of = {r[0]: r[1] for r in _exec(
            url, "SELECT doc_path, partition_key FROM doc_migration.partition_rows")}
        wrong_dims = _corrupt_wrong_dims(settings, url)
        _corrupt(url, corpus)
        reports = home / "reports"
        before = {p.name for p in reports.glob("*")} if reports.exists() else set()
        blocked = run_cli(["--sources", str(manifest), "full", "--all-partitions", "--json"], database_url=url,
                          home=home)
        skipped = run_cli(["--sources", str(manifest), "full", "--json"], database_url=url, home=home)
        with open(corpus / DRIFT_FILE, "a", encoding="utf-8") as fh:  # the source changes after migration
            fh.write("\n   Appendix: a paragraph added after the migration.\n")
        report = build_report(settings, url, keys, "corrupted")
        yield Scenario(url, home, corpus, manifest, settings, keys, partition_of, baseline, wrong_dims, blocked,
                       before, report, skipped)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_baseline_passes_and_warns_only_about_the_planted_duplicate_and_link(scenario: Scenario) -> None:
    b = scenario.baseline
    assert b["passed"] and b["errors"] == [], b["errors"]
    assert sorted(b["warnings"]) == ["duplicates", "links"]
    dup = b["checks"]["duplicates"]
    assert dup["exact_groups"] == 1 and dup["near_groups"] == 0
    group = dup["findings"][0]
    assert group["canonical"]["doc_path"] == "ownership.md"  # shortest path wins
    assert [d["doc_path"] for d in group["duplicates"]] == ["ownership-copy.md"]
    links = b["checks"]["links"]
    assert [(f["source_file"], f["link"], f["reason"]) for f in links["findings"]] == [
        ("error-handling.md", "missing-guide.md", "target does not exist")]
    assert links["resolved"] >= 1  # the ownership.md link next to it resolves
    assert b["checks"]["retrieval"]["recall_at_1"] == 1.0
    assert b["checks"]["schema"]["rows_sampled"] == b["totals"]["rows"]


def test_wrong_dimension_is_caught_by_embeddings_and_schema(scenario: Scenario) -> None:
    emb, schema = scenario.wrong_dims["embeddings"], scenario.wrong_dims["schema"]
    assert not emb["passed"] and emb["severity"] == "ERROR"
    assert [f["problem"] for f in emb["findings"]] == ["dimension 4, expected 3072"]
    assert "doc-migrate validate --repair" in emb["message"]
    assert not schema["passed"]
    assert {f["problem"] for f in schema["findings"]} >= {"embedding must have 3072 dims"}


CAUGHT = [
    # (check, severity, doc_path the finding names, text in the finding)
    ("checksums", "ERROR", "cargo-features.md", "expected_sha256"),
    ("embeddings", "ERROR", "hubble.json", "zero vector"),
    ("schema", "ERROR", "hubble.json", "embedding is a zero vector"),
    ("retrieval", "ERROR", "upgrades.mdx", "machine-config.mdx"),
    ("retrieval", "ERROR", "machine-config.mdx", "upgrades.mdx"),
    ("schema", "ERROR", "network-policy.rst", "metadata.chunk_index is missing or null"),
    ("schema", "ERROR", "ownership.md", "metadata.category is missing or null"),
    ("counts", "ERROR", "limit-orders.md", "owned rows missing from documents"),
    ("orphans", "WARN", "stale/old-page.md", '"managed_source": true'),
    ("duplicates", "WARN", "ownership-copy.md", "repair deletes 1 row"),
    ("links", "WARN", "missing-guide.md", "target does not exist"),
    ("source_drift", "WARN", DRIFT_FILE.split("/", 1)[1], "changed on disk"),
]


@pytest.mark.parametrize(("check", "severity", "doc_path", "text"), CAUGHT,
                         ids=[f"{c}-{p}" for c, _, p, _ in CAUGHT])
def test_each_corruption_is_caught_by_its_check(scenario: Scenario, check: str, severity: str, doc_path: str,
                                                text: str) -> None:
    result = scenario.report["checks"][check]
    assert not result["passed"], result["message"]
    assert result["severity"] == severity
    assert "doc-migrate" in result["message"], result["message"]  # says what to run
    hits = [f for f in result["findings"] if doc_path in json.dumps(f)]
    assert hits, result["findings"]
    assert any(text in json.dumps(f) for f in hits), hits
    assert (check in scenario.report["errors"]) == (severity == "ERROR")


def test_report_totals_and_clean_checks(scenario: Scenario) -> None:
    r = scenario.report
    assert not r["passed"]
    assert sorted(r["errors"]) == ["checksums", "counts", "embeddings", "retrieval", "schema"]
    assert sorted(r["warnings"]) == ["duplicates", "links", "orphans", "source_drift"]
    assert r["checks"]["checksums"]["total_findings"] == 1  # the truncated row only
    assert r["checks"]["retrieval"]["recall_at_1"] < 0.99
    assert r["totals"]["rows"] == scenario.baseline["totals"]["rows"]  # one deleted, one orphan added
    rust = next(t for t in r["per_doc_type"] if t["doc_type"] == "rust")
    assert rust["failures"] >= 4 and {"checksums", "schema", "duplicates", "links"} <= set(rust["failed_checks"])
    assert r["throughput"]["runs"] and r["throughput"]["runs"][0]["rows_written"] > 0


def test_retrieval_without_the_index_finds_the_same_rows_in_one_exact_scan(
        scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deferred index build leaves exact scans only: one scan serves every sampled row, and the sample
    is thinned to the scan budget instead of taking minutes per query on a large table."""
    indexed = scenario.report["checks"]["retrieval"]
    cfg = load_manifest(scenario.manifest).validation
    _exec(scenario.url, "DROP INDEX documents_embedding_hnsw")
    try:
        exact = retrieval.check_retrieval(scenario.settings, scenario.url, scenario.keys, cfg)
        rows = _exec(scenario.url, "SELECT count(*) FROM documents")[0][0]
        monkeypatch.setattr(retrieval, "EXACT_BUDGET", rows * 3)
        thinned = retrieval.check_retrieval(scenario.settings, scenario.url, scenario.keys, cfg)
    finally:
        ensure_vector_index(scenario.url, scenario.settings.embedding_dims)
    assert indexed["index_exists"] and not exact["index_exists"]
    assert exact["sampled"] == indexed["sampled"] == exact["sampled_before_thinning"]
    assert sorted(f["doc_path"] for f in exact["findings"]) == sorted(f["doc_path"] for f in indexed["findings"])
    assert exact["recall_at_1"] == indexed["recall_at_1"] and not exact["passed"]
    assert "no HNSW index: exact search" in exact["message"]
    assert thinned["sampled"] == 3 and thinned["sampled_before_thinning"] == indexed["sampled"]


def test_blocking_checks_stop_the_run_before_the_report(scenario: Scenario) -> None:
    assert scenario.blocked.code == 3, scenario.blocked.stderr[-2000:]  # 3: validation failed (README)
    assert "check failed: content_matches_checksums:" in scenario.blocked.stderr
    assert scenario.blocked.json["rows_written"] == 0  # nothing changed on disk: nothing reloaded
    after = {p.name for p in (scenario.home / "reports").glob("*")}
    assert after == scenario.reports_before_block  # validation_report did not materialize


def test_unchanged_full_without_a_run_still_fails_on_a_tampered_database(scenario: Scenario) -> None:
    """No file changed, so `full` starts no run; its cheap whole-database checks still catch the edits."""
    out = scenario.skipped
    assert out.code == 3, out.stderr[-2000:]
    assert out.json["run_ids"] == [] and out.json["partitions_skipped_unchanged"] == len(scenario.keys)
    assert "checksums" in out.json["checks"]["errors"] and not out.json["success"]
    assert "check failed: checksums" in out.stderr and "validate --repair" in out.stderr


def test_dagster_asset_checks_report_the_corruptions(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from doc_migration.dagster_defs.checks import CHECKS
    from doc_migration.dagster_defs.resources import MigrationResource

    monkeypatch.setenv("DATABASE_URL", scenario.url)
    monkeypatch.setenv("DOC_MIGRATION_HOME", str(scenario.home))
    resource = MigrationResource(sources=str(scenario.manifest))
    results: dict[str, dg.AssetCheckResult] = {}
    for check in CHECKS:
        spec = next(iter(check.check_specs))
        result = check(dg.build_asset_check_context(resources={"migration": resource}))
        assert isinstance(result, dg.AssetCheckResult)
        results[spec.name] = result
    failing = {n: r.severity for n, r in results.items() if not r.passed}
    assert failing == {
        "rows_match_ledger": dg.AssetCheckSeverity.ERROR,
        "content_matches_checksums": dg.AssetCheckSeverity.ERROR,
        "embeddings_well_formed": dg.AssetCheckSeverity.ERROR,
        "rows_conform_to_schema": dg.AssetCheckSeverity.ERROR,
        "retrieval_smoke_test": dg.AssetCheckSeverity.ERROR,
        "no_duplicate_content": dg.AssetCheckSeverity.WARN,
        "cross_references_resolve": dg.AssetCheckSeverity.WARN,
        "no_orphan_rows": dg.AssetCheckSeverity.WARN,
        "sources_unchanged": dg.AssetCheckSeverity.WARN,
    }
    blocking = {next(iter(c.check_specs)).name for c in CHECKS if next(iter(c.check_specs)).blocking}
    assert {n for n, s in failing.items() if s == dg.AssetCheckSeverity.ERROR} <= blocking
    recall = results["retrieval_smoke_test"].metadata["recall_at_1"].value
    assert isinstance(recall, float) and recall < 0.99
    assert "doc-migrate" in str(results["retrieval_smoke_test"].description)


def test_staged_checks_catch_unloadable_and_unembedded_chunks(scenario: Scenario) -> None:
    """What parsed_docs / embeddings leave in staging is checked before anything is paid for or replaced."""
    s, url = scenario.settings, scenario.url
    _exec(url, "INSERT INTO doc_migration.staged_partitions (partition_key, checksum, run_id, files, documents, "
               "chunks, sources) VALUES ('rust-00', 'x', 'test', 1, 1, 2, '{rust-sample}')")
    try:
        _exec(url, "INSERT INTO doc_migration.staged_chunks (partition_key, id, doc_type, source_name, doc_path, "
                   "source_file, document_path, content, metadata, text_sha, token_count) VALUES "
                   "('rust-00', gen_random_uuid(), 'rust', 'rust-sample', 'big.md', 'big.md', 'big.md', 'text', "
                   "'{\"source_file\": \"big.md\", \"chunk_index\": 0, \"chunk_count\": 1, \"embedding_model\": \"m\"}', "
                   "sha256('text'::bytea), 9000), "
                   "('rust-00', gen_random_uuid(), 'rust', 'rust-sample', 'ok.md', 'ok.md', 'ok.md', 'fine', "
                   "'{\"source_file\": \"ok.md\", \"chunk_index\": 0, \"chunk_count\": 1, \"embedding_model\": \"m\"}', "
                   "sha256('fine'::bytea), 1)")
        chunks = check_staged_chunks(s, url, ["rust-00"])
        assert not chunks["passed"] and [f["doc_path"] for f in chunks["findings"]] == ["big.md"]
        assert "token_count 9000 outside 1..8191" in chunks["findings"][0]["problem"]
        # A paid embedder must have cached a vector for every staged chunk before the load...
        vectors = check_staged_embeddings(replace(s, embedder="openai"), url, ["rust-00"])
        assert not vectors["passed"] and {f["problem"] for f in vectors["findings"]} == {"no vector (not embedded)"}
        # ...while the offline embedder's vectors are computed by the load (and checked after it).
        assert s.embedder == "offline" and check_staged_embeddings(s, url, ["rust-00"])["passed"]
        assert check_staged_chunks(s, url, ["talos-00"])["passed"]  # another run's partitions are not judged
    finally:
        _exec(url, "DELETE FROM doc_migration.staged_chunks WHERE partition_key = 'rust-00'")
        _exec(url, "DELETE FROM doc_migration.staged_partitions WHERE partition_key = 'rust-00'")


def test_html_report_of_the_corrupted_database(scenario: Scenario, tmp_path: Path) -> None:
    page = render_html(scenario.report)
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    html = parse_html(page)
    totals = scenario.report["totals"]
    assert html.by_id["total-rows"] == f"{totals['rows']:,}"
    assert html.by_id["total-documents"] == f"{totals['documents_loaded']:,}"
    assert html.by_id["total-quarantined"] == str(totals["quarantined"])
    assert html.by_id["checks-failed"] == "9" and html.by_id["overall-status"] == "FAILED"
    assert "retrieval" in html.by_id["error-checks"] and "orphans" in html.by_id["warning-checks"]
    assert "check-retrieval" in html.by_id and "doc-type-rust" in html.by_id


def test_repair_then_full_returns_everything_to_green(scenario: Scenario) -> None:
    """The sequence ``doc-migrate validate --repair`` runs: plan, apply, full on the partitions, re-validate,
    and apply once more for duplicates that were in reloaded partitions."""
    s, url, keys = scenario.settings, scenario.url, scenario.keys
    plan = plan_repair(scenario.report)
    p = scenario.partition_of
    expected = {p[d] for d in ("cargo-features.md", "hubble.json", "upgrades.mdx", "machine-config.mdx",
                               "network-policy.rst", "ownership.md", "limit-orders.md")}
    assert set(plan.partitions) == expected
    assert "counts" in plan.reasons[p["limit-orders.md"]] and "checksums" in plan.reasons[p["cargo-features.md"]]
    assert plan.delete_orphans and plan.orphans_expected == 1
    assert plan.duplicate_strategy == "drop" and plan.duplicate_groups_expected == 1
    must = {r[0] for r in _exec(url, "SELECT id::text FROM documents WHERE doc_path IN "
                                     "('upgrades.mdx', 'machine-config.mdx', 'hubble.json')")}
    may = {r[0] for r in _exec(url, "SELECT document_id::text FROM doc_migration.partition_rows "
                                    "WHERE partition_key = ANY(%s)", (sorted(expected),))}
    assert must <= set(plan.purge_cache_ids) <= may

    # The operator fixes what only the sources can fix: the broken link (the drifted file is simply reloaded).
    path = scenario.corpus / "rust" / "error-handling.md"
    path.write_text(path.read_text(encoding="utf-8").replace(LINK_LINE, "\nSee [ownership](ownership.md).\n"),
                    encoding="utf-8")

    result = apply_repair(s, url, plan)
    assert result["partitions_reset"] == sorted(expected) and result["orphans_deleted"] == 1
    # ownership.md (missing metadata) and its copy share a reset partition: merging waits for the reload.
    deferred = p["ownership.md"] in expected or p["ownership-copy.md"] in expected
    assert (result["duplicates"]["deferred_groups"], result["duplicates"]["rows_dropped"]) == (
        (1, 0) if deferred else (0, 1))
    assert result["rows_deleted"] == len([d for d, k in p.items() if k in expected]) - 1  # limit-orders was gone
    to_run = sorted(set(result["partitions_to_materialize"]) | {p[DRIFT_FILE.split("/", 1)[1]]})
    run = scenario.cli("full", "--json", *[a for k in to_run for a in ("--partition", k)])
    assert run.code == 0, run.stderr[-3000:]

    second = build_report(s, url, keys, "after-reload")
    assert second["passed"], second["errors"]
    plan2 = plan_repair(second)
    assert plan2.partitions == [] and not plan2.delete_orphans
    assert plan2.is_empty() != deferred  # only the deferred duplicate is left to merge
    if not plan2.is_empty():
        again2 = apply_repair(s, url, plan2)
        assert again2["duplicates"]["rows_dropped"] == 1 and again2["partitions_to_materialize"] == []
    final = build_report(s, url, keys, "final")
    assert final["passed"] and final["errors"] == [] and final["warnings"] == [], {
        n: c["message"] for n, c in final["checks"].items() if not c["passed"]}
    assert final["checks"]["retrieval"]["recall_at_1"] == 1.0
    assert final["totals"]["quarantined"] == 1  # ownership-copy.md, dropped as a duplicate
    (q,) = final["quarantined"]
    assert q["path"] == "ownership-copy.md" and q["stage"] == "validate"

    again = scenario.cli("full", "--json")  # a normal run keeps it green and writes nothing
    assert again.code == 0, again.stderr[-3000:]
    assert again.json["rows_written"] == 0
    assert build_report(s, url, keys, "again")["warnings"] == []
