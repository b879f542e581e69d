"""Legacy ``rust_docs_vectors`` reader against a real PostgreSQL + pgvector (embedded server)."""

from __future__ import annotations

import math

import psycopg
import pytest

from doc_migration.sources.legacy_db import (
    LegacyDatabaseError,
    iter_crate,
    list_crates,
    read_crate,
    redact_url,
)

DIMS = 3072


def _vec(seed: int, dims: int = DIMS) -> str:
    return "[" + ",".join(f"{math.sin(seed + i):.6f}" for i in range(dims)) + "]"


@pytest.fixture()
def legacy_url(database_url: str) -> str:
    """The old layout: untyped ``vector`` so one row can hold a wrong-dimension vector."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            """
            CREATE TABLE doc_embeddings (
                id serial PRIMARY KEY,
                crate_name text NOT NULL,
                doc_path text NOT NULL,
                content text NOT NULL,
                embedding vector,
                token_count int,
                created_at timestamptz DEFAULT now(),
                extra_column text
            )
            """
        )
        rows = [
            ("serde", "serde/de/index.html", "Generic data structure deserialization framework.", _vec(1), 7),
            ("serde", "serde/ser/index.html", "Serialization: it's the other direction.", _vec(2), 6),
            ("serde", "serde/index.html", "Serde is a framework for serializing.", "[0.1,0.2,0.3,0.4]", 5),
            ("serde", "serde/index.html", "A second chunk of the same page.", _vec(3), 6),
            ("serde", "serde/empty.html", "   ", _vec(4), 0),
            ("tokio", "tokio/index.html", "A runtime for writing reliable network applications.", None, 8),
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO doc_embeddings (crate_name, doc_path, content, embedding, token_count)"
                " VALUES (%s, %s, %s, %s::vector, %s)",
                rows,
            )
    return database_url


def test_list_crates_fingerprints(legacy_url: str) -> None:
    crates = list_crates(legacy_url)
    assert [(c, n) for c, _, n in crates] == [("serde", 5), ("tokio", 1)]
    assert all(len(fp) == 32 for _, fp, _ in crates)
    assert list_crates(legacy_url) == crates  # stable
    before = dict((c, fp) for c, fp, _ in crates)
    with psycopg.connect(legacy_url, autocommit=True) as conn:
        conn.execute("UPDATE doc_embeddings SET content = content || '!' WHERE doc_path = 'tokio/index.html'")
    after = dict((c, fp) for c, fp, _ in list_crates(legacy_url))
    assert after["serde"] == before["serde"] and after["tokio"] != before["tokio"]
    with psycopg.connect(legacy_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE doc_embeddings SET embedding = %s::vector WHERE doc_path = 'serde/de/index.html'", (_vec(9),)
        )
    assert dict((c, fp) for c, fp, _ in list_crates(legacy_url))["serde"] != before["serde"]


def test_read_crate_carries_vectors_and_drops_wrong_dimensions(legacy_url: str) -> None:
    docs = read_crate(legacy_url, "serde", dims=DIMS)
    by_path = {d.path: d for d in docs}
    # Blank content is skipped; a repeated doc_path gets a stable suffix.
    assert sorted(by_path) == ["serde/de/index.html", "serde/index.html", "serde/index.html#2", "serde/ser/index.html"]
    de = by_path["serde/de/index.html"]
    assert de.source_name == "serde"
    assert de.text == "Generic data structure deserialization framework."
    assert de.embedding is not None and len(de.embedding) == DIMS
    assert de.embedding[0] == pytest.approx(math.sin(1), abs=1e-5)
    assert de.metadata["crate_name"] == "serde" and de.metadata["legacy_table"] == "doc_embeddings"
    assert de.metadata["token_count"] == 7
    wrong = by_path["serde/index.html"]
    assert wrong.embedding is None
    assert wrong.metadata["embedding_dropped"] == f"dimension 4 != {DIMS}"
    assert by_path["serde/index.html#2"].embedding is not None
    assert by_path["serde/ser/index.html"].text == "Serialization: it's the other direction."
    (tokio,) = read_crate(legacy_url, "tokio", dims=DIMS)
    assert tokio.embedding is None and "embedding_dropped" not in tokio.metadata
    assert read_crate(legacy_url, "no-such-crate") == []
    # Without dims every vector is kept as is.
    assert read_crate(legacy_url, "serde")[1].embedding is not None


def test_iter_crate_streams_in_batches(legacy_url: str) -> None:
    streamed = list(iter_crate(legacy_url, "serde", dims=DIMS, batch_rows=1))
    assert [d.path for d in streamed] == [d.path for d in read_crate(legacy_url, "serde", dims=DIMS)]
    first = next(iter_crate(legacy_url, "serde"))  # stopping early closes the connection cleanly
    assert first.path == "serde/de/index.html"


def test_crate_name_is_a_bound_parameter(legacy_url: str) -> None:
    assert read_crate(legacy_url, "serde' OR '1'='1") == []


def test_table_name_is_validated(legacy_url: str) -> None:
    for bad in ("doc_embeddings; DROP TABLE doc_embeddings", "1table", "a" * 64, 'x"y', ""):
        with pytest.raises(LegacyDatabaseError, match="invalid legacy table name"):
            list_crates(legacy_url, table=bad)
    with pytest.raises(LegacyDatabaseError, match="does not exist"):
        read_crate(legacy_url, "serde", table="missing_table")
    with psycopg.connect(legacy_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE other (crate_name text, body text)")
    with pytest.raises(LegacyDatabaseError, match="lacks column"):
        list_crates(legacy_url, table="other")


def test_connection_errors_do_not_leak_the_password() -> None:
    secret = "s3cr3t-P@ss"
    url = "postgresql://migrator:s3cr3t-P%40ss@127.0.0.1:1/legacy"
    with pytest.raises(LegacyDatabaseError) as exc:
        list_crates(url)
    text = str(exc.value)
    assert "s3cr3t" not in text and "***" in text
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    with pytest.raises(LegacyDatabaseError) as exc:
        read_crate(f"host=127.0.0.1 port=1 password={secret} user=x dbname=y bogus_option=1", "serde")
    assert secret not in str(exc.value)
    assert redact_url(url) == "postgresql://migrator:***@127.0.0.1:1/legacy"
