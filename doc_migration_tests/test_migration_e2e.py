"""The whole path through the real CLI, the real Dagster job and the real database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, count_rows, fetch_rows, run_cli


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A private copy of the sample corpus that tests may modify."""
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, dest)
    return dest / "sources.yaml"


def test_full_migration_then_idempotent_rerun(tmp_path: Path, database_url: str, corpus: Path) -> None:
    first = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    summary = first.json
    for key in ("run_id", "documents_loaded", "documents_unchanged", "quarantined", "rows_written",
                "chunks_embedded", "failed_partitions", "seconds"):
        assert key in summary
    assert summary["failed_partitions"] == [] and summary["quarantined"] == 0
    assert summary["documents_loaded"] >= 13
    rows = fetch_rows(database_url)
    assert len(rows) == summary["rows_written"] == count_rows(database_url)
    assert all(r[4] == 3072 for r in rows.values()), "every row has a 3072-dim embedding"
    assert all(r[5] and r[5] > 0 for r in rows.values())
    meta = next(iter(rows.values()))[6]
    for field in ("source_file", "source_sha256", "chunk_index", "chunk_count", "embedding_model"):
        assert field in meta

    # The run's validation report took the asset checks' results from the pipeline schema, not
    # recomputed (nor read from Dagster's event log).
    (report_path,) = (tmp_path / "reports").glob(f"validation-{summary['run_id']}.json")
    report = json.loads(report_path.read_text())
    with psycopg.connect(database_url) as conn:
        stored = dict(conn.execute("SELECT check_name, status FROM doc_migration.check_results WHERE run_id = %s",
                                   (summary["run_id"],)).fetchall())
    assert {"counts", "checksums", "embeddings", "schema"} <= set(stored) and set(stored.values()) == {"done"}
    assert all(report["checks"][name].get("reused") for name in stored), {n: report["checks"][n] for n in stored}

    status = run_cli(["--sources", str(corpus), "status", "--json"], database_url=database_url, home=tmp_path)
    assert status.code == 0, status.stderr
    st = status.json
    assert st["rows"] == len(rows)
    assert st["documents_loaded"] == summary["documents_loaded"]
    assert st["quarantined"] == []

    second = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path)
    assert second.code == 0, second.stderr[-3000:]
    assert second.json["rows_written"] == 0 and second.json["chunks_embedded"] == 0
    assert second.json["documents_unchanged"] == summary["documents_loaded"]
    assert fetch_rows(database_url) == rows, "an unchanged re-run must not touch any row"


def test_changes_replace_exactly_the_affected_rows(tmp_path: Path, database_url: str, corpus: Path) -> None:
    assert run_cli(["--sources", str(corpus), "full"], database_url=database_url, home=tmp_path).code == 0
    before = fetch_rows(database_url)
    root = corpus.parent
    (root / "rust" / "error-handling.md").write_text("# Error handling\n\nUse `Result` and the `?` operator.\n")
    (root / "rust" / "cargo-features.md").unlink()
    (root / "rust" / "empty.md").write_text("   \n")
    (root / "rust" / "nul.md").write_bytes(b"# Title\n\nbad \x00 byte\n")
    result = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    after = fetch_rows(database_url)
    changed = {k for k in after if k in before and after[k] != before[k]}
    assert {k for k in before if k not in after} == {"rust/rust-sample/cargo-features.md"}
    assert changed == {"rust/rust-sample/error-handling.md"}
    assert "Use `Result`" in after["rust/rust-sample/error-handling.md"][3]
    assert after["rust/rust-sample/error-handling.md"][0] == before["rust/rust-sample/error-handling.md"][0], \
        "row ids are deterministic"
    reasons = {q["path"]: q["reason"] for q in result.json["quarantined_files"]}
    assert reasons["empty.md"].startswith("empty file")
    assert "NUL" in reasons["nul.md"]
    assert result.json["rows_deleted"] == 1
    st = run_cli(["--sources", str(corpus), "status", "--json"], database_url=database_url, home=tmp_path).json
    assert {q["path"] for q in st["quarantined"]} == {"empty.md", "nul.md"}
    assert st["rows"] == len(after)


def test_bad_configuration_exits_2_with_a_clear_message(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {source_name: x, doc_type: rust, path: does-not-exist}\n")
    result = run_cli(["--sources", str(bad), "full"], database_url=database_url, home=tmp_path)
    assert result.code == 2
    assert "does-not-exist" in result.stderr and "does not exist" in result.stderr


def test_unreachable_database_exits_5_without_leaking_the_password(tmp_path: Path) -> None:
    url = "postgresql://migrator:S3cr3t-Pa55@127.0.0.1:1/docs"
    result = run_cli(["full"], database_url=url, home=tmp_path)
    assert result.code == 5
    assert "cannot connect" in result.stderr
    assert "S3cr3t-Pa55" not in result.stderr + result.stdout


def test_dagster_job_execute_runs_one_partition(tmp_path: Path, database_url: str) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(tmp_path),
           "DOC_MIGRATION_SOURCES": str(SAMPLE_MANIFEST), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "job", "execute", "-m", "doc_migration", "-j", "migrate", "--tags",
                           json.dumps({"dagster/partition": "rust-00"})], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        keys = [r[0] for r in conn.execute("SELECT partition_key FROM doc_migration.partition_state")]
        doc_types = {r[0] for r in conn.execute("SELECT DISTINCT doc_type FROM documents")}
    assert keys == ["rust-00"]
    assert doc_types <= {"rust"}
