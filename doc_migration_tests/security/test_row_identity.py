"""Issue 19: two files can never end in one row. ``guide.md#chunk0001`` maps to the key of chunk 1 of
``guide.md``; one of the two is refused with both files named, whether they share a partition or
not, on a fresh database and on an incremental run; the other keeps its row untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from doc_migration.manifest import shard_of
from doc_migration_tests.helpers import run_cli

IMPOSTOR = "guide.md#chunk0001"


def _long_page() -> str:
    return "# Guide\n\n" + "\n\n".join(
        f"## Part {j}\n\n" + " ".join(f"word{j}x{k} means something" for k in range(120)) for j in range(4)) + "\n"


def _tree(tmp_path: Path, shards: int) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "guide.md").write_text(_long_page(), encoding="utf-8")
    (root / "other.md").write_text("# Other\n\nAn unrelated page.\n", encoding="utf-8")
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(yaml.safe_dump({"shards": shards, "chunking": {"max_tokens": 200, "overlap_tokens": 0},
                                        "sources": [{"source_name": "g", "doc_type": "guide", "path": str(root),
                                                     "include": ["**/*"]}]}), encoding="utf-8")
    return manifest


def _full(manifest: Path, url: str, home: Path) -> dict[str, Any]:
    r = run_cli(["--sources", str(manifest), "full", "--json"], database_url=url, home=home)
    assert r.code == 0, r.stderr[-3000:]
    return r.json


def _rows(url: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT doc_path, content, metadata->>'source_file' FROM documents WHERE doc_type = 'guide'")}


def _shards_apart() -> int:
    """A shard count that puts the two files in different partitions."""
    return next(n for n in range(2, 16) if shard_of("g", "guide.md", n) != shard_of("g", IMPOSTOR, n))


@pytest.mark.parametrize("layout", ["one partition", "two partitions"])
def test_a_file_named_like_anothers_chunk_is_refused_naming_both(layout: str, tmp_path: Path,
                                                                  database_url: str) -> None:
    shards = 1 if layout == "one partition" else _shards_apart()
    manifest = _tree(tmp_path, shards)
    _full(manifest, database_url, tmp_path / "home")  # guide.md alone first: chunk 1 exists
    rows = _rows(database_url)
    assert rows[IMPOSTOR][1] == "guide.md", "guide.md is long enough to have a chunk 1"

    (manifest.parent / "docs" / IMPOSTOR).write_text("# Impostor\n\nNot part of the guide.\n", encoding="utf-8")
    second = _full(manifest, database_url, tmp_path / "home")  # exit 0: rows_match_ledger holds
    assert _rows(database_url) == rows, "guide.md's chunk 1 is untouched"
    refused = {q["path"]: q["reason"] for q in second["quarantined_files"]}
    assert set(refused) == {IMPOSTOR}
    assert f"'{IMPOSTOR}'" in refused[IMPOSTOR] and "'guide.md'" in refused[IMPOSTOR]

    third = _full(manifest, database_url, tmp_path / "home")  # and so it stays, run after run
    assert third["rows_written"] == 0 and _rows(database_url) == rows
    assert {q["path"] for q in third["quarantined_files"]} == {IMPOSTOR}


@pytest.mark.parametrize("layout", ["one partition", "two partitions"])
def test_on_a_fresh_database_one_of_the_two_is_refused_naming_both(layout: str, tmp_path: Path,
                                                                    database_url: str) -> None:
    shards = 1 if layout == "one partition" else _shards_apart()
    manifest = _tree(tmp_path, shards)
    (manifest.parent / "docs" / IMPOSTOR).write_text("# Impostor\n\nNot part of the guide.\n", encoding="utf-8")
    first = _full(manifest, database_url, tmp_path / "home")
    refused = {q["path"]: q["reason"] for q in first["quarantined_files"]}
    assert len(refused) == 1, refused
    (loser, reason), = refused.items()
    winner = "guide.md" if loser == IMPOSTOR else IMPOSTOR
    assert f"'{winner}'" in reason
    rows = _rows(database_url)
    assert rows[IMPOSTOR][1] == winner, "the row holds the winner's text, and only its"
    with psycopg.connect(database_url) as conn:
        owners = conn.execute("SELECT count(*), count(DISTINCT (doc_type, source_name, doc_path)) "
                              "FROM doc_migration.partition_rows").fetchone()
    assert owners is not None and owners[0] == owners[1] == len(rows) + 0
