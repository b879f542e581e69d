"""Partitions: ``<doc_type>-<shard>`` keys from the manifest, flat so one run can cover them all."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ..config import DEFAULT_MANIFEST, ConfigError
from ..manifest import load_manifest


def manifest_partition_keys() -> list[str]:
    """Keys of the manifest named by DOC_MIGRATION_SOURCES (the packaged sample by default)."""
    path = os.environ.get("DOC_MIGRATION_SOURCES") or str(DEFAULT_MANIFEST)
    try:
        return load_manifest(Path(path).resolve()).partition_keys()
    except ConfigError as exc:
        raise dg.DagsterInvalidDefinitionError(f"cannot build partitions: {exc}") from None


def build_partitions() -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(manifest_partition_keys())
