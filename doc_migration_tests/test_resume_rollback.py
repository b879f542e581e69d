"""Crash anywhere, resume, roll back: the documents table always ends exactly as a clean run leaves it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli


def snapshot(url: str) -> dict[str, tuple[Any, ...]]:
    """Every row with its id, content, metadata, embedding (as text) and timestamps."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT doc_type || '/' || source_name || '/' || doc_path, id, content, metadata::text, "
            "md5(embedding::text), token_count FROM documents").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def spend_inputs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(inputs), 0) FROM doc_migration.embedding_spend").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, dest)
    return dest / "sources.yaml"


@pytest.fixture(scope="module")
def clean_snapshot(tmp_path_factory: pytest.TempPathFactory, pg_server_url: str) -> dict[str, tuple[Any, ...]]:
    name = "clean_reference"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    home = tmp_path_factory.mktemp("clean")
    result = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=url, home=home)
    assert result.code == 0, result.stderr[-2000:]
    return snapshot(url)


# The offline embedder's vectors are computed during the load (never cached), so its runs have no
# embed-stage failpoints; those are exercised against the test server below.
CRASH_POINTS = [
    "scan-after-commit", "parse-file:3", "parse-before-commit:2",
    "load-during-write:2", "load-during-write:5", "load-before-commit:5", "load-after-commit:4",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_anywhere_then_resume_matches_a_clean_run(
        point: str, tmp_path: Path, database_url: str, clean_snapshot: dict[str, tuple[Any, ...]]) -> None:
    crashed = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path,
                      extra_env={"DOC_MIGRATION_CRASH_AT": point})
    assert crashed.code == -signal.SIGKILL, f"failpoint {point} was not reached: {crashed.stderr[-1500:]}"
    resumed = run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--json"], database_url=database_url,
                      home=tmp_path)
    assert resumed.code == 0, resumed.stderr[-2000:]
    assert snapshot(database_url) == clean_snapshot
    with psycopg.connect(database_url) as conn:
        idle = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
                            ).fetchone()
        staged = conn.execute("SELECT count(*) FROM doc_migration.staged_partitions").fetchone()
        cached = conn.execute("SELECT count(*) FROM doc_migration.embedding_cache").fetchone()
        distinct = conn.execute("SELECT count(DISTINCT md5(content)) FROM documents").fetchone()
    assert idle == (0,) and staged == (0,)
    assert distinct is not None and distinct[0] > 0
    assert cached == (0,), "offline vectors are recomputed, never stored in the cache"
    again = run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--json"], database_url=database_url, home=tmp_path)
    assert again.json["rows_written"] == 0 and again.json["chunks_embedded"] == 0


def test_rollback_restores_exact_previous_versions(tmp_path: Path, database_url: str, corpus: Path) -> None:
    def full() -> dict[str, Any]:
        r = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path)
        assert r.code == 0, r.stderr[-2000:]
        return r.json

    run1 = full()["run_id"]
    v1 = snapshot(database_url)
    root = corpus.parent
    (root / "rust" / "ownership.md").write_text("# Ownership\n\nRewritten: every value has one owner.\n")
    (root / "rust" / "cargo-features.md").unlink()
    (root / "rust" / "new-page.md").write_text("# Async\n\n`async fn` returns a future.\n")
    (root / "talos" / "upgrades.mdx").write_text("")  # becomes quarantined
    run2 = full()["run_id"]
    v2 = snapshot(database_url)
    assert v2 != v1

    history = run_cli(["--sources", str(corpus), "history", "--json"], database_url=database_url, home=tmp_path)
    loads2 = [e for e in history.json["events"] if e["event"] == "load" and e["run_id"] == run2]
    changed = sorted(e["partition"] for e in loads2)
    assert changed, "run 2 loaded the changed partitions"

    refused = run_cli(["--sources", str(corpus), "rollback", "--run", run1, "--yes"], database_url=database_url,
                      home=tmp_path)
    assert refused.code == 2 and f"roll back run {run2} first" in refused.stderr

    # Partition wipe of one changed partition: exactly its v1 rows come back, the rest stays at v2.
    key = changed[0]
    one = run_cli(["--sources", str(corpus), "rollback", key, "--yes"], database_url=database_url, home=tmp_path)
    assert one.code == 0, one.stderr
    with psycopg.connect(database_url) as conn:
        owned = {f"{r[0]}/{r[1]}/{r[2]}" for r in conn.execute(
            "SELECT doc_type, source_name, doc_path FROM doc_migration.load_undo u JOIN doc_migration.loads l "
            "USING (load_id) WHERE l.run_id = %s AND l.partition_key = %s", (run2, key))}
    now = snapshot(database_url)
    for path in set(v1) | set(v2):
        expected = v1.get(path) if path in owned else v2.get(path)
        assert now.get(path) == expected, path

    # Run rollback: the rest of run 2, newest first; then run 1 down to an empty table.
    assert run_cli(["--sources", str(corpus), "rollback", "--run", run2, "--yes"], database_url=database_url,
                   home=tmp_path).code == 0
    assert snapshot(database_url) == v1
    status = run_cli(["--sources", str(corpus), "status", "--json"], database_url=database_url, home=tmp_path).json
    assert status["quarantined"] == []  # the quarantine list is rolled back with the partition
    assert run_cli(["--sources", str(corpus), "rollback", "--run", run1, "--yes"], database_url=database_url,
                   home=tmp_path).code == 0
    assert snapshot(database_url) == {}
    # Re-running reloads v2 exactly. The offline embedder recomputes its (free) vectors instead of
    # caching them: one per row written, and no tokens; the paid path's cache is tested below.
    before = spend_inputs(database_url)
    redo = full()
    assert snapshot(database_url) == v2
    assert spend_inputs(database_url) - before == redo["rows_written"] == len(v2)
    assert redo["tokens_sent"] == 0
    events = run_cli(["--sources", str(corpus), "history", "--json"], database_url=database_url,
                     home=tmp_path).json["events"]
    assert sum(1 for e in events if e["event"] == "rollback") >= 3


def test_second_concurrent_run_fails_fast_with_exit_4(tmp_path: Path, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('doc_migration:run:rust-00'))")
        busy = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path)
        assert busy.code == 4
        assert "rust-00 is being migrated by another doc-migrate run" in busy.stderr
    ok = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path)
    assert ok.code == 0, ok.stderr[-2000:]


def test_two_simultaneous_runs_end_correct(tmp_path: Path, database_url: str,
                                           clean_snapshot: dict[str, tuple[Any, ...]]) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(tmp_path), "DAGSTER_HOME": ""}
    cmd = [sys.executable, "-m", "doc_migration.cli", "--sources", str(SAMPLE_MANIFEST), "full"]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes in ([0, 0], [0, 4]), [p.stderr.read()[-1500:] for p in procs if p.stderr]
    assert snapshot(database_url) == clean_snapshot


def test_sigterm_finishes_the_partition_then_exits_130_and_resume_completes(
        tmp_path: Path, database_url: str, clean_snapshot: dict[str, tuple[Any, ...]]) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(tmp_path), "DAGSTER_HOME": "",
           "DOC_MIGRATION_PAUSE_AT": "load-before-commit:5"}
    proc = subprocess.Popen([sys.executable, "-m", "doc_migration.cli", "--sources", str(SAMPLE_MANIFEST), "full"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Every load pauses 5 s before its commit: wait until two partitions are committed and a
    # load sits in its transaction, then ask the run to stop. Loads run two partitions at a time.
    deadline = time.time() + 180
    paused = False
    committed = waiting = None
    while time.time() < deadline and not paused:
        time.sleep(0.5)
        try:
            with psycopg.connect(database_url) as conn:
                committed = conn.execute("SELECT count(*) FROM doc_migration.partition_state").fetchone()
                waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                       "'doc_migration' AND state = 'idle in transaction' AND query LIKE "
                                       "'%%staged_partitions%%'").fetchone()
                paused = bool(committed and committed[0] >= 2 and waiting and waiting[0])
        except psycopg.Error:
            continue
    assert paused, "the run never reached the paused load"
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    assert code == 130, proc.stderr.read()[-2000:] if proc.stderr else ""
    with psycopg.connect(database_url) as conn:
        states = conn.execute("SELECT count(*) FROM doc_migration.partition_state").fetchone()
    assert committed is not None and waiting is not None and states is not None
    in_flight_at_signal = committed[0] + waiting[0]
    assert in_flight_at_signal <= states[0] <= committed[0] + 2, \
        "the partitions in progress committed (at most the two load workers); nothing new started"
    resumed = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path)
    assert resumed.code == 0, resumed.stderr[-2000:]
    assert snapshot(database_url) == clean_snapshot


@pytest.mark.parametrize("point", ["embed-before-commit:2", "embed-after-commit:3", "load-before-commit:4",
                                   "parse-file:5"])
def test_kill_and_resume_never_embeds_a_chunk_twice(point: str, tmp_path: Path, database_url: str,
                                                      corpus: Path) -> None:
    """Against the OpenAI-compatible test server: what was embedded before the crash is never paid again."""
    from testkit.embedding_server import EmbeddingTestServer

    # The retrieval smoke test re-embeds samples on purpose; switch it off to count the migration alone.
    corpus.write_text(corpus.read_text() + "validation:\n  retrieval: {per_partition: 0}\n")
    with EmbeddingTestServer() as server:
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test",
               "MIGRATION_BATCH_SIZE": "2"}
        crashed = run_cli(["--sources", str(corpus), "full"], database_url=database_url, home=tmp_path,
                          extra_env={**env, "DOC_MIGRATION_CRASH_AT": point})
        assert crashed.code == -signal.SIGKILL, crashed.stderr[-1500:]
        resumed = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url,
                          home=tmp_path, extra_env=env)
        assert resumed.code == 0, resumed.stderr[-2000:]
        with psycopg.connect(database_url) as conn:
            distinct = conn.execute("SELECT count(DISTINCT content) FROM documents").fetchone()
        assert server.stats.duplicates() == {}, "a chunk was sent to the embedding API twice"
        assert distinct is not None and len(server.stats.text_counts) == distinct[0]


def test_a_run_killed_with_sigkill_is_marked_failed_by_the_next_run(tmp_path: Path, database_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: an in-process Dagster run whose process died stayed STARTED in run storage forever."""
    import dagster as dg

    crashed = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path,
                      extra_env={"DOC_MIGRATION_CRASH_AT": "load-during-write:1"})
    assert crashed.code == -signal.SIGKILL, crashed.stderr[-1500:]
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))

    def statuses() -> dict[str, dg.DagsterRunStatus]:
        with dg.DagsterInstance.get() as instance:
            return {str(r.run_id): r.status for r in instance.get_runs()}

    before = statuses()
    assert list(before.values()) == [dg.DagsterRunStatus.STARTED]
    resumed = run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--json"], database_url=database_url,
                      home=tmp_path)
    assert resumed.code == 0, resumed.stderr[-2000:]
    (dead,) = before
    assert f"run {dead} of a doc-migrate process that died" in resumed.stderr + resumed.stdout
    after = statuses()
    assert after[dead] == dg.DagsterRunStatus.FAILURE
    assert all(s == dg.DagsterRunStatus.SUCCESS for r, s in after.items() if r != dead)
