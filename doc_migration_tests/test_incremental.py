"""Incremental at file granularity: a re-run parses only the files that changed, keeps the other files'
rows where they are, and ends exactly where a clean load of the same files ends (issue 17)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration_tests.helpers import run_cli
from doc_migration_tests.test_resume_rollback import snapshot

FILES = 12


def _page(i: int, words: str = "") -> str:
    sections = "\n\n".join(
        f"## Section {j} of page {i}\n\n" + " ".join(f"token{i}x{j}x{k} explains {words}" for k in range(60))
        for j in range(4))
    return f"# Page {i}\n\n{sections}\n"


def _corpus(root: Path, max_tokens: int = 200) -> Path:
    """One partition of FILES Markdown pages, each a few chunks long."""
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(FILES):
        (docs / f"page{i:02d}.md").write_text(_page(i), encoding="utf-8")
    return _manifest(root, max_tokens)


def _manifest(root: Path, max_tokens: int, include: str = "**/*.md") -> Path:
    manifest = root / "sources.yaml"
    manifest.write_text(
        f"shards: 1\nchunking:\n  max_tokens: {max_tokens}\n  overlap_tokens: 0\nsources:\n"
        f"  - source_name: guide\n    doc_type: guide\n    path: docs\n    include: ['{include}']\n", encoding="utf-8")
    return manifest


def _full(manifest: Path, url: str, home: Path, **env: str) -> Any:
    r = run_cli(["--sources", str(manifest), "full", "--json"], database_url=url, home=home, extra_env=env)
    assert r.code == 0, r.stderr[-3000:]
    return r.json


def _clean(manifest: Path, pg_server_url: str, home: Path, name: str) -> dict[str, tuple[Any, ...]]:
    """The rows a blank database gets from the same files."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    _full(manifest, url, home / "clean")
    return snapshot(url)


def _edit(root: Path) -> None:
    """One file changed, one deleted, one added."""
    docs = root / "docs"
    (docs / "page03.md").write_text(_page(3, "rewritten"), encoding="utf-8")
    (docs / "page05.md").unlink()
    (docs / "zz-new.md").write_text(_page(99), encoding="utf-8")


def test_a_rerun_parses_only_changed_files_and_ends_as_a_clean_load(tmp_path: Path, database_url: str,
                                                                    pg_server_url: str) -> None:
    manifest = _corpus(tmp_path)
    first = _full(manifest, database_url, tmp_path)
    assert first["files_parsed"] == FILES
    before = snapshot(database_url)
    _edit(tmp_path)

    plan = run_cli(["--sources", str(manifest), "plan", "--json"], database_url=database_url, home=tmp_path)
    assert plan.code == 0, plan.stderr
    p = plan.json
    assert (p["files_to_parse"], p["files_new"], p["files_changed"], p["files_deleted"], p["files_unchanged"]) == (
        2, 1, 1, 1, FILES - 2)
    human = run_cli(["--sources", str(manifest), "plan"], database_url=database_url, home=tmp_path)
    assert "files to parse 2 (new 1, changed 1, settings changed 0), deleted 1" in human.stdout + human.stderr

    second = _full(manifest, database_url, tmp_path)
    assert second["files_parsed"] == 2 and second["files"] == FILES
    after = snapshot(database_url)
    assert after == _clean(manifest, pg_server_url, tmp_path, "incremental_clean_a")
    kept = {k for k in before if "page03" not in k and "page05" not in k}
    assert kept and all(after[k] == before[k] for k in kept), "unchanged files' rows are untouched"
    assert second["rows_deleted"] == sum(1 for k in before if "page05" in k)
    assert second["documents_unchanged"] == FILES - 2

    again = _full(manifest, database_url, tmp_path)
    assert again["rows_written"] == 0 and again["files_parsed"] == 0


def test_a_chunker_setting_reparses_every_file_and_plan_says_so(tmp_path: Path, database_url: str,
                                                                pg_server_url: str) -> None:
    manifest = _corpus(tmp_path)
    _full(manifest, database_url, tmp_path)
    _manifest(tmp_path, max_tokens=120)
    p = run_cli(["--sources", str(manifest), "plan", "--json"], database_url=database_url, home=tmp_path).json
    assert (p["files_version_changed"], p["files_to_parse"], p["files_unchanged"]) == (FILES, FILES, 0)
    second = _full(manifest, database_url, tmp_path)
    assert second["files_parsed"] == FILES
    assert snapshot(database_url) == _clean(manifest, pg_server_url, tmp_path, "incremental_clean_b")


def test_rolling_back_an_incremental_load_restores_the_previous_rows(tmp_path: Path, database_url: str,
                                                                     pg_server_url: str) -> None:
    manifest = _corpus(tmp_path)
    _full(manifest, database_url, tmp_path)
    v1 = snapshot(database_url)
    _edit(tmp_path)
    run2 = _full(manifest, database_url, tmp_path)["run_id"]
    assert snapshot(database_url) != v1
    back = run_cli(["--sources", str(manifest), "rollback", "--run", run2, "--yes"], database_url=database_url,
                   home=tmp_path)
    assert back.code == 0, back.stderr
    assert snapshot(database_url) == v1
    # After a rollback the file records are gone: the next run re-parses everything, and is exact.
    redo = _full(manifest, database_url, tmp_path)
    assert redo["files_parsed"] == FILES
    assert snapshot(database_url) == _clean(manifest, pg_server_url, tmp_path, "incremental_clean_c")


@pytest.mark.parametrize("point", ["parse-file:1", "parse-before-commit:1", "load-during-write:1",
                                   "load-before-commit:1", "load-after-commit:1"])
def test_sigkill_during_an_incremental_run_then_resume_equals_a_clean_load(
        point: str, tmp_path: Path, database_url: str, pg_server_url: str) -> None:
    manifest = _corpus(tmp_path)
    _full(manifest, database_url, tmp_path)
    _edit(tmp_path)
    crashed = run_cli(["--sources", str(manifest), "full"], database_url=database_url, home=tmp_path,
                      extra_env={"DOC_MIGRATION_CRASH_AT": point})
    assert crashed.code == -signal.SIGKILL, f"failpoint {point} was not reached: {crashed.stderr[-1500:]}"
    resumed = _full(manifest, database_url, tmp_path)
    assert resumed["files_parsed"] in (0, 2)  # 0: the crash came after the commit
    assert snapshot(database_url) == _clean(manifest, pg_server_url, tmp_path, "incremental_clean_d")
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT (SELECT count(*) FROM doc_migration.staged_partitions), "
                            "(SELECT count(*) FROM doc_migration.staged_files), "
                            "(SELECT count(*) FROM doc_migration.file_state)").fetchone()
    assert left == (0, 0, FILES)
    assert _full(manifest, database_url, tmp_path)["rows_written"] == 0


def test_a_new_file_cannot_take_over_a_kept_files_row(tmp_path: Path, database_url: str) -> None:
    """``page01.md#chunk0001`` would map to chunk 1 of page01.md: it is refused, naming the path."""
    _corpus(tmp_path)
    manifest = _manifest(tmp_path, 200, include="**/*")
    _full(manifest, database_url, tmp_path)
    before = snapshot(database_url)
    assert "guide/guide/page01.md#chunk0001" in before
    (tmp_path / "docs" / "page01.md#chunk0001").write_text("# Impostor\n\nNot page one.\n", encoding="utf-8")
    r = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url, home=tmp_path)
    assert snapshot(database_url) == before, r.stderr[-2000:]
    reasons = {q["path"]: q["reason"] for q in r.json["quarantined_files"]}
    assert "already produced by another file" in reasons["page01.md#chunk0001"]


def _index_oid(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('documents_embedding_hnsw')::oid").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def test_a_rewrite_of_most_rows_rebuilds_the_hnsw_index_and_a_small_change_keeps_it(
        tmp_path: Path, database_url: str, pg_server_url: str) -> None:
    """Maintaining HNSW row by row costs several times a rebuild (docs/benchmarks.md, chunker scenario)."""
    env = {"DOC_MIGRATION_INDEX_REBUILD_MIN_ROWS": "1"}  # the default 20,000 is for real corpora
    manifest = _corpus(tmp_path)
    _full(manifest, database_url, tmp_path, **env)
    built = _index_oid(database_url)
    assert built is not None, "the first load builds the index"
    _edit(tmp_path)  # 2 of 12 files: new text for a few rows, the index is maintained
    _full(manifest, database_url, tmp_path, **env)
    assert _index_oid(database_url) == built
    _manifest(tmp_path, max_tokens=120)  # every chunk's text changes: rebuilt after the load
    _full(manifest, database_url, tmp_path, **env)
    rebuilt = _index_oid(database_url)
    assert rebuilt is not None and rebuilt != built
    assert snapshot(database_url) == _clean(manifest, pg_server_url, tmp_path, "incremental_clean_e")


def _texts(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT md5(content) FROM documents")}


def _fingerprinted(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM doc_migration.text_fingerprints").fetchone()[0])  # type: ignore[index]


def test_a_rerun_checks_the_rows_it_wrote_and_fingerprints_only_new_texts(tmp_path: Path,
                                                                         database_url: str) -> None:
    manifest = _corpus(tmp_path)
    _full(manifest, database_url, tmp_path)
    texts_before = _texts(database_url)
    with psycopg.connect(database_url) as conn:
        copied = conn.execute("SELECT count(*) FROM documents WHERE doc_path LIKE 'page01.md%'").fetchone()[0]  # type: ignore[index]
    assert copied > 1 and _fingerprinted(database_url) == len(texts_before), "the first run fingerprints each text once"

    docs = tmp_path / "docs"
    (docs / "zz-copy.md").write_bytes((docs / "page01.md").read_bytes())  # duplicates of rows the run leaves alone
    (docs / "page03.md").write_text(_page(3, "rewritten"), encoding="utf-8")
    second = _full(manifest, database_url, tmp_path)
    written = second["rows_inserted"] + second["rows_updated"]
    new_texts = _texts(database_url) - texts_before
    assert new_texts and _fingerprinted(database_url) == len(texts_before) + len(new_texts), (
        "only the texts never seen before are fingerprinted")

    report = json.loads((tmp_path / "reports" / f"validation-{second['run_id']}.json").read_text(encoding="utf-8"))
    checks = report["checks"]
    scope = f"rows written by run {second['run_id']}"
    assert {n for n, c in checks.items() if c.get("scope") == scope} == {"embeddings", "schema", "retrieval",
                                                                         "duplicates"}
    dup = checks["duplicates"]
    assert dup["rows_written_checked"] == written and dup["rows_scanned"] == second["chunks"]
    assert dup["exact_groups"] == copied, "each copied row is found beside the unchanged row it copies"
    pairs = {tuple(sorted([f["canonical"]["doc_path"].split("#")[0], f["duplicates"][0]["doc_path"].split("#")[0]]))
             for f in dup["findings"] if f["kind"] == "exact"}
    assert pairs == {("page01.md", "zz-copy.md")}
    assert checks["schema"]["rows_sampled"] <= written and checks["retrieval"]["sampled"] <= written

    # `validate` still looks at everything: the same groups, every row sampled where it samples.
    v = run_cli(["--sources", str(manifest), "validate", "--json"], database_url=database_url, home=tmp_path)
    assert v.code == 0, v.stderr[-2000:]
    full = v.json["checks"]
    assert "scope" not in full["duplicates"] and full["duplicates"]["exact_groups"] == copied
    assert full["duplicates"]["rows_written_checked"] is None
    assert full["schema"]["rows_sampled"] > checks["schema"]["rows_sampled"]


def _scan_corpus(root: Path) -> tuple[Any, Any, list[str]]:
    from doc_migration.config import Settings
    from doc_migration.manifest import load_manifest

    manifest_path = _corpus(root)
    manifest = load_manifest(manifest_path)
    settings = Settings(home=root, database_url="unused", sources_path=manifest_path)
    return settings, manifest, manifest.partition_keys()


def test_a_scan_reads_only_files_whose_stat_key_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from doc_migration.pipeline import scan as scan_mod

    settings, manifest, keys = _scan_corpus(tmp_path)
    fresh = scan_mod.scan(settings, manifest, keys)
    items = {i.rel_path: (i, d) for s in fresh.values() for i, d in s.items}
    assert all(i.stat_key is None for i, _ in items.values()), "a file written just now is never trusted by stat"

    monkeypatch.setattr(scan_mod, "RACY_NS", 0)  # as if the files had been written long ago
    settled = {i.rel_path: (i, d) for s in scan_mod.scan(settings, manifest, keys).values() for i, d in s.items}
    assert all(i.stat_key for i, _ in settled.values())
    known = {(i.source_name, i.rel_path): (str(i.stat_key), d) for i, d in settled.values() if d}
    known[("guide", "page01.md")] = (known[("guide", "page01.md")][0], "recorded-digest")
    page02 = tmp_path / "docs" / "page02.md"
    before = page02.stat()
    page02.write_text(page02.read_text(encoding="utf-8").replace("Page 2", "Page X"), encoding="utf-8")
    os.utime(page02, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime: only ctime moved
    assert page02.stat().st_size == before.st_size and page02.stat().st_mtime_ns == before.st_mtime_ns

    again = {i.rel_path: d for s in scan_mod.scan(settings, manifest, keys, known).values() for i, d in s.items}
    assert again["page01.md"] == "recorded-digest", "an unchanged stat key reuses the recorded sha256 unread"
    assert again["page02.md"] == hashlib.sha256(page02.read_bytes()).hexdigest() != settled["page02.md"][1]
    assert again["page03.md"] == settled["page03.md"][1]


def test_a_rerun_finds_an_edit_that_kept_size_and_mtime(tmp_path: Path, database_url: str) -> None:
    manifest = _corpus(tmp_path)
    time.sleep(2.1)  # the files settle: the first scan records stat keys it may trust
    _full(manifest, database_url, tmp_path)
    with psycopg.connect(database_url) as conn:
        keyed = conn.execute("SELECT count(*) FROM doc_migration.partition_files "  # type: ignore[index]
                             "WHERE stat_key IS NOT NULL").fetchone()[0]
    assert keyed == FILES
    page = tmp_path / "docs" / "page04.md"
    before = page.stat()
    page.write_text(page.read_text(encoding="utf-8").replace("Page 4", "Page Z"), encoding="utf-8")
    os.utime(page, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = _full(manifest, database_url, tmp_path)
    assert second["files_parsed"] == 1 and second["rows_written"] >= 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM documents WHERE content LIKE '%%Page Z%%'").fetchone()[0] >= 1  # type: ignore[index]
    assert _full(manifest, database_url, tmp_path)["rows_written"] == 0
