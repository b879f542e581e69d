"""A live legacy database (old rust_docs_vectors layout) migrates with its embeddings carried over."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from doc_migration_tests.helpers import run_cli


def _legacy_db(pg_server_url: str) -> str:
    name = f"legacy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    rng = np.random.default_rng(7)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        register_vector(conn)
        conn.execute("CREATE TABLE doc_embeddings (id serial PRIMARY KEY, crate_name text, doc_path text, "
                     "content text, embedding vector(3072), token_count int, created_at timestamptz DEFAULT now())")
        for crate in ("serde", "tokio", "anyhow"):
            for i in range(4):
                vec = rng.standard_normal(3072).astype(np.float32)
                conn.execute("INSERT INTO doc_embeddings (crate_name, doc_path, content, embedding, token_count) "
                             "VALUES (%s, %s, %s, %s, %s)",
                             (crate, f"{crate}/struct.Item{i}.html", f"{crate} item {i}: docs text", vec / np.linalg.norm(vec), 9))
        conn.commit()
    return url


def test_legacy_database_is_carried_over_without_embedding(tmp_path: Path, database_url: str,
                                                           pg_server_url: str) -> None:
    legacy = _legacy_db(pg_server_url)
    manifest = tmp_path / "legacy.yaml"
    manifest.write_text("shards: 2\nsources:\n  - {source_name: legacy-rust, doc_type: rust, url_env: LEGACY_URL}\n")
    result = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url, home=tmp_path,
                     extra_env={"LEGACY_URL": legacy})
    assert result.code == 0, result.stderr[-3000:]
    assert result.json["documents_loaded"] == 12
    assert result.json["chunks_embedded"] == 0, "legacy vectors are carried over, not re-embedded"
    with psycopg.connect(database_url) as target, psycopg.connect(legacy) as source:
        got = dict(target.execute("SELECT source_name || '/' || doc_path, md5(embedding::text) FROM documents"))
        want = dict(source.execute("SELECT crate_name || '/' || doc_path, md5(embedding::text) FROM doc_embeddings"))
        crates = {r[0] for r in target.execute("SELECT DISTINCT source_name FROM documents")}
    assert got == want
    assert crates == {"serde", "tokio", "anyhow"}
    again = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url, home=tmp_path,
                    extra_env={"LEGACY_URL": legacy})
    assert again.json["rows_written"] == 0
