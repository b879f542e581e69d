"""The migration resource: settings, manifest, database URL and embedder, resolved once per process."""


from functools import cached_property
from typing import Any

import dagster as dg

from ..config import Settings
from ..embedding.base import Embedder
from ..embedding.factory import make_embedder
from ..manifest import Manifest, load_manifest
from ..storage.database import migrate, resolve_database_url

_READY: dict[tuple[str, str], str] = {}
_EMBEDDERS: dict[tuple[str, str, int], Embedder] = {}


class MigrationResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Secrets never pass through resource config (it is shown in the UI): they come from env vars."""

    sources: str | None = None
    parallel: int = 2
    # "sync" or "batch" (the OpenAI Batch API: half price, results within 24 h); None: $DOC_MIGRATION_EMBED_MODE
    embed_mode: str | None = None

    @cached_property
    def settings(self) -> Settings:
        settings = Settings.from_env(self.sources)
        return settings.with_overrides(embed_mode=self.embed_mode) if self.embed_mode else settings

    @cached_property
    def manifest(self) -> Manifest:
        return load_manifest(self.settings.sources_path)

    @property
    def url(self) -> str:
        """Resolve the target database and apply migrations the first time in this process."""
        settings = self.settings
        cache_key = (str(settings.home), settings.database_url or "embedded")
        if cache_key not in _READY:
            url = resolve_database_url(settings)
            migrate(settings, url)
            _READY[cache_key] = url
        return _READY[cache_key]

    @property
    def embedder(self) -> Embedder:
        """Shared per process so rate limits and concurrency are shared across partitions."""
        s = self.settings
        key = (s.embedder, s.model_name, s.embedding_dims)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = make_embedder(s)
        return _EMBEDDERS[key]

    def public_config(self) -> dict[str, Any]:
        return self.settings.public_dict()
