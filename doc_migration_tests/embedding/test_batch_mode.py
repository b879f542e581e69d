"""`doc-migrate full --embed-mode batch` (issue 18) against the test server's Files and Batch APIs,
through the real ``openai`` client and the CLI in a subprocess.

What is proven: a batch bootstrap stores the same rows as a synchronous one; a kill -9 at every
step of a submission (before and after the upload, after the batch is created, while waiting,
while downloading) is resumed without embedding any text twice (the server's counters); an expired
batch and failed requests are submitted again until the run is complete; `status` shows batches
in flight and `batches cancel` cancels them; `plan --embed-mode batch` prices at half.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-batch-0123456789abcdef"


def _env(server: EmbeddingTestServer, **extra: str) -> dict[str, str]:
    """Small requests and batches (2 inputs per request, 4 per batch) so the sample corpus (14 chunks) makes
    several batches; polls every 0.2 s so a test waits for nothing."""
    return {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY,
            "MIGRATION_BATCH_SIZE": "2", "DOC_MIGRATION_BATCH_MAX_INPUTS": "4",
            "DOC_MIGRATION_BATCH_POLL_SECONDS": "0.2", **extra}


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {f"{r[0]}/{r[1]}/{r[2]}": r[3:] for r in conn.execute(
            "SELECT doc_type, source_name, doc_path, id, content, metadata::text, md5(embedding::text), token_count "
            "FROM documents")}


def _new_db(pg_server_url: str, name: str) -> str:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)


@pytest.fixture(scope="module")
def sync_rows(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, ...]]:
    """The rows of a synchronous run of the sample corpus: what every batch run must reproduce."""
    url = _new_db(pg_server_url, "batch_mode_sync_baseline")
    with EmbeddingTestServer(api_key=KEY) as server:
        result = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=url,
                         home=tmp_path_factory.mktemp("sync"), extra_env=_env(server))
        assert result.code == 0, result.stderr[-3000:]
        assert server.stats.batches_created == 0
    rows = _rows(url)
    assert rows
    return rows


def _exactly_once(server: EmbeddingTestServer) -> None:
    st = server.stats
    assert st.batch_embedded_text_counts and set(st.batch_embedded_text_counts.values()) == {1}, \
        {t: n for t, n in st.batch_embedded_text_counts.items() if n != 1}
    assert st.batch_duplicates() == {}
    # (the synchronous endpoint still sees the retrieval check's sample queries: validation, not loading)


def _full(tmp_path: Path, url: str, server: EmbeddingTestServer, **extra: str) -> Any:
    return run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--embed-mode", "batch", "--json"],
                   database_url=url, home=tmp_path, extra_env=_env(server, **extra))


# ------------------------------------------------------------------------------------ (a) same rows
def test_batch_bootstrap_gives_the_rows_of_a_synchronous_run(tmp_path: Path, database_url: str,
                                                           sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_seconds=0.5) as server:
        started = time.perf_counter()
        result = _full(tmp_path, database_url, server)
        seconds = time.perf_counter() - started
        assert result.code == 0, result.stderr[-3000:]
        st = server.stats
        assert st.batches_created >= 2 and st.files_uploaded == st.batches_created
        assert st.batch_final_statuses == {"completed": st.batches_created}
        _exactly_once(server)
        summary = result.json
        assert summary["chunks_embedded"] == len(st.batch_embedded_text_counts)
        assert summary["batch_tokens"] == summary["tokens_sent"] > 0
        assert summary["estimated_dollars"] == pytest.approx(summary["tokens_sent"] * 0.065 / 1e6, rel=1e-6)
        assert "batch mode: submitted batch" in result.stderr
        print(f"batch bootstrap: {seconds:.1f} s, {st.batches_created} batches")  # the closing note's figure
        again = _full(tmp_path / "again", database_url, server)
        assert again.code == 0 and again.json["tokens_sent"] == 0
        assert server.stats.batches_created == st.batches_created, "a re-run submits nothing"
    assert _rows(database_url) == sync_rows
    listed = run_cli(["batches", "list", "--all", "--json"], database_url=database_url, home=tmp_path)
    assert listed.code == 0 and {b["status"] for b in listed.json["batches"]} == {"completed"}
    assert all(b["ingested"] for b in listed.json["batches"])


# ------------------------------------------------------------------------------------ (b) kill -9, resume
@pytest.mark.parametrize("point", ["batch-before-upload:2", "batch-after-upload:2", "batch-after-create:2",
                                   "batch-wait:1", "batch-download:2"])
def test_kill_9_then_resume_embeds_each_text_once(point: str, tmp_path: Path, database_url: str,
                                                  sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_seconds=0.3) as server:
        killed = _full(tmp_path, database_url, server, DOC_MIGRATION_CRASH_AT=point)
        assert killed.code == -signal.SIGKILL, (killed.code, killed.stderr[-2000:])
        before = server.stats.batches_created
        resumed = _full(tmp_path, database_url, server)
        assert resumed.code == 0, resumed.stderr[-3000:]
        st = server.stats
        _exactly_once(server)
        assert st.files_uploaded == st.batches_created, "an orphan upload is adopted, never uploaded again"
        if point.startswith(("batch-after-upload", "batch-after-create")):
            assert "adopted" in resumed.stderr
        print(f"{point}: {before} batches before the kill, {st.batches_created} in all; "
              f"max embeddings per text {max(st.batch_embedded_text_counts.values())}")
    assert _rows(database_url) == sync_rows


# ------------------------------------------------------------------------------------ (c) expiry, failures
def _when(condition: Callable[[], bool], then: Callable[[], None]) -> threading.Thread:
    """Run ``then`` once ``condition`` holds (a test changes the server while the CLI runs)."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not condition():
            time.sleep(0.02)
        then()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_expired_batch_is_submitted_again(tmp_path: Path, database_url: str,
                                             sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_seconds=1.0, batch_expiry_seconds=0.5) as server:
        # the first batches expire half done; then the window is long enough again
        _when(lambda: server.stats.batch_final_statuses["expired"] >= 1,
              lambda: setattr(server, "batch_expiry_seconds", 3600.0))
        result = _full(tmp_path, database_url, server)
        assert result.code == 0, result.stderr[-3000:]
        st = server.stats
        assert st.batch_final_statuses["expired"] >= 1 and st.batch_final_statuses["completed"] >= 1
        assert set(st.batch_embedded_text_counts.values()) == {1}, "what expired had not been embedded"
        assert "expired" in result.stderr
    assert _rows(database_url) == sync_rows


def test_failed_requests_are_submitted_again(tmp_path: Path, database_url: str,
                                             sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_fail_rate=0.5) as server:
        _when(lambda: server.stats.batch_final_statuses["completed"] >= 1,
              lambda: setattr(server, "batch_fail_rate", 0.0))
        result = _full(tmp_path, database_url, server)
        assert result.code == 0, result.stderr[-3000:]
        assert set(server.stats.batch_embedded_text_counts.values()) == {1}
        assert "failed or not run (submitted again)" in result.stderr
    rows = _rows(database_url)
    assert {k for k in rows if rows[k] != sync_rows.get(k)} == set()
    assert rows == sync_rows


def test_failed_requests_can_go_through_the_synchronous_endpoint(tmp_path: Path, database_url: str,
                                                                 sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_fail_rate=0.3) as server:
        result = _full(tmp_path, database_url, server, DOC_MIGRATION_BATCH_RETRY="sync")
        assert result.code == 0, result.stderr[-3000:]
        st = server.stats
        assert st.batches_created == st.files_uploaded == 4, "nothing was submitted again"
        assert 0 < len(st.batch_embedded_text_counts) < 14 and set(st.batch_embedded_text_counts.values()) == {1}
        assert result.json["chunks_embedded"] == 14
    assert _rows(database_url) == sync_rows


# ------------------------------------------------------------------------------------ (d) status, cancel
def test_status_shows_batches_in_flight_and_cancel_cancels_them(tmp_path: Path, database_url: str,
                                                                sync_rows: dict[str, tuple[Any, ...]]) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_seconds=600) as server:
        killed = _full(tmp_path, database_url, server, DOC_MIGRATION_CRASH_AT="batch-wait")
        assert killed.code == -signal.SIGKILL
        created = server.stats.batches_created
        assert created >= 2
        status = run_cli(["status", "--json"], database_url=database_url, home=tmp_path)
        assert status.code == 0, status.stderr
        flight = status.json["batches_in_flight"]
        assert len(flight) == created and {b["status"] for b in flight} <= {"validating", "in_progress"}
        assert all(b["expected_dollars"] > 0 and b["age_seconds"] >= 0 and b["batch_id"] for b in flight)
        human = run_cli(["status"], database_url=database_url, home=tmp_path)
        assert f"{created} Batch API batch(es) in flight" in human.stdout
        offline = run_cli(["batches", "cancel", "--yes"], database_url=database_url, home=tmp_path)
        assert offline.code == 2 and "DOC_MIGRATION_EMBEDDER=openai" in offline.stderr
        cancel = run_cli(["batches", "cancel", "--yes", "--json"], database_url=database_url, home=tmp_path,
                         extra_env=_env(server))
        assert cancel.code == 0, cancel.stderr
        assert len(cancel.json["cancelled"]) == created == server.stats.batches_cancelled
        server.batch_seconds = 0.2  # what the next run submits finishes at once
        resumed = _full(tmp_path, database_url, server)
        assert resumed.code == 0, resumed.stderr[-3000:]
        assert set(server.stats.batch_embedded_text_counts.values()) == {1}
        assert server.stats.batch_final_statuses["cancelled"] == created
    assert _rows(database_url) == sync_rows
    after = run_cli(["batches", "--json"], database_url=database_url, home=tmp_path)
    assert after.json["batches"] == []


def test_cancel_while_full_waits_stops_it(tmp_path: Path, database_url: str) -> None:
    with EmbeddingTestServer(api_key=KEY, batch_seconds=600) as server:
        env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(tmp_path), "DAGSTER_HOME": "",
               **_env(server)}
        env.pop("DOC_MIGRATION_SOURCES", None)
        proc = subprocess.Popen([sys.executable, "-m", "doc_migration.cli", "--sources", str(SAMPLE_MANIFEST),
                                 "full", "--embed-mode", "batch", "--json"], env=env, cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while server.stats.batches_created < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            cancel = run_cli(["batches", "cancel", "--yes"], database_url=database_url, home=tmp_path,
                             extra_env=_env(server))
            assert cancel.code == 0, cancel.stderr
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 1, err[-2000:]
        assert "were cancelled" in err


# ------------------------------------------------------------------------------------ (e) plan, refusals
def test_plan_in_batch_mode_is_half_the_synchronous_estimate(tmp_path: Path, database_url: str) -> None:
    with EmbeddingTestServer(api_key=KEY) as server:
        sync = run_cli(["--sources", str(SAMPLE_MANIFEST), "plan", "--json"], database_url=database_url,
                       home=tmp_path, extra_env=_env(server))
        batch = run_cli(["--sources", str(SAMPLE_MANIFEST), "plan", "--embed-mode", "batch", "--json"],
                        database_url=database_url, home=tmp_path, extra_env=_env(server))
        human = run_cli(["--sources", str(SAMPLE_MANIFEST), "plan", "--embed-mode", "batch"],
                        database_url=database_url, home=tmp_path, extra_env=_env(server))
        assert server.stats.requests == 0 and server.stats.files_uploaded == 0, "plan never calls the API"
    assert sync.code == batch.code == 0, batch.stderr
    assert sync.json["estimated_dollars"] > 0
    assert batch.json["estimated_dollars"] == pytest.approx(sync.json["estimated_dollars"] / 2, rel=1e-9)
    assert batch.json["estimated_dollars_sync"] == pytest.approx(sync.json["estimated_dollars"], rel=1e-9)
    assert batch.json["embed_mode"] == "batch" and "Batch API" in human.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_batch_mode_refuses_the_offline_embedder(how: str, tmp_path: Path, database_url: str) -> None:
    args = ["--sources", str(SAMPLE_MANIFEST), "full"] + (["--embed-mode", "batch"] if how == "flag" else [])
    env = {"DOC_MIGRATION_EMBED_MODE": "batch"} if how == "env" else {}
    result = run_cli(args, database_url=database_url, home=tmp_path, extra_env=env)
    assert result.code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DOC_MIGRATION_EMBEDDER=openai" in lines[0], result.stderr


def test_the_api_key_is_never_in_output_or_database(tmp_path: Path, database_url: str) -> None:
    with EmbeddingTestServer(api_key="sk-the-right-one-0123456789") as server:
        result = _full(tmp_path, database_url, server)
    assert result.code == 1
    assert KEY not in result.stdout + result.stderr
    assert "401" in " ".join(f["error"] for f in result.json["failures"])
    with psycopg.connect(database_url) as conn:
        dump = " ".join(str(r) for r in conn.execute("SELECT * FROM doc_migration.embedding_batches"))
        dump += " ".join(str(r) for r in conn.execute("SELECT error FROM doc_migration.partition_failures"))
    assert KEY not in dump
