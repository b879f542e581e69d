"""Issue 19: file names a docs tree may hold (``#``, ``?``, ``%``, newlines, quotes, SQL, right-to-left
marks, combining characters, ANSI escapes) load under a key that is exactly the real path, and never
reach the terminal raw (a newline or an escape in a name must not forge or colour a log line)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import psycopg
import yaml

from doc_migration_tests.helpers import run_cli

HOSTILE = [
    "hash#frag.md", "query?x=1&y=2.md", "percent%41%2F.md", "new\nline.md", "quote'\"s.md",
    "'; DROP TABLE documents; --.md", "rtl\u202egnp.md", "combining e\u0301.md", "space name.md",
    "\x1b[31mred\x1b[0m.md", "tab\there.md", "日本語のページ.md",
]
EMPTY = "empty\nforged: line\x1b[2J.md"  # refused (empty file): its name is printed on stderr


def test_hostile_names_load_under_their_exact_path_and_print_escaped(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for i, name in enumerate(HOSTILE):
        (root / name).write_text(f"# Page {i}\n\nPage number {i} of the hostile names test.\n", encoding="utf-8")
    (root / EMPTY).write_text("", encoding="utf-8")
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(yaml.safe_dump({"shards": 2, "sources": [
        {"source_name": "hostile", "doc_type": "hostile", "path": str(root), "include": ["**/*"]}]}),
        encoding="utf-8")
    result = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url,
                     home=tmp_path / "home")
    assert result.code == 0, result.stderr[-3000:]

    with psycopg.connect(database_url) as conn:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT doc_path, metadata->>'source_file', content FROM documents WHERE doc_type = 'hostile'")}
    assert set(rows) == set(HOSTILE), "every name is its own key, byte for byte"
    for i, name in enumerate(HOSTILE):
        assert rows[name][0] == name and f"Page number {i} " in rows[name][1]
    assert unicodedata.is_normalized("NFD", "combining e\u0301.md") and "combining e\u0301.md" in rows, \
        "not normalised: the key is the path the file system has"

    refused = {q["path"]: q["reason"] for q in result.json["quarantined_files"]}
    assert set(refused) == {EMPTY}
    assert "\x1b" not in result.stderr, "no escape sequence reaches the terminal"
    assert not any(line.startswith("forged: line") for line in result.stderr.splitlines())
    assert "empty\\nforged: line\\x1b[2J.md" in result.stderr

    again = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url,
                    home=tmp_path / "home")
    assert again.code == 0 and again.json["rows_written"] == 0
