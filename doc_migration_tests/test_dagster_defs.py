"""The Dagster code location itself: it loads, range runs give each partition its own materialization
metadata, a rollback stops a partition from being current, and the source-change sensor asks for the
changed span once. Real PostgreSQL, real Dagster instance (temporary), sample corpus, offline embedder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST

RANGE = ("cilium-00", "jupiter-01")  # several doc types, one contiguous key range


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> Path:
    """Settings point at the test's database and a corpus copy the test may edit."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, corpus)
    for name in ("DOC_MIGRATION_SHARDS", "DOC_MIGRATION_SCHEMA", "DOC_MIGRATION_EXECUTOR", "OPENAI_API_KEY",
                 "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DOC_MIGRATION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOC_MIGRATION_SOURCES", str(corpus / SAMPLE_MANIFEST.name))
    monkeypatch.setenv("DOC_MIGRATION_EMBEDDER", "offline")
    return corpus


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _defs() -> dg.Definitions:
    from doc_migration.definitions import defs

    return defs


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def _run_range(instance: dg.DagsterInstance, first: str, last: str) -> dg.ExecuteInProcessResult:
    result = _defs().resolve_job_def("migrate").execute_in_process(
        instance=instance, tags=_range_tags(first, last), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def _latest(instance: dg.DagsterInstance, asset: str, key: str) -> dict[str, Any]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
    assert records, f"{asset}[{key}] has no materialization"
    mat = records[0].asset_materialization
    assert mat is not None
    return {k: v.value for k, v in mat.metadata.items()}


def _rows_per_partition(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT partition_key, count(*) FROM doc_migration.partition_rows "
                                 "GROUP BY 1").fetchall())


def test_definitions_load_and_resolve() -> None:
    defs = _defs()
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"migrate", "validate", "rollback"}
    assert defs.resolve_schedule_def("incremental_migration_schedule").default_status \
        == dg.DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def("source_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "migrate"
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "source_manifest", "parsed_docs", "embeddings", "loaded_rows", "validation_report"}
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {  # the loaded_rows table's nine (one factory) and the three written out
        "rows_match_ledger", "content_matches_checksums", "embeddings_well_formed", "rows_conform_to_schema",
        "retrieval_smoke_test", "no_duplicate_content", "cross_references_resolve", "no_orphan_rows",
        "sources_unchanged", "partition_not_rolled_back", "staged_chunks_loadable", "staged_chunks_embedded"}
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {"rows_match_ledger", "content_matches_checksums", "embeddings_well_formed",
                        "rows_conform_to_schema", "retrieval_smoke_test", "no_orphan_rows",
                        "staged_chunks_loadable", "staged_chunks_embedded"}


def test_range_run_gives_each_partition_its_own_metadata(env: Path, database_url: str,
                                                         instance: dg.DagsterInstance) -> None:
    result = _run_range(instance, *RANGE)
    keys = _defs().resolve_job_def("migrate").partitions_def.get_partition_keys()  # type: ignore[union-attr]
    span = keys[keys.index(RANGE[0]): keys.index(RANGE[1]) + 1]
    counts = _rows_per_partition(database_url)
    rows = {k: counts.get(k, 0) for k in span}
    loaded = [k for k in span if rows[k]]
    assert len(loaded) >= 3 and len({rows[k] for k in loaded}) > 1, rows  # distinct numbers to tell apart
    for key in span:
        meta = _latest(instance, "loaded_rows", key)
        assert meta["dagster/row_count"] == rows[key] == meta["rows"] == meta["rows_inserted"], (key, meta)
        assert "partitions_loaded" not in meta and "failed_partitions" not in meta  # no run totals here
        assert {"tokens", "dollars", "documents", "chunks", "status"} <= meta.keys(), meta
        emb = _latest(instance, "embeddings", key)
        assert emb["chunks"] == rows[key] and emb["dollars"] == 0.0, emb
        parsed = _latest(instance, "parsed_docs", key)
        assert parsed["chunks"] == rows[key], parsed
        if rows[key]:
            assert meta["status"] == "loaded" and meta["documents"] > 0 and meta["chunks"] == rows[key], meta
            assert parsed["status"] == "staged", parsed
    # Exactly one materialization per partition per asset in the run.
    mats = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
            and e.asset_key == dg.AssetKey("loaded_rows")]
    assert sorted(e.partition for e in mats) == sorted(span)

    # The run's totals: in the run log and on validation_report.
    logs = [e.message or "" for e in instance.all_logs(result.run_id) if e.user_message]
    assert any(m.startswith("loaded_rows run totals:") and f'"rows_inserted": {sum(rows[k] for k in span)}' in m
               for m in logs), logs
    report = _latest(instance, "validation_report", span[0])
    assert report["run_totals"]["rows_inserted"] == sum(rows[k] for k in span)
    summary = report["summary"]
    assert summary.startswith("| check | severity | passed | message |")
    assert "| counts | ERROR | yes |" in summary, summary
    # Progress reached the run log (a count's end is always logged).
    assert any(m.startswith("load: ") and "partitions" in m for m in logs), logs
    assert any(m.startswith("parse: ") and " files (" in m for m in logs), logs


def test_progress_log_is_throttled_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    from doc_migration.dagster_defs.assets import progress_in_run_log
    from doc_migration.pipeline import progress

    lines: list[str] = []

    class Log:
        def info(self, msg: str) -> None:
            lines.append(msg)

    class Context:
        log = Log()

    clock = [100.0]
    monkeypatch.setattr("doc_migration.dagster_defs.assets.time.monotonic", lambda: clock[0])
    with progress_in_run_log(Context(), {"embed"}, every=3600):  # type: ignore[arg-type]
        tally = progress.Tally("embed", "chunks")
        tally.add_total(1000)
        for _ in range(9):
            clock[0] += 1
            tally.advance(100)  # one line at most per interval: these 9 are throttled
        progress.report("parse", 1, 2, "files")  # another step's stage: not this step's log
        clock[0] += 3600
        tally.advance(50)  # the interval passed
        tally.advance(50)  # the end of a count is always logged
    assert lines == ["embed: 0/1000 chunks (0 s)", "embed: 950/1000 chunks (3609 s)",
                     "embed: 1000/1000 chunks (3609 s)"], lines
    progress.report("embed", 1, 1, "chunks")  # the sink is gone
    assert len(lines) == 3


def test_rollback_marks_the_partition_failed_not_current(env: Path, database_url: str,
                                                         instance: dg.DagsterInstance) -> None:
    from doc_migration.config import Settings
    from doc_migration.dagster_defs.visibility import ROLLBACK_TAG, report_rollbacks
    from doc_migration.storage.rollback import rollback_partition

    _run_range(instance, "rust-00", "rust-01")
    settings = Settings.from_env(None)
    report_rollbacks(instance, [rollback_partition(settings, database_url, "rust-00", "test")])
    marker = instance.get_runs(filters=dg.RunsFilter(tags={ROLLBACK_TAG: "rust-00"}))
    assert len(marker) == 1 and marker[0].status == dg.DagsterRunStatus.FAILURE
    # Dagster 1.13 counts a partition as failed (and no longer materialized) when a run that planned it
    # after its latest materialization failed: the marker run planned exactly loaded_rows[rust-00].
    rust_00 = dg.AssetRecordsFilter(asset_key=dg.AssetKey("loaded_rows"), asset_partitions=["rust-00"])
    planned = instance.fetch_planned_materializations(rust_00, limit=1).records[0]
    latest = instance.fetch_materializations(rust_00, limit=1).records[0]
    assert planned.run_id == marker[0].run_id and planned.storage_id > latest.storage_id
    in_marker = instance.get_records_for_run(
        marker[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    assert [(r.asset_key, r.partition_key) for r in in_marker] == [(dg.AssetKey("loaded_rows"), "rust-00")]
    assert not instance.get_runs(filters=dg.RunsFilter(tags={ROLLBACK_TAG: "rust-01"}))


def test_source_change_sensor_requests_the_changed_span_once(env: Path, database_url: str,
                                                             instance: dg.DagsterInstance) -> None:
    from doc_migration.dagster_defs.jobs import source_change_sensor
    from doc_migration.dagster_defs.resources import MigrationResource
    from doc_migration.manifest import load_manifest

    def evaluate() -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(instance=instance, resources={"migration": MigrationResource()})
        result = source_change_sensor(context)
        assert isinstance(result, dg.SensorResult | dg.SkipReason)
        return result

    first = evaluate()  # nothing loaded yet: every partition is "changed"
    assert isinstance(first, dg.SensorResult) and first.run_requests
    keys = load_manifest(Path(str(env / SAMPLE_MANIFEST.name))).partition_keys()
    assert first.run_requests[0].tags == {**_range_tags(keys[0], keys[-1]), "doc_migration/trigger": "source_change"}

    _run_range(instance, keys[0], keys[-1])
    assert isinstance(evaluate(), dg.SkipReason)  # everything loaded and unchanged

    # Edit one file in each of two inner partitions: the span covers both, not everything.
    with psycopg.connect(database_url) as conn:
        files = {r[0]: r[1] for r in conn.execute(
            "SELECT DISTINCT ON (partition_key) partition_key, source_file FROM doc_migration.partition_rows "
            "ORDER BY partition_key, source_file")}
    inner = sorted(files)[1:-1]
    assert len(inner) >= 2, files
    low, high = inner[0], inner[-1]
    picked = {low: files[low], high: files[high]}
    for key, source_file in picked.items():
        path = next(p for p in env.rglob(Path(source_file).name) if p.is_file())
        path.write_text(path.read_text(encoding="utf-8") + f"\n\nEdited for {key}.\n", encoding="utf-8")
    changed = evaluate()
    assert isinstance(changed, dg.SensorResult) and len(changed.run_requests) == 1
    request = changed.run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == low
    assert request.tags["dagster/asset_partition_range_end"] == high
    assert request.run_key and request.run_key != first.run_requests[0].run_key
    again = evaluate()  # the same change gives the same run_key (Dagster requests it once)
    assert isinstance(again, dg.SensorResult) and again.run_requests[0].run_key == request.run_key


def test_rollback_job_marks_the_partition_too(env: Path, database_url: str, instance: dg.DagsterInstance) -> None:
    """The Dagster `rollback` job records the same marker run (a run started from inside a run)."""
    from doc_migration.dagster_defs.visibility import ROLLBACK_TAG

    _run_range(instance, "rust-00", "rust-01")
    result = _defs().resolve_job_def("rollback").execute_in_process(
        instance=instance, run_config={"ops": {"rollback_partitions": {"config": {"partitions": ["rust-01"]}}}})
    assert result.success
    marker = instance.get_runs(filters=dg.RunsFilter(tags={ROLLBACK_TAG: "rust-01"}))
    assert len(marker) == 1 and marker[0].status == dg.DagsterRunStatus.FAILURE
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM doc_migration.partition_state "
                            "WHERE partition_key = 'rust-01'").fetchone() == (0,)
