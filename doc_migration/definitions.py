"""The Dagster code location: ``dagster dev -m doc_migration.definitions`` (or ``-m doc_migration``)."""

from __future__ import annotations

import dagster as dg

from .dagster_defs.assets import ASSETS
from .dagster_defs.checks import CHECKS
from .dagster_defs.jobs import JOBS, SCHEDULES
from .dagster_defs.resources import MigrationResource

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    resources={"migration": MigrationResource()},
)
