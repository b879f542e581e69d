"""Making ledger-level events (partition wipes) visible in Dagster, which has no OSS partition wipe.

Dagster 1.13's public API has no runless "failed" event: ``report_runless_asset_event`` takes
materializations, observations, check evaluations and freshness events only, and
``AssetMaterializationFailure`` is internal. A partition leaves the UI's *Materialized* set only when a
later run that planned it fails (``materializedPartitions`` = materialized − failed). So each rollback
records one small, explicitly tagged run of ``loaded_rows[partition]`` that fails with the rollback as its
reason: the partition then shows *Failed* until its next successful materialization.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import dagster as dg

from ..storage.rollback import RollbackResult

logger = logging.getLogger(__name__)

ROLLED_BACK_CHECK = "partition_not_rolled_back"
LOADED_ROWS = dg.AssetKey("loaded_rows")
ROLLBACK_TAG = "doc_migration/rollback"


def report_rollbacks(instance: Any, results: Iterable[RollbackResult]) -> None:
    """Record each wipe as an observation, a failed per-partition check and a failed materialization
    attempt of ``loaded_rows`` for that partition (see the module docstring)."""
    for r in results:
        metadata: dict[str, Any] = {"rolled_back": True, "load_id": r.load_id, "loaded_run_id": r.loaded_run_id,
                                    "rows_deleted": r.rows_deleted, "rows_restored": r.rows_restored}
        description = f"partition {r.partition} rolled back to its state before load {r.load_id}"
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=LOADED_ROWS, partition=r.partition, metadata=metadata, description=description))
        try:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=LOADED_ROWS, check_name=ROLLED_BACK_CHECK, passed=False,
                partition=r.partition, metadata=metadata, severity=dg.AssetCheckSeverity.WARN,
                description="rolled back: re-materialize this partition to load it again"))
        except Exception as exc:  # storage keeps one runless evaluation per partition; the ledger is the truth
            logger.info(f"runless check evaluation for {r.partition} not recorded again: {type(exc).__name__}")
        mark_not_current(instance, r.partition, description, metadata)


def mark_not_current(instance: Any, partition: str, description: str, metadata: dict[str, Any]) -> bool:
    """Record a failed attempt at ``loaded_rows[partition]`` (a run of its own, tagged ``doc_migration/rollback``)
    so the UI stops showing the partition as materialized. The ledger stays the truth: a problem here
    is logged, never raised (the rollback itself has committed)."""

    @dg.asset(key=LOADED_ROWS, partitions_def=dg.StaticPartitionsDefinition([partition]),
              description="Marks a rolled-back partition as not current (see doc_migration.dagster_defs.visibility).")
    def _rolled_back() -> None:
        raise dg.Failure(description=f"{description}: its rows are no longer those of its last materialization; "
                                     "re-materialize the partition to load it again",
                         metadata=metadata, allow_retries=False)

    try:
        result = dg.materialize([_rolled_back], instance=instance, partition_key=partition, raise_on_error=False,
                                tags={ROLLBACK_TAG: partition, "dagster/max_retries": "0"},
                                # The failure is the point: no ERROR and stack trace on the operator's terminal.
                                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    except Exception as exc:
        logger.warning(f"could not mark {partition} as rolled back in Dagster: {type(exc).__name__}: {exc}")
        return False
    return not result.success
