"""Jobs (migrate, validate, rollback), the (off by default) incremental schedule and source-change sensor."""


import hashlib
from typing import Any

import dagster as dg

from ..pipeline.scan import scan
from ..storage.ledger import loaded_checksums
from ..storage.rollback import rollback_partition, rollback_run
from ..storage.scans import known_digests
from .assets import ASSETS, PARTITIONS, loaded_rows, validation_report
from .resources import MigrationResource
from .tags import range_tags
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
    return range_tags(keys[0], keys[-1])


@dg.schedule(job=migrate_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Nightly incremental migration of every partition in one run; unchanged partitions cost "
                         "a checksum each. Off by default: turn it on in the UI.")
def incremental_migration_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None, tags=full_range_tags())


SENSOR_INTERVAL_SECONDS = 300


@dg.sensor(job=migrate_job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Starts one incremental run over the span of partitions whose source files (or "
                       "row-shaping settings) changed since their last load. A scan hashes files and writes "
                       "nothing. Off by default; use it or the schedule, not both.")
def source_change_sensor(context: dg.SensorEvaluationContext,
                         migration: MigrationResource) -> dg.SensorResult | dg.SkipReason:
    keys = PARTITIONS.get_partition_keys()
    scans = scan(migration.settings, migration.manifest, list(keys),
                 known_digests(migration.settings, migration.url, list(keys)))
    loaded = loaded_checksums(migration.settings, migration.url, list(keys))
    changed = [k for k in keys if k in scans and scans[k].checksum != loaded.get(k)]
    if not changed:
        return dg.SkipReason(f"all {len(keys)} partitions match their loaded checksums")
    first, last = changed[0], changed[-1]
    # The same change (same partitions, same new checksums) is requested once; Dagster drops a
    # RunRequest whose run_key it has already seen for this sensor.
    digest = hashlib.sha256("\n".join(f"{k}={scans[k].checksum}" for k in changed).encode()).hexdigest()[:32]
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"sources-{digest}", tags={**range_tags(first, last), "doc_migration/trigger": "source_change"})])


JOBS: list[Any] = [migrate_job, validate_job, rollback_job]
SCHEDULES = [incremental_migration_schedule]
SENSORS = [source_change_sensor]
