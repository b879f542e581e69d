"""What an operator meets at the command line, through the real `doc-migrate` in a subprocess: exit codes
and one-line messages with their fix, a repair that survives being killed half way, rows another
manifest loaded, and global options where a person types them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psycopg
import pytest

from .helpers import SAMPLE_MANIFEST, run_cli

TRACEBACK = "Traceback (most recent call last)"


def _tamper(database_url: str, doc_type: str = "rust") -> str:
    """A stray manual UPDATE of one row; returns the partition that owns it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pr.partition_key, pr.document_id FROM doc_migration.partition_rows pr "
            "WHERE pr.doc_type = %s ORDER BY pr.doc_path LIMIT 1", (doc_type,)).fetchone()
        assert row is not None
        conn.execute("UPDATE documents SET content = content || ' (edited by hand)' WHERE id = %s", (row[1],))
    return str(row[0])


def test_global_options_after_the_command_and_nearest_names(tmp_path: Path, database_url: str) -> None:
    # `--sources` and `--json` after the subcommand, as people type them.
    ok = run_cli(["full", "--sources", str(SAMPLE_MANIFEST), "--json"], database_url=database_url, home=tmp_path)
    assert ok.code == 0, ok.stderr[-3000:]
    assert ok.json["failed_partitions"] == [] and ok.json["rows_inserted"] > 0
    assert TRACEBACK not in ok.stderr

    typo = run_cli(["full", "--partition", "rust-0", "--json"], database_url=database_url, home=tmp_path)
    assert typo.code == 2
    assert "did you mean 'rust-01'?" in typo.stderr, typo.stderr
    assert typo.json == {"success": False, "exit_code": 2, "error": typo.json["error"]}  # --json: JSON on failure too
    doc_type = run_cli(["full", "--doc-type", "rst"], database_url=database_url, home=tmp_path)
    assert doc_type.code == 2 and "did you mean 'rust'?" in doc_type.stderr, doc_type.stderr

    # status names what is missing, not only how many.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM doc_migration.partition_state WHERE partition_key = 'talos-01'")
    status = run_cli(["status"], database_url=database_url, home=tmp_path)
    assert status.code == 0
    assert "13/14 partitions of this manifest loaded; not loaded: talos-01" in status.stdout, status.stdout


def test_missing_api_key_fails_before_any_work(tmp_path: Path, database_url: str) -> None:
    started = time.monotonic()
    result = run_cli(["full"], database_url=database_url, home=tmp_path,
                     extra_env={"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert result.code == 2, result.stderr[-3000:]
    assert "needs OPENAI_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, not 91
    assert time.monotonic() - started < 60
    with psycopg.connect(database_url) as conn:  # nothing scanned, nothing created
        assert conn.execute("SELECT to_regclass('doc_migration.partition_scans')").fetchone() == (None,)


def test_a_failing_blocking_check_exits_3_with_its_message_and_fix(tmp_path: Path, database_url: str) -> None:
    assert run_cli(["full"], database_url=database_url, home=tmp_path).code == 0
    tampered = _tamper(database_url, "rust")
    other = next(k for k in ("talos-00", "talos-01", "cilium-00", "cilium-01") if k != tampered)
    # A run over another partition: the whole-database checksum gate catches the edited row.
    result = run_cli(["full", "--partition", other, "--all-partitions"], database_url=database_url, home=tmp_path)
    assert result.code == 3, (result.code, result.stderr[-3000:])
    assert "check failed: content_matches_checksums:" in result.stderr, result.stderr
    assert "doc-migrate validate --repair" in result.stderr
    assert TRACEBACK not in result.stderr and "Stack Trace" not in result.stderr, result.stderr


def test_repair_killed_half_way_is_finished_by_the_next_full(tmp_path: Path, database_url: str) -> None:
    assert run_cli(["full"], database_url=database_url, home=tmp_path).code == 0
    rows_before = run_cli(["status", "--json"], database_url=database_url, home=tmp_path).json["rows"]
    tampered = _tamper(database_url)
    assert run_cli(["validate"], database_url=database_url, home=tmp_path).code == 3

    killed = run_cli(["validate", "--repair", "--yes"], database_url=database_url, home=tmp_path,
                     extra_env={"DOC_MIGRATION_CRASH_AT": "repair-after-reset"})
    assert killed.code == -9, (killed.code, killed.stderr[-2000:])
    status = run_cli(["status", "--json"], database_url=database_url, home=tmp_path).json
    assert status["partitions_awaiting_reload"] == [tampered]
    assert status["rows"] < rows_before
    history = run_cli(["history", "--json"], database_url=database_url, home=tmp_path).json["events"]
    resets = [e for e in history if e["event"] == "reset"]
    assert [(e["partition"], e["reloaded_at"]) for e in resets] == [(tampered, None)], resets
    plan = run_cli(["plan"], database_url=database_url, home=tmp_path)
    assert f"await their reload: {tampered}" in plan.stdout, plan.stdout

    resumed = run_cli(["full"], database_url=database_url, home=tmp_path)
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert f"validate --repair` reset and did not reload: {tampered}" in resumed.stderr
    after = run_cli(["status", "--json"], database_url=database_url, home=tmp_path).json
    assert after["partitions_awaiting_reload"] == [] and after["rows"] == rows_before
    assert run_cli(["validate"], database_url=database_url, home=tmp_path).code == 0
    history = run_cli(["history", "--json"], database_url=database_url, home=tmp_path).json["events"]
    assert all(e["reloaded_at"] for e in history if e["event"] == "reset")


def test_repair_in_one_command(tmp_path: Path, database_url: str) -> None:
    """tamper -> validate 3 -> validate --repair --yes 0 -> validate 0 (the command, not its steps)."""
    assert run_cli(["full"], database_url=database_url, home=tmp_path).code == 0
    _tamper(database_url)
    assert run_cli(["validate"], database_url=database_url, home=tmp_path).code == 3
    repaired = run_cli(["validate", "--repair", "--yes"], database_url=database_url, home=tmp_path)
    assert repaired.code == 0, repaired.stderr[-3000:]
    assert TRACEBACK not in repaired.stderr
    assert run_cli(["validate"], database_url=database_url, home=tmp_path).code == 0


@pytest.fixture()
def renamed_manifest(tmp_path: Path) -> Path:
    """The sample corpus with its Rust source renamed: the rows of `rust-sample` become foreign to it."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, corpus)
    manifest = corpus / "sources.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("source_name: rust-sample",
                                                                      "source_name: rust-docs"), encoding="utf-8")
    return manifest


def test_rows_of_another_manifest_are_named_with_the_fix(tmp_path: Path, database_url: str,
                                                         renamed_manifest: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(["full"], database_url=database_url, home=home).code == 0
    other = ["--sources", str(renamed_manifest)]
    blocked = run_cli([*other, "full"], database_url=database_url, home=home)
    assert blocked.code == 3, blocked.stderr[-3000:]
    assert f"run `doc-migrate --sources {renamed_manifest} prune --foreign`" in blocked.stderr, blocked.stderr
    assert "source rust-sample" in blocked.stderr and len(blocked.stderr.strip().splitlines()) <= 2

    status = run_cli([*other, "status", "--json"], database_url=database_url, home=home).json
    assert {f["source_name"] for f in status["foreign_rows"]} == {"rust-sample"}
    plan = run_cli([*other, "plan", "--json"], database_url=database_url, home=home).json
    assert plan["foreign_rows"] == status["foreign_rows"]

    dry = run_cli([*other, "prune", "--foreign", "--dry-run", "--json"], database_url=database_url, home=home)
    assert dry.code == 0 and dry.json["pruned"] == []
    pruned = run_cli([*other, "prune", "--foreign", "--yes", "--json"], database_url=database_url, home=home)
    assert pruned.code == 0, pruned.stderr
    assert {p["source_name"] for p in pruned.json["pruned"]} == {"rust-sample"}
    assert run_cli([*other, "status", "--json"], database_url=database_url, home=home).json["foreign_rows"] == []

    loaded = run_cli([*other, "full"], database_url=database_url, home=home)
    assert loaded.code == 0, loaded.stderr[-3000:]
    assert run_cli([*other, "validate"], database_url=database_url, home=home).code == 0
    with psycopg.connect(database_url) as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT source_name FROM documents WHERE doc_type = 'rust'")}
    assert names == {"rust-docs"}
    events = run_cli(["history", "--json"], database_url=database_url, home=home).json["events"]
    assert any(e["event"] == "prune" and e["source_name"] == "rust-sample" for e in events)
