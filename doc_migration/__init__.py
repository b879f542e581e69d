"""doc_migration: populate, migrate and validate the doc-server's PostgreSQL + pgvector database.

``defs`` (the Dagster Definitions) is loaded lazily so that parser worker processes and the CLI's
fast paths do not pay for importing Dagster; ``dagster ... -m doc_migration`` still finds it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "defs":
        from .definitions import defs

        return defs
    raise AttributeError(f"module 'doc_migration' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "defs"]
