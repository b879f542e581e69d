"""Dagster's documented run tags for partitions.

The strings are public (Dagster's docs and UI use them; a run over a key range is started with the two
range tags); only their Python constants live in ``dagster._core``, which this project does not import."""

from __future__ import annotations

PARTITION = "dagster/partition"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Tags of one run over the contiguous partition keys ``first``..``last``."""
    return {RANGE_START: first, RANGE_END: last}
