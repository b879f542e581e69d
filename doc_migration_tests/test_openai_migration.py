"""The migration through the real openai client against the project's OpenAI-compatible test server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-0123456789abcdef"


def _env(server: EmbeddingTestServer, **extra: str) -> dict[str, str]:
    return {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY,
            **extra}


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT doc_path, id, content, md5(embedding::text), metadata->>'embedding_model' FROM documents")}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, dest)
    return dest / "sources.yaml"


def test_openai_path_plan_matches_spend_and_rerun_is_free(tmp_path: Path, database_url: str, corpus: Path) -> None:
    # The retrieval smoke test re-embeds samples on purpose; switch it off so the server counts the migration only.
    corpus.write_text(corpus.read_text() + "validation:\n  retrieval: {per_partition: 0}\n")
    with EmbeddingTestServer(api_key=KEY) as server:
        plan = run_cli(["--sources", str(corpus), "plan", "--json"], database_url=database_url, home=tmp_path,
                       extra_env=_env(server))
        assert plan.code == 0, plan.stderr[-2000:]
        assert server.stats.requests == 0, "plan never calls the API"
        first = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path,
                        extra_env=_env(server))
        assert first.code == 0, first.stderr[-3000:]
        sent = first.json["tokens_sent"]
        assert sent == server.stats.tokens > 0
        assert abs(plan.json["tokens_to_embed"] - sent) <= 0.01 * sent
        assert plan.json["estimated_dollars"] == pytest.approx(sent * 0.13 / 1e6, rel=1e-6)
        assert server.stats.max_inputs_per_request <= 2048
        assert server.stats.duplicates() == {}
        rows = _rows(database_url)
        assert {r[3] for r in rows.values()} == {"text-embedding-3-large"}
        second = run_cli(["--sources", str(corpus), "full", "--json"], database_url=database_url, home=tmp_path,
                         extra_env=_env(server))
        assert second.json["tokens_sent"] == 0 and server.stats.tokens == sent


def test_injected_faults_give_identical_rows(tmp_path: Path, database_url: str, pg_server_url: str) -> None:
    clean_db = psycopg.conninfo.make_conninfo(pg_server_url, dbname=psycopg.conninfo.conninfo_to_dict(
        database_url)["dbname"] + "_clean")
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{psycopg.conninfo.conninfo_to_dict(clean_db)["dbname"]}"')
    env_batch = {"MIGRATION_BATCH_SIZE": "4"}  # many small requests, so faults hit often
    with EmbeddingTestServer(api_key=KEY) as clean:
        ok = run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=clean_db, home=tmp_path / "a",
                     extra_env=_env(clean, **env_batch))
        assert ok.code == 0, ok.stderr[-2000:]
    with EmbeddingTestServer(api_key=KEY, fail_rate_500=0.2, garbage_rate=0.1, seed=0) as faulty:
        bad = run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--json"], database_url=database_url,
                      home=tmp_path / "b", extra_env=_env(faulty, **env_batch))
        assert bad.code == 0, bad.stderr[-2000:]
        assert faulty.stats.injected_500 + faulty.stats.garbage > 0, "faults were injected"
        assert bad.json["embedding_retries"] > 0
    assert _rows(database_url) == _rows(clean_db)


def test_wrong_api_key_fails_clearly_without_leaking_it(tmp_path: Path, database_url: str) -> None:
    with EmbeddingTestServer(api_key="sk-the-right-one") as server:
        result = run_cli(["--sources", str(SAMPLE_MANIFEST), "full", "--json"], database_url=database_url,
                         home=tmp_path, extra_env=_env(server))
    assert result.code == 1
    assert KEY not in result.stdout + result.stderr
    assert result.json["failed_partitions"], "every partition failed in the embed stage"
    assert "401" in " ".join(f["error"] for f in result.json["failures"])
