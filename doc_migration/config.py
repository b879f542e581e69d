"""Settings read from the environment: where the project lives, which database, which embedder.

Precedence everywhere is: command-line flag > environment variable > manifest file > default.
Secrets (DATABASE_URL's password, OPENAI_API_KEY) come from the environment only (never from a
command-line argument or the manifest) and are never printed: use :func:`redact` on any free text
that may carry them and :func:`redact_url` before showing a URL (docs/security.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MANIFEST = PACKAGE_DIR / "sample_corpus" / "sources.yaml"
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
OFFLINE_MODEL = "offline-ngram-hash-v2"


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


# Secrets are matched three ways, most specific first: exact values known from the environment
# (any form: raw and percent-encoded), then shapes that only secrets have (URL userinfo, libpq
# ``password=``, ``Authorization: Bearer``, OpenAI-style keys), so a secret this process has never
# seen (a legacy database URL echoed by a library, a key in a third-party message) is hidden too.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^/\s'\"]*)@")
_KEYWORD_PASSWORD = re.compile(
    r"""(?P<key>\b(?:password|passwd|pwd|sslpassword|api[_-]?key|secret|token|access[_-]?token)\b\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;,'"]+)""",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
# Environment variables whose values are secrets by name (Kubernetes Secrets arrive as env vars).
_SECRET_ENV_NAME = re.compile(r"(?:PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|APIKEY|CREDENTIALS?)$", re.IGNORECASE)
_MIN_SECRET_LEN = 4
MASK = "***"


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Hide passwords, API keys and tokens in free text (error messages, URLs, conninfo strings).

    ``secrets`` defaults to :func:`known_secrets` (every secret in this process's environment);
    they are replaced first, longest first, so a password that contains ``@`` or ``/`` or is
    echoed inside a libpq token (``invalid percent-encoded token: "..."``) is hidden whole.
    """
    out = str(text)
    values = secrets if secrets is not None else known_secrets()
    for secret in sorted({v for v in values if v and len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["pw"] else m[0], out)
    out = _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['key']}{MASK}", out)
    return _OPENAI_KEY.sub(MASK, out)


def _forms(value: str) -> list[str]:
    """A secret as it may appear in text: raw, percent-decoded and percent-encoded."""
    forms = {value, unquote(value), quote(value, safe=""), quote(unquote(value), safe="")}
    return [f for f in forms if f]


def conninfo_passwords(conninfo: str) -> list[str]:
    """Every password a libpq connection string carries: URL userinfo, ``?password=`` and the
    key/value form ``password=...`` (never raises: a malformed string is still scanned)."""
    found: list[str] = []
    if "://" in conninfo:
        try:
            parts = urlsplit(conninfo)
            if parts.password:
                found.append(parts.password)
            for key, value in parse_qsl(parts.query, keep_blank_values=False):
                if key.lower() in ("password", "sslpassword"):
                    found.append(value)
        except ValueError:
            pass
        m = re.search(r"://[^:/@\s]*:([^/\s]*)@", conninfo)  # what urlsplit refused (e.g. bad IPv6 host)
        if m:
            found.append(m.group(1))
    for m in _KEYWORD_PASSWORD.finditer(conninfo):
        value = m["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.append(value)
    return [form for pw in found if pw for form in _forms(pw)]


def known_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values present in this process's environment, for scrubbing free text.

    DATABASE_URL's password (every form), OPENAI_API_KEY, PGPASSWORD, the password of any other
    variable holding a connection URL (legacy databases named by ``url_env``, Dagster's storage)
    and any variable named like a secret (``*_PASSWORD``, ``*_TOKEN``, ``*_API_KEY``, ...).
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        if name in ("OPENAI_API_KEY", "PGPASSWORD") or (_SECRET_ENV_NAME.search(name) and len(value) >= 8):
            found.extend(_forms(value))
        if name == "DATABASE_URL" or "://" in value or "password=" in value.lower():
            found.extend(conninfo_passwords(value))
    return sorted({s for s in found if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """A connection or HTTP URL safe to print: the password (userinfo or query) masked, the rest kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url, conninfo_passwords(url))
    if parts.password:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    return redact(url, conninfo_passwords(url) + known_secrets())


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
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The schema name is spliced into migration files and quoted with sql.Identifier
        # everywhere else; validate it however the Settings were made (with_overrides too).
        if not IDENTIFIER_RE.match(self.pipeline_schema):
            raise ConfigError(f"pipeline schema {self.pipeline_schema!r} is not a plain lower-case SQL identifier")
        if not 1 <= int(self.embedding_dims) <= 16000:
            raise ConfigError(f"embedding dimension must be 1..16000 (pgvector's limit), got {self.embedding_dims}")

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
        }
