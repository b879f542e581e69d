"""Helpers for end-to-end tests: run the real CLI in a subprocess against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MANIFEST = REPO_ROOT / "doc_migration" / "sample_corpus" / "sources.yaml"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.strip().splitlines() if line.strip()]
        assert lines, f"no stdout; stderr:\n{self.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def run_cli(args: list[str], *, database_url: str, home: Path, extra_env: dict[str, str] | None = None,
            timeout: float = 600) -> CliResult:
    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(home),
           "DAGSTER_HOME": "", **(extra_env or {})}
    env.pop("DOC_MIGRATION_SOURCES", None)
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "doc_migration.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(home))
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def fetch_rows(database_url: str) -> dict[str, tuple[Any, ...]]:
    """doc_path-keyed snapshot of documents: (id, doc_type, source_name, content, dims, token_count)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, doc_type, source_name, doc_path, content, vector_dims(embedding), token_count, metadata "
            "FROM documents").fetchall()
    out: dict[str, tuple[Any, ...]] = {}
    for r in rows:
        key = f"{r[1]}/{r[2]}/{r[3]}"
        assert key not in out, f"duplicate row {key}"
        out[key] = (r[0], r[1], r[2], r[4], r[5], r[6], r[7])
    return out


def count_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert row is not None
    return int(row[0])
