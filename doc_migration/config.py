"""Settings read from the environment: where the project lives, which database, which embedder.

Precedence everywhere is: command-line flag > environment variable > manifest file > default.
Secrets (DATABASE_URL's password, OPENAI_API_KEY) are only ever read here and never printed:
use :func:`redact` before showing any URL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MANIFEST = PACKAGE_DIR / "sample_corpus" / "sources.yaml"
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
OFFLINE_MODEL = "offline-bpe-hash-v1"


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


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Hide passwords inside URLs/conninfo strings and any known secret values."""
    out = re.sub(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@",
                 lambda m: f"{m['scheme']}{m['user']}:***@" if m["pw"] else m[0], text)
    out = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", out, flags=re.IGNORECASE)
    for secret in secrets if secrets is not None else known_secrets():
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    return out


def known_secrets() -> list[str]:
    """Secret values present in this process's environment, for scrubbing free text."""
    found = [os.environ.get("OPENAI_API_KEY", "")]
    url = os.environ.get("DATABASE_URL", "")
    if url:
        try:
            pw = urlsplit(url).password
        except ValueError:
            pw = None
        if pw:
            found.append(pw)
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    return [s for s in found if s]


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return redact(url)


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The model recorded on every row and used as the embedding-cache key."""
        return OFFLINE_MODEL if self.embedder == "offline" else self.embedding_model

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
            "openai_base_url": self.openai_base_url,
            "openai_api_key": "***" if os.environ.get("OPENAI_API_KEY") else None,
            "batch_size": self.batch_size,
            "pipeline_schema": self.pipeline_schema,
        }
