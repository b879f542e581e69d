"""The Dagster code location: ``dagster dev -m doc_migration.definitions`` (or ``-m doc_migration``).

On Kubernetes (``DOC_MIGRATION_EXECUTOR=k8s``, set by the Helm values) every step of a run gets its
own pod through ``k8s_job_executor``; elsewhere a run executes in one process.
"""

from __future__ import annotations

import os

import dagster as dg

from .dagster_defs.assets import ASSETS
from .dagster_defs.checks import CHECKS
from .dagster_defs.jobs import JOBS, SCHEDULES, SENSORS
from .dagster_defs.resources import MigrationResource
from .dagster_defs.terminal_logger import terminal_logger


def _executor() -> dg.ExecutorDefinition | None:
    if os.environ.get("DOC_MIGRATION_EXECUTOR", "").lower() != "k8s":
        # One process for the whole run: the assets keep their data in PostgreSQL, so a process per
        # step (Dagster's default) only adds ~5 s of start-up to each of the run's 17 steps.
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={"migration": MigrationResource()},
    executor=_executor(),
    # Dagster's console logger for the UI and `dagster job execute`; `terminal` only when doc-migrate
    # names it in the run config.
    loggers={"console": dg.colored_console_logger, "terminal": terminal_logger},
)
