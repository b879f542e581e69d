"""Choose the embedder from settings: offline unless DOC_MIGRATION_EMBEDDER=openai."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..config import ConfigError, Settings, env_int

if TYPE_CHECKING:  # numpy and the tokenizer load with the embedders, not with this check
    from .base import Embedder


def require_embedder_config(settings: Settings) -> None:
    """Fail with the fix before any work: a run must not scan and parse for minutes, then stop at the
    embeddings for want of a key."""
    if settings.embed_mode == "batch" and settings.embedder != "openai":
        raise ConfigError("--embed-mode batch needs the OpenAI Batch API: set DOC_MIGRATION_EMBEDDER=openai and "
                          "OPENAI_API_KEY (OPENAI_BASE_URL for a compatible server); the offline embedder is "
                          "free and has no batches, use --embed-mode sync")
    if settings.embedder == "openai" and not os.environ.get("OPENAI_API_KEY") and not settings.openai_base_url:
        raise ConfigError("DOC_MIGRATION_EMBEDDER=openai needs OPENAI_API_KEY (and OPENAI_BASE_URL for a "
                          "compatible server); unset DOC_MIGRATION_EMBEDDER to use the offline embedder")


def make_embedder(settings: Settings) -> Embedder:
    if settings.embedder == "offline":
        from .offline import OfflineEmbedder

        return OfflineEmbedder(settings.embedding_dims)
    require_embedder_config(settings)
    from .openai_client import OpenAIEmbedder

    tpm = env_int("DOC_MIGRATION_OPENAI_TPM", 0) or None
    rpm = env_int("DOC_MIGRATION_OPENAI_RPM", 0) or None
    embedder: Embedder = OpenAIEmbedder(
        model=settings.embedding_model,
        dims=settings.embedding_dims,
        api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
        base_url=settings.openai_base_url,
        max_concurrency=env_int("DOC_MIGRATION_OPENAI_CONCURRENCY", 4),
        tpm=tpm,
        rpm=rpm,
        # a dead endpoint stops the run after this many connection failures in a row over this long
        breaker_failures=env_int("DOC_MIGRATION_OPENAI_BREAKER_FAILURES", 6),
        breaker_seconds=env_int("DOC_MIGRATION_OPENAI_BREAKER_SECONDS", 30),
    )
    return embedder
