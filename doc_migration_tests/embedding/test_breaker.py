"""Issue 19: a dead embedding endpoint fails the run fast (exit 5, with the reason) instead of ~16
minutes of retries, and the partitions that needed no new vectors are loaded all the same."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration.embedding.breaker import UNREACHABLE, ConnectionBreaker
from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-breaker-0123456789"


def test_the_breaker_opens_on_consecutive_failures_over_time_only() -> None:
    b = ConnectionBreaker(failures=3, min_seconds=0.2)
    for _ in range(5):
        b.record_failure("connection error")
    assert b.open_reason is None, "five quick refusals are a blip, not an outage"
    b.record_answer()
    b.record_failure("connection error")
    time.sleep(0.25)
    b.record_failure("connection error")
    assert b.open_reason is None, "two failures are not enough"
    b.record_failure("connection error")
    assert b.open_reason is not None and "3 consecutive connection failures" in b.open_reason
    b.record_answer()
    assert b.open_reason is not None, "once open it stays open for the process"
    assert ConnectionBreaker(failures=0).open_reason is None


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {f"{r[0]}/{r[1]}": r[2:] for r in conn.execute(
            "SELECT doc_type, doc_path, content, metadata->>'category', md5(embedding::text) FROM documents")}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, dest)
    manifest = dest / "sources.yaml"
    # The retrieval smoke test embeds queries: off, so that only the migration needs the endpoint.
    manifest.write_text(manifest.read_text() + "validation:\n  retrieval: {per_partition: 0}\n")
    return manifest


def test_a_dead_endpoint_exits_5_fast_and_loads_what_needs_no_new_vectors(tmp_path: Path, database_url: str,
                                                                          corpus: Path) -> None:
    env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_API_KEY": KEY}
    with EmbeddingTestServer(api_key=KEY) as server:
        first = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path,
                        extra_env={**env, "OPENAI_BASE_URL": server.base_url})
        assert first.code == 0, first.stderr[-3000:]
    before = _rows(database_url)

    # rust needs new vectors (new text); talos only new metadata (its texts are in the cache)
    root = corpus.parent
    (root / "rust" / "ownership.md").write_text("# Ownership\n\nRewritten while the endpoint is down.\n")
    corpus.write_text(corpus.read_text().replace("metadata: {category: infrastructure}",
                                                 "metadata: {category: platform}"))
    dead = {**env, "OPENAI_BASE_URL": f"http://127.0.0.1:{_dead_port()}/v1",
            "DOC_MIGRATION_OPENAI_BREAKER_FAILURES": "3", "DOC_MIGRATION_OPENAI_BREAKER_SECONDS": "1"}
    # Without the breaker this run retries for many minutes and the timeout fails the test.
    down = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path,
                   extra_env=dead, timeout=240)
    assert down.code == 5, down.stderr[-3000:]
    summary = down.json  # the last line is the JSON summary, as on every exit
    assert summary["success"] is False
    failures = summary["failures"]
    assert failures and all(f["stage"] == "embed" and UNREACHABLE in f["error"] for f in failures)
    assert {f["partition"].rsplit("-", 1)[0] for f in failures} == {"rust"}
    assert KEY not in down.stdout + down.stderr
    after = _rows(database_url)
    talos = [k for k in after if k.startswith("talos/")]
    assert talos and all(after[k][1] == "platform" for k in talos), "talos loaded without the endpoint"
    rust = {k: v for k, v in after.items() if k.startswith("rust/")}
    assert rust == {k: v for k, v in before.items() if k.startswith("rust/")}, "rust stays at its last version"

    with EmbeddingTestServer(api_key=KEY) as server:
        back = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path,
                       extra_env={**env, "OPENAI_BASE_URL": server.base_url})
        assert back.code == 0, back.stderr[-3000:]
    assert "Rewritten while the endpoint is down." in after_rust_content(database_url)


def after_rust_content(url: str) -> str:
    with psycopg.connect(url) as conn:
        return "\n".join(r[0] for r in conn.execute("SELECT content FROM documents WHERE doc_type = 'rust'"))
