from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from doc_migration.config import ConfigError, Settings
from doc_migration.storage.database import ensure_vector_index, migrate


def _settings(tmp_path: Path, url: str, dims: int = 3072) -> Settings:
    return Settings(home=tmp_path, database_url=url, sources_path=tmp_path / "x.yaml", embedding_dims=dims)


MIGRATIONS = sorted(int(p.name[:4]) for p in (Path(__file__).parents[1] / "doc_migration" / "storage" /
                                              "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))


def test_migrations_apply_once_and_are_recorded(tmp_path: Path, database_url: str) -> None:
    assert MIGRATIONS[:9] == list(range(1, 10)) and MIGRATIONS == list(range(1, len(MIGRATIONS) + 1))
    first = migrate(_settings(tmp_path, database_url), database_url)
    assert first["applied"] == MIGRATIONS and first["pgvector"] >= "0.7"
    second = migrate(_settings(tmp_path, database_url), database_url)
    assert second["applied"] == []
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM doc_migration.schema_migrations ORDER BY 1")]
        typmod = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                              "WHERE attrelid = 'documents'::regclass AND attname = 'embedding'").fetchone()
        public_tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert versions == MIGRATIONS
    assert typmod == ("vector(3072)",)
    assert public_tables == {"documents", "document_sources"}, "bookkeeping must stay out of the doc-server schema"


def test_existing_table_with_other_dimension_is_refused(tmp_path: Path, database_url: str) -> None:
    migrate(_settings(tmp_path, database_url, dims=1536), database_url)
    with pytest.raises(ConfigError) as err:
        migrate(_settings(tmp_path, database_url, dims=3072), database_url)
    assert "vector(1536)" in str(err.value) and "DOC_MIGRATION_EMBEDDING_DIMS=1536" in str(err.value)


def test_hnsw_index_uses_halfvec_expression_for_3072_dims(tmp_path: Path, database_url: str) -> None:
    migrate(_settings(tmp_path, database_url), database_url)
    # Never on an empty table: the bulk load that follows would pay for it 100x.
    assert ensure_vector_index(database_url, 3072, "64MB") is False
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO documents (doc_type, source_name, doc_path, content, embedding) "
                     "VALUES ('t', 's', 'p', 'c', array_fill(0.5, ARRAY[3072])::vector)")
    assert ensure_vector_index(database_url, 3072, "64MB") is True
    assert ensure_vector_index(database_url, 3072, "64MB") is False
    with psycopg.connect(database_url) as conn:
        (indexdef,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'documents_embedding_hnsw'").fetchone() or ("",)
    assert "hnsw" in indexdef and "halfvec(3072)" in indexdef and "halfvec_cosine_ops" in indexdef
