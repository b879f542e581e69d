"""Settings read from the environment: where the project lives, which database, which embedder.

Precedence everywhere is: command-line flag > environment variable > manifest file > default.
Secrets (DATABASE_URL's password, OPENAI_API_KEY) come from the environment only (never from a
command-line argument or the manifest) and are never printed: see :mod:`doc_migration.redaction`
(docs/security.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .redaction import redact_url

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MANIFEST = PACKAGE_DIR / "sample_corpus" / "sources.yaml"
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
OFFLINE_MODEL = "offline-ngram-hash-v2"
EMBED_MODES = ("sync", "batch")


class ConfigError(Exception):
    """Bad configuration: the operator must fix a file or a variable (CLI exit code 2)."""


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; the manifest adds per-source configuration on top."""

    home: Path
    database_url: str | None
    sources_path: Path
    embedder: str = "offline"
    embedding_model: str = "text-embedding-3-large"
    embedding_dims: int = 3072
    openai_base_url: str | None = None
    batch_size: int = 256
    pipeline_schema: str = "doc_migration"
    vector_index: str = "build"  # "defer": a bootstrap split over several runs builds the HNSW index once, last
    index_rebuild_min_rows: int = 20_000  # a run writing new text into more rows rebuilds the index (see storage)
    embed_mode: str = "sync"  # "batch": the embeddings go through the OpenAI Batch API (half price, see pipeline)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The schema name is spliced into migration files and quoted with sql.Identifier
        # everywhere else; validate it however the Settings were made (with_overrides too).
        if not IDENTIFIER_RE.match(self.pipeline_schema):
            raise ConfigError(f"pipeline schema {self.pipeline_schema!r} is not a plain lower-case SQL identifier")
        if not 1 <= int(self.embedding_dims) <= 16000:
            raise ConfigError(f"embedding dimension must be 1..16000 (pgvector's limit), got {self.embedding_dims}")
        if self.embed_mode not in EMBED_MODES:
            raise ConfigError(f"embed mode must be 'sync' or 'batch', got {self.embed_mode!r}")

    def __repr__(self) -> str:
        """Never the password: a Settings object may end up in a log line or an exception."""
        fields = ", ".join(f"{k}={v!r}" for k, v in self.public_dict().items())
        return f"Settings({fields})"

    @property
    def model_name(self) -> str:
        """The model recorded on every row and used as the embedding-cache key."""
        return OFFLINE_MODEL if self.embedder == "offline" else self.embedding_model

    @property
    def vectors_at_load(self) -> bool:
        """The offline embedder's vectors are computed while loading, never cached (see pipeline/embed.py)."""
        return self.embedder == "offline"

    @classmethod
    def from_env(cls, sources: str | Path | None = None) -> Settings:
        home = Path(os.environ.get("DOC_MIGRATION_HOME") or (Path.cwd() / ".doc_migration")).resolve()
        src = sources or os.environ.get("DOC_MIGRATION_SOURCES") or DEFAULT_MANIFEST
        embedder = (os.environ.get("DOC_MIGRATION_EMBEDDER") or "offline").strip().lower()
        if embedder not in ("offline", "openai"):
            raise ConfigError(f"DOC_MIGRATION_EMBEDDER must be 'offline' or 'openai', got {embedder!r}")
        schema = os.environ.get("DOC_MIGRATION_SCHEMA", "doc_migration")
        if not IDENTIFIER_RE.match(schema):
            raise ConfigError(f"DOC_MIGRATION_SCHEMA {schema!r} is not a plain lower-case SQL identifier")
        dims = env_int("DOC_MIGRATION_EMBEDDING_DIMS", 3072)
        if not 1 <= dims <= 16000:
            raise ConfigError(f"DOC_MIGRATION_EMBEDDING_DIMS must be 1..16000 (pgvector's limit), got {dims}")
        # Chunks per embedding call: OpenAI takes 2048 inputs per request and the client sends
        # requests concurrently, so bigger batches keep requests full.
        batch = env_int("MIGRATION_BATCH_SIZE", 8192 if embedder == "openai" else 256)
        if batch < 1:
            raise ConfigError(f"MIGRATION_BATCH_SIZE must be positive, got {batch}")
        vector_index = (os.environ.get("DOC_MIGRATION_VECTOR_INDEX") or "build").strip().lower()
        if vector_index not in ("build", "defer"):
            raise ConfigError(f"DOC_MIGRATION_VECTOR_INDEX must be 'build' or 'defer', got {vector_index!r}")
        embed_mode = (os.environ.get("DOC_MIGRATION_EMBED_MODE") or "sync").strip().lower()
        if embed_mode not in EMBED_MODES:
            raise ConfigError(f"DOC_MIGRATION_EMBED_MODE must be 'sync' or 'batch', got {embed_mode!r}")
        return cls(
            home=home,
            database_url=os.environ.get("DATABASE_URL") or None,
            sources_path=Path(src).expanduser().resolve(),
            embedder=embedder,
            embedding_model=os.environ.get("DOC_MIGRATION_EMBEDDING_MODEL", "text-embedding-3-large"),
            embedding_dims=dims,
            openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
            batch_size=batch,
            pipeline_schema=schema,
            vector_index=vector_index,
            index_rebuild_min_rows=env_int("DOC_MIGRATION_INDEX_REBUILD_MIN_ROWS", 20_000),
            embed_mode=embed_mode,
        )

    def with_overrides(self, **kwargs: Any) -> Settings:
        return replace(self, **kwargs)

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to print or attach as metadata (secrets redacted)."""
        return {
            "home": str(self.home),
            "database_url": redact_url(self.database_url) if self.database_url else "embedded",
            "sources": str(self.sources_path),
            "embedder": self.embedder,
            "embedding_model": self.model_name,
            "embedding_dims": self.embedding_dims,
            "openai_base_url": redact_url(self.openai_base_url) if self.openai_base_url else None,
            "openai_api_key": "***" if os.environ.get("OPENAI_API_KEY") else None,
            "batch_size": self.batch_size,
            "pipeline_schema": self.pipeline_schema,
            "vector_index": self.vector_index,
            "embed_mode": self.embed_mode,
        }
