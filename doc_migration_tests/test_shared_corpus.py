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


REAL_FORMATS = REPO_ROOT / "examples" / "shared-real-formats.yaml"
SQL_DUMP = REPO_ROOT / "examples" / "shared-jupiter-sql-dump.yaml"


def test_real_formats_every_file_loaded_or_quarantined(tmp_path: Path, database_url: str,
                                                        shared_corpus: Path) -> None:
    result = run_cli(["--sources", str(REAL_FORMATS), "full", "--json", "--parallel", "2"],
                     database_url=database_url, home=tmp_path, timeout=1200)
    assert result.code == 0, result.stderr[-3000:]
    summary = result.json
    assert summary["failed_partitions"] == []
    st = run_cli(["--sources", str(REAL_FORMATS), "status", "--json"], database_url=database_url,
                 home=tmp_path).json
    on_disk = [p for p in (shared_corpus / "real-formats").rglob("*")
               if p.is_file() and p.parent != shared_corpus / "real-formats"]
    assert st["files"]["seen"] == len(on_disk) == 856
    assert st["files"]["loaded"] + st["files"]["quarantined"] == st["files"]["seen"]
    reasons = {q["path"]: q["reason"] for q in st["quarantined"]}
    assert reasons == {
        "jupiter/jup-ag__space-station/Moved/1-comparator.md": "empty file",
        "jupyter/jupyter__notebook/ui-tests/test/notebooks/empty.ipynb": "notebook has no text",
    }
    with psycopg.connect(database_url) as conn:
        ops = conn.execute(
            "SELECT metadata->>'method', metadata->>'endpoint', content FROM documents "
            "WHERE metadata->>'source_file' = 'meteora/MeteoraAg__docs/developer-guides/damm-v2/api-reference/"
            "openapi.json'").fetchall()
        pdf = conn.execute(
            "SELECT string_agg(content, ' ') FROM documents WHERE metadata->>'source_file' = "
            "'solana/solana-labs__whitepaper/solana-whitepaper-en.pdf'").fetchone()
        nb_langs = {r[0] for r in conn.execute(
            "SELECT DISTINCT metadata->>'kernel_language' FROM documents WHERE doc_type = 'jupyter'")}
        over_limit = conn.execute("SELECT count(*) FROM documents WHERE token_count > 8191").fetchone()
    assert len(ops) > 1 and all(m in {"GET", "POST", "PUT", "DELETE", "PATCH"} for m, _, _ in ops)
    assert all(e.startswith("/") for _, e, _ in ops)
    assert pdf and "Proof of History" in pdf[0]
    assert "python" in nb_langs
    assert over_limit == (0,)
    again = run_cli(["--sources", str(REAL_FORMATS), "full", "--json"], database_url=database_url,
                    home=tmp_path, timeout=1200)
    assert again.json["rows_written"] == 0 and again.json["chunks_embedded"] == 0


def test_sql_dump_loads_its_242_documents(tmp_path: Path, database_url: str, shared_corpus: Path) -> None:
    result = run_cli(["--sources", str(SQL_DUMP), "full", "--json"], database_url=database_url, home=tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    assert result.json["documents_loaded"] == 242 and result.json["quarantined"] == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(DISTINCT metadata->>'document_path'), min(source_name), max(source_name) "
                            "FROM documents").fetchone()
        sample = conn.execute("SELECT content FROM documents WHERE doc_path = "
                              "'temp_jupiter_docs/docs/misc/13-integrator-guidelines.md'").fetchone()
    assert rows == (242, "jupiter-docs", "jupiter-docs")
    assert sample and "Jupiter Metis v1" in sample[0]
