"""Runs on ../shared/corpus (real documentation) when it is present, as in CI."""

from __future__ import annotations

from pathlib import Path

import psycopg

from doc_migration_tests.helpers import REPO_ROOT, count_rows, run_cli

EXPORTS = REPO_ROOT / "examples" / "shared-doc-server-exports.yaml"


def test_doc_server_exports_migrate_completely(tmp_path: Path, database_url: str, shared_corpus: Path) -> None:
    first = run_cli(["--sources", str(EXPORTS), "full", "--json"], database_url=database_url, home=tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    summary = first.json
    assert summary["documents_loaded"] == 442, summary["quarantined_files"]
    assert summary["quarantined"] == 1
    (q,) = summary["quarantined_files"]
    assert q["path"] == "jupiter/0147_temp_jupiter_docs_moved_1-comparator.md.json"
    assert "empty" in q["reason"]

    st = run_cli(["--sources", str(EXPORTS), "status", "--json"], database_url=database_url, home=tmp_path).json
    assert st["rows"] == count_rows(database_url)
    assert st["documents_loaded"] == 442
    assert [x["path"] for x in st["quarantined"]] == [q["path"]]
    with psycopg.connect(database_url) as conn:
        per_type = dict(conn.execute(
            "SELECT doc_type, count(DISTINCT metadata->>'source_file') FROM documents GROUP BY 1").fetchall())
        bad = conn.execute("SELECT count(*) FROM documents WHERE embedding IS NULL OR vector_dims(embedding) <> 3072"
                           ).fetchone()
    assert per_type == {"cilium": 200, "jupiter": 242}
    assert bad == (0,)

    second = run_cli(["--sources", str(EXPORTS), "full", "--json"], database_url=database_url, home=tmp_path)
    assert second.code == 0
    assert second.json["rows_written"] == 0 and second.json["chunks_embedded"] == 0
    assert second.json["documents_unchanged"] == 442
