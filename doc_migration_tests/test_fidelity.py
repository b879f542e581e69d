"""Issue 15 end to end: a tree of real-world oddities loads as a person expects, ``status --files``
explains every classification, and scripts/fidelity_report.py tabulates it (also on ../shared/corpus,
where its table must match docs/fidelity.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from doc_migration_tests.helpers import REPO_ROOT, run_cli

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _sorted_key_spec() -> str:
    """Key-sorted OpenAPI as generators write it: 'openapi' after a large 'components' object."""
    schemas = {f"Model{i:03d}": {"type": "object", "properties": {"field": {"type": "string",
                                                                           "description": "x" * 60}}}
               for i in range(120)}
    paths = {"/pools": {"get": {"summary": "List pools", "responses": {"200": {"description": "ok"}}},
                        "post": {"summary": "Create a pool", "responses": {"201": {"description": "made"}}}},
             "/pools/{id}": {"delete": {"summary": "Close a pool", "responses": {"204": {"description": "gone"}}}}}
    return json.dumps({"components": {"schemas": schemas}, "info": {"title": "Pools", "version": "1"},
                       "openapi": "3.0.3", "paths": paths}, sort_keys=True, indent=2)


def make_tree(root: Path) -> Path:
    guides = root / "tree" / "guides"
    guides.mkdir(parents=True)
    (guides / "spec.json").write_text(_sorted_key_spec())
    (guides / "schema.json").write_text(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                                    "title": "Pool", "type": "object",
                                                    "properties": {"fee": {"type": "number"}}}))
    (guides / "NOTES").write_text("Release notes\n\nThe pool fee is now configurable per pool.\n")
    (guides / "tutor1.ru").write_text("Учебник: как создать пул ликвидности и настроить комиссию.\n")
    (guides / "latin.md").write_bytes("# Café\n\nLa tarifa se aplica según el volumen: déjà vu.\n".encode("latin-1"))
    (guides / "logo.png").write_bytes(PNG)
    (guides / "empty.md").write_text("")
    (guides / "diagram.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>')
    return root / "tree"


def _manifest(tmp_path: Path, tree: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(json.dumps({"shards": 2, "sources": [
        {"source_name": "{doc_type}-docs", "doc_type": "{folder}", "path": str(tree), "include": ["**/*"],
         "format": "auto"}]}))
    return path


def test_status_files_explains_every_classification(tmp_path: Path, database_url: str) -> None:
    sources = _manifest(tmp_path, make_tree(tmp_path))
    first = run_cli(["--sources", str(sources), "full", "--json"], database_url=database_url, home=tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    st = run_cli(["--sources", str(sources), "status", "--files", "--json"], database_url=database_url,
                 home=tmp_path)
    assert st.code == 0, st.stderr[-2000:]
    files = {f["path"].rsplit("/", 1)[-1]: f for f in st.json["file_details"]}
    assert st.json["files"] == {"seen": 8, "loaded": 5, "quarantined": 3}  # the summary keeps its shape
    seen = {name: (f["format"], f["outcome"]) for name, f in files.items()}
    assert seen == {
        "spec.json": ("openapi", "loaded"),
        "schema.json": ("json-text", "loaded"),
        "NOTES": ("text", "loaded"),
        "tutor1.ru": ("text", "loaded"),
        "latin.md": ("markdown", "loaded"),
        "logo.png": ("binary", "refused"),
        "empty.md": ("markdown", "refused"),
        "diagram.svg": ("binary", "refused"),
    }
    assert files["spec.json"]["detected_by"] == "top-level key 'openapi'"
    assert files["latin.md"]["detected_by"] == "extension '.md'"
    assert files["NOTES"]["detected_by"] == "decodable text"
    assert files["logo.png"]["reason"].startswith("binary file (PNG image)")
    assert files["empty.md"]["reason"] == "empty file"
    # The quarantine list of plain `status --json` carries the same evidence.
    q = {x["path"].rsplit("/", 1)[-1]: x for x in st.json["quarantined"]}
    assert q["logo.png"]["format"] == "binary" and q["empty.md"]["detected_by"] == "extension '.md'"
    formats = st.json["formats"]
    assert formats["binary"] == {"files": 2, "loaded": 0, "refused": 2, "pending": 0, "rows": 0,
                                 "refused_by_reason": {"binary file (PNG image)": 1, "image file (SVG)": 1}}
    assert formats["text"]["loaded"] == 2 and formats["markdown"]["refused_by_reason"] == {"empty file": 1}
    with psycopg.connect(database_url) as conn:
        ops = conn.execute("SELECT DISTINCT metadata->>'method', metadata->>'endpoint' FROM documents "
                           "WHERE metadata->>'source_file' LIKE '%%spec.json' AND metadata ? 'method'").fetchall()
        latin = conn.execute("SELECT content, metadata->>'encoding', metadata->>'detected_by' FROM documents "
                             "WHERE metadata->>'source_file' LIKE '%%latin.md'").fetchone()
    assert sorted(ops) == [("DELETE", "/pools/{id}"), ("GET", "/pools"), ("POST", "/pools")]
    assert latin is not None and "déjà vu" in latin[0] and latin[1] and latin[2] == "extension '.md'"

    again = run_cli(["--sources", str(sources), "full", "--json"], database_url=database_url, home=tmp_path)
    assert again.code == 0 and again.json["rows_written"] == 0 and again.json["chunks_embedded"] == 0
    text = run_cli(["--sources", str(sources), "status", "--files"], database_url=database_url, home=tmp_path)
    assert re.search(r"guides/spec\.json: openapi \(top-level key 'openapi'\) -> \d+ rows", text.stdout), text.stdout


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/fidelity_report.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_fidelity_report_on_a_folder_given(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    out = tmp_path / "report.md"
    proc = _script(str(tree), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    assert "8 files, 5 loaded" in report and "3 refused" in report
    assert "unchanged re-run wrote **0 rows**" in report
    assert re.search(r"^\| openapi \| 1 \| 1 \| [1-9]\d* \| 0 \| – \|$", report, re.M), report
    assert re.search(r"^\| binary \| 2 \| 0 \| 0 \| 2 \| (binary file \(PNG image\) \(1\)|image file \(SVG\) \(1\))"
                     r", (image file \(SVG\)|binary file \(PNG image\)) \(1\) \|$", report, re.M), report
    assert "`guides/logo.png` (binary): binary file (PNG image)" in report
    assert str(tmp_path) in report  # a folder outside the repository is named as given


def _tables(report: str) -> list[str]:
    """The report's facts that do not depend on the run's time: headings, counts, tables, refusals."""
    keep = []
    for line in report.splitlines():
        line = re.sub(r"first load [\d.]+ s", "first load N s", line)
        if line.startswith(("## ", "| ", "- `")) or " files, " in line:
            keep.append(line)
    return keep


def test_fidelity_table_in_docs_matches_the_shared_corpus(tmp_path: Path, shared_corpus: Path) -> None:
    """docs/fidelity.md is what the script writes today: no readable file of ../shared/corpus refused."""
    out = tmp_path / "fidelity.md"
    proc = _script("--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = out.read_text()
    assert _tables(fresh) == _tables((REPO_ROOT / "docs" / "fidelity.md").read_text()), (
        "docs/fidelity.md is stale: run `make fidelity` and commit it")
    refused = [line for line in fresh.splitlines() if line.startswith("- `")]
    assert len(refused) == 3 and all("empty" in line or "has no text" in line for line in refused), refused


def test_fidelity_report_names_a_missing_folder() -> None:
    proc = _script("/no/such/folder", timeout=120)
    assert proc.returncode != 0 and "/no/such/folder: not a folder" in proc.stderr
