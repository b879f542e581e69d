"""Jobs (migrate, validate, rollback) and the (off by default) incremental schedule."""


from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..pipeline.rollback import rollback_partition, rollback_run
from .assets import ASSETS, PARTITIONS, loaded_rows, validation_report
from .resources import MigrationResource
from .visibility import report_rollbacks

migrate_job = dg.define_asset_job(
    "migrate",
    selection=dg.AssetSelection.assets(*ASSETS),
    partitions_def=PARTITIONS,
    description="Scan, parse, embed, load and validate the selected partitions (one run covers a key range).",
)

validate_job = dg.define_asset_job(
    "validate",
    selection=dg.AssetSelection.assets(validation_report) | dg.AssetSelection.checks_for_assets(loaded_rows),
    partitions_def=PARTITIONS,
    description="Re-run the validation checks and rebuild the report without migrating anything.",
)


class RollbackConfig(dg.Config):
    """Name partitions (e.g. ["cilium-03"]) or one run id whose loads are undone newest first."""

    partitions: list[str] = []
    run_id: str | None = None


@dg.op(description="Restore partitions to their state before their latest load (the partition wipe).")
def rollback_partitions(context: dg.OpExecutionContext, config: RollbackConfig,
                        migration: MigrationResource) -> dg.Output[int]:
    if bool(config.partitions) == bool(config.run_id):
        raise dg.Failure("configure either 'partitions' or 'run_id'")
    who = f"dagster:{context.run_id}"
    if config.run_id:
        results = rollback_run(migration.settings, migration.url, config.run_id, who)
    else:
        results = [rollback_partition(migration.settings, migration.url, key, who) for key in config.partitions]
    report_rollbacks(context.instance, results)
    for r in results:
        context.log.info(f"rolled back {r.partition}: load {r.load_id} of run {r.loaded_run_id}")
    return dg.Output(len(results), metadata={"partitions": dg.MetadataValue.json([r.partition for r in results])})


@dg.job(name="rollback", description="Partition wipe / run rollback, recorded in the ledger and in Dagster.")
def rollback_job() -> None:
    rollback_partitions()


def full_range_tags() -> dict[str, str]:
    keys = PARTITIONS.get_partition_keys()
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


@dg.schedule(job=migrate_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Nightly incremental migration of every partition in one run; unchanged partitions cost "
                         "a checksum each. Off by default: turn it on in the UI.")
def incremental_migration_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None, tags=full_range_tags())


JOBS: list[Any] = [migrate_job, validate_job, rollback_job]
SCHEDULES = [incremental_migration_schedule]
