"""Issue 19: a FIFO, a socket or a name that is not UTF-8 in a docs tree is refused with its reason,
never opened or crashed on, and the rest of the tree loads (these hung or aborted the run)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import yaml

from doc_migration_tests.helpers import run_cli


def test_special_files_and_undecodable_names_are_refused_and_the_rest_loads(tmp_path: Path,
                                                                             database_url: str) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "fine.md").write_text("# Fine\n\nAn ordinary page beside special files.\n", encoding="utf-8")
    os.mkfifo(root / "pipe.md")  # opening it for reading would block until a writer appears
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.md"))
    bad_name = os.fsdecode(b"caf\xe9.md")  # Latin-1 bytes: not UTF-8
    (root / bad_name).write_text("# Latin-1 name\n\nText.\n", encoding="utf-8")
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(yaml.safe_dump({"sources": [
        {"source_name": "special", "doc_type": "special", "path": str(root), "include": ["**/*"]}]}), encoding="utf-8")
    try:
        result = run_cli(["--sources", str(manifest), "full", "--json"], database_url=database_url,
                         home=tmp_path / "home", timeout=180)
    finally:
        sock.close()
    assert result.code == 0, result.stderr[-3000:]
    refused = {q["path"]: q["reason"] for q in result.json["quarantined_files"]}
    assert set(refused) == {"pipe.md", "sock.md", "caf\\xe9.md"}, refused
    assert "not a regular file (a FIFO)" in refused["pipe.md"]
    assert "not a regular file (a socket)" in refused["sock.md"]
    assert "not valid UTF-8" in refused["caf\\xe9.md"] and "rename" in refused["caf\\xe9.md"]
    with psycopg.connect(database_url) as conn:
        files = {r[0] for r in conn.execute("SELECT DISTINCT metadata->>'source_file' FROM documents "
                                            "WHERE doc_type = 'special'")}
    assert files == {"fine.md"}
