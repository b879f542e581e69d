"""The Dagster code location: ``dagster dev -m doc_migration.definitions`` (or ``-m doc_migration``).

On Kubernetes (``DOC_MIGRATION_EXECUTOR=k8s``, set by the Helm values) every step of a run gets its
own pod through ``k8s_job_executor``; elsewhere Dagster's default executor is used.
"""

from __future__ import annotations

import os

import dagster as dg

from .dagster_defs.assets import ASSETS
from .dagster_defs.checks import CHECKS
from .dagster_defs.jobs import JOBS, SCHEDULES
from .dagster_defs.resources import MigrationResource


def _executor() -> dg.ExecutorDefinition | None:
    if os.environ.get("DOC_MIGRATION_EXECUTOR", "").lower() != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    resources={"migration": MigrationResource()},
    executor=_executor(),
)
