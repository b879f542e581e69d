"""Making ledger-level events (partition wipes) visible in Dagster, which has no OSS partition wipe."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import dagster as dg

from ..pipeline.rollback import RollbackResult

logger = logging.getLogger(__name__)

ROLLED_BACK_CHECK = "partition_not_rolled_back"


def report_rollbacks(instance: Any, results: Iterable[RollbackResult]) -> None:
    """Record each wipe as an observation plus a failed per-partition check on ``loaded_rows``."""
    for r in results:
        metadata: dict[str, Any] = {"rolled_back": True, "load_id": r.load_id, "loaded_run_id": r.loaded_run_id,
                    "rows_deleted": r.rows_deleted, "rows_restored": r.rows_restored}
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=dg.AssetKey("loaded_rows"), partition=r.partition, metadata=metadata,
            description=f"partition {r.partition} rolled back to its state before load {r.load_id}"))
        try:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("loaded_rows"), check_name=ROLLED_BACK_CHECK, passed=False,
                partition=r.partition, metadata=metadata, severity=dg.AssetCheckSeverity.WARN,
                description="rolled back: re-materialize this partition to load it again"))
        except Exception as exc:  # storage keeps one runless evaluation per partition; the ledger is the truth
            logger.info(f"runless check evaluation for {r.partition} not recorded again: {type(exc).__name__}")
