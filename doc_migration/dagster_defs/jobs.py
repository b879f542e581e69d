"""Jobs and the (off by default) incremental schedule."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from .assets import ASSETS, PARTITIONS

migrate_job = dg.define_asset_job(
    "migrate",
    selection=dg.AssetSelection.assets(*ASSETS),
    partitions_def=PARTITIONS,
    description="Scan, parse, embed, load and validate the selected partitions (one run covers a key range).",
)


def full_range_tags() -> dict[str, str]:
    keys = PARTITIONS.get_partition_keys()
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


@dg.schedule(job=migrate_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Nightly incremental migration of every partition in one run; unchanged partitions cost "
                         "a checksum each. Off by default: turn it on in the UI.")
def incremental_migration_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None, tags=full_range_tags())


JOBS = [migrate_job]
SCHEDULES = [incremental_migration_schedule]
