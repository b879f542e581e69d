"""Blocking asset checks: a failed ERROR check stops downstream assets in the same run."""


import dagster as dg

from ..validation.report import check_counts, check_embeddings, rolled_back_partitions
from .assets import PARTITIONS, loaded_rows
from .resources import MigrationResource


def _all_loaded_keys() -> list[str]:
    return list(PARTITIONS.get_partition_keys())


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="Every loaded partition owns exactly the rows its ledger records, all present.")
def rows_match_ledger(migration: MigrationResource) -> dg.AssetCheckResult:
    result = check_counts(migration.settings, migration.url, _all_loaded_keys())
    return dg.AssetCheckResult(
        passed=result["passed"], severity=dg.AssetCheckSeverity.ERROR,
        metadata={"partitions_checked": result["partitions_checked"],
                  "mismatches": dg.MetadataValue.json(result["mismatches"][:50])})


@dg.asset_check(asset=loaded_rows, blocking=True,
                description="No NULL, wrong-dimension, NaN/Inf or zero embeddings among the pipeline's rows.")
def embeddings_well_formed(migration: MigrationResource) -> dg.AssetCheckResult:
    result = check_embeddings(migration.settings, migration.url, _all_loaded_keys())
    return dg.AssetCheckResult(
        passed=result["passed"], severity=dg.AssetCheckSeverity.ERROR,
        metadata={"dims": migration.settings.embedding_dims, "problems": dg.MetadataValue.json(result["problems"])})



@dg.asset_check(asset=loaded_rows, name="partition_not_rolled_back", blocking=False,
                description="Fails (WARN) while a partition stays rolled back; re-materialize it to clear.")
def partition_not_rolled_back(migration: MigrationResource) -> dg.AssetCheckResult:
    keys = rolled_back_partitions(migration.settings, migration.url)
    return dg.AssetCheckResult(passed=not keys, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"rolled_back_partitions": dg.MetadataValue.json(keys)})


CHECKS = [rows_match_ledger, embeddings_well_formed, partition_not_rolled_back]
