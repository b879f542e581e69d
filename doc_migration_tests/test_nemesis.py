"""Issue 19: a randomized fault ("nemesis") test. Faults are drawn from a seed, not placed by hand:
kill -9 of the whole process group at a random moment of ``full``, ``rollback --run`` or
``validate --repair``, two ``full`` runs at once, and an embedding server answering random
500s, 429s and garbage. After each round the database is resumed with a plain ``full`` and its
whole-table fingerprint (every row's key, id, content, metadata, vector and token count) must
equal a clean load of the same files: nothing lost, nothing duplicated.

Short in CI (``DOC_MIGRATION_NEMESIS_ROUNDS``, default 4); longer with a larger value. The seed
(``DOC_MIGRATION_NEMESIS_SEED``, default random) is printed on failure so a run can be replayed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli
from doc_migration_tests.test_resume_rollback import snapshot
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-nemesis-0123456789"
ROUNDS = int(os.environ.get("DOC_MIGRATION_NEMESIS_ROUNDS") or 4)
FAULTS = ("kill-full", "kill-rollback", "kill-repair", "concurrent", "flaky-embedder")


def _versions(root: Path) -> dict[str, dict[str, str | None]]:
    """Two states of the corpus the rounds move between (so resumes are incremental too)."""
    page = root / "rust" / "ownership.md"
    return {"A": {}, "B": {
        "rust/ownership.md": page.read_text(encoding="utf-8") + "\n## Borrowing\n\nReferences borrow a value.\n",
        "rust/cargo-features.md": None,  # deleted
        "talos/nemesis-new.mdx": "# New page\n\nAdded between rounds by the nemesis test.\n",
    }}


def _apply(root: Path, originals: dict[str, bytes], version: dict[str, str | None]) -> None:
    for rel, data in originals.items():  # back to A first
        (root / rel).write_bytes(data)
    (root / "talos" / "nemesis-new.mdx").unlink(missing_ok=True)
    for rel, text in version.items():
        if text is None:
            (root / rel).unlink()
        else:
            (root / rel).write_text(text, encoding="utf-8")


def _popen(args: list[str], url: str, home: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {**os.environ, "DATABASE_URL": url, "DOC_MIGRATION_HOME": str(home), "DAGSTER_HOME": "", **env}
    return subprocess.Popen([sys.executable, "-m", "doc_migration.cli", *args], env=full_env, cwd=str(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # its own process group: the kill takes the parse workers too


def _kill_at_random(proc: subprocess.Popen[str], rng: random.Random, longest: float) -> str:
    delay = rng.uniform(0.2, longest)
    try:
        proc.wait(timeout=delay)
        return f"ended by itself before {delay:.1f} s"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"killed at {delay:.1f} s"


def _tamper(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE documents SET content = content || ' (edited by hand)' WHERE id = "
                     "(SELECT id FROM documents ORDER BY doc_path LIMIT 1)")


def _references(manifest: Path, root: Path, originals: dict[str, bytes], versions: dict[str, Any],
                pg_server_url: str, home: Path, env: dict[str, str]) -> dict[str, dict[str, tuple[Any, ...]]]:
    refs = {}
    for name, version in versions.items():
        db = f"nemesis_ref_{name.lower()}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
        url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=db)
        _apply(root, originals, version)
        r = run_cli(["--sources", str(manifest), "full"], database_url=url, home=home / f"ref-{name}", extra_env=env)
        assert r.code == 0, r.stderr[-2000:]
        refs[name] = snapshot(url)
    return refs


def test_nemesis(tmp_path: Path, database_url: str, pg_server_url: str) -> None:
    seed = int(os.environ.get("DOC_MIGRATION_NEMESIS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    root = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, root)
    manifest = root / "sources.yaml"
    versions = _versions(root)
    originals = {rel: (root / rel).read_bytes() for rel in ("rust/ownership.md", "rust/cargo-features.md")}
    home = tmp_path / "home"
    home.mkdir()
    injected: Counter[str] = Counter()
    log: list[str] = []
    with EmbeddingTestServer(api_key=KEY) as clean, \
            EmbeddingTestServer(api_key=KEY, fail_rate_500=0.2, garbage_rate=0.1, force_429_every=7,
                                retry_after_seconds=0.1, seed=0) as flaky:
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": clean.base_url}
        refs = _references(manifest, root, originals, versions, pg_server_url, tmp_path, env)
        assert refs["A"] != refs["B"]
        cli = ["--sources", str(manifest)]
        started = time.monotonic()
        current = "A"  # the empty database gets version A's rows in the first round
        for n in range(ROUNDS):
            fault = rng.choice(FAULTS)
            # Every round moves to the other version, so the faulted command always has work to do
            # (rollback and repair: the full run before them does).
            target = current if n == 0 else ("B" if current == "A" else "A")
            current = target
            _apply(root, originals, versions[target])
            injected[fault] += 1
            if fault == "kill-full":
                what = _kill_at_random(_popen([*cli, "full"], database_url, home, env), rng, 7.0)
            elif fault == "kill-rollback":
                done = run_cli([*cli, "full", "--json"], database_url=database_url, home=home, extra_env=env)
                assert done.code == 0, done.stderr[-2000:]
                run_id = done.json["run_id"]
                assert run_id, f"seed {seed}, round {n}: the run before the rollback did nothing"
                what = _kill_at_random(_popen([*cli, "rollback", "--run", run_id, "--yes"], database_url, home,
                                              env), rng, 4.0)
            elif fault == "kill-repair":
                assert run_cli([*cli, "full"], database_url=database_url, home=home, extra_env=env).code == 0
                _tamper(database_url)
                what = _kill_at_random(_popen([*cli, "validate", "--repair", "--yes"], database_url, home, env),
                                       rng, 9.0)
            elif fault == "concurrent":
                procs = [_popen([*cli, "full"], database_url, home, env) for _ in range(2)]
                codes = sorted(p.wait(timeout=600) for p in procs)
                assert codes in ([0, 0], [0, 4]), f"seed {seed}, round {n}: exit codes {codes}"
                what = f"exit codes {codes}"
            else:
                r = run_cli([*cli, "full"], database_url=database_url, home=home,
                            extra_env={**env, "OPENAI_BASE_URL": flaky.base_url})
                assert r.code == 0, f"seed {seed}, round {n}: {r.stderr[-2000:]}"
                what = "500s, 429s and garbage answers"
            log.append(f"round {n}: {fault} on version {target}: {what}")
            resumed = run_cli([*cli, "full"], database_url=database_url, home=home, extra_env=env)
            assert resumed.code == 0, f"seed {seed}, {log[-1]}: resume failed:\n{resumed.stderr[-2000:]}"
            now = snapshot(database_url)
            lost = sorted(set(refs[target]) - set(now))
            extra = sorted(set(now) - set(refs[target]))
            differ = sorted(k for k in now if k in refs[target] and now[k] != refs[target][k])
            assert not (lost or extra or differ), (
                f"replay with DOC_MIGRATION_NEMESIS_SEED={seed}: after {log[-1]}: lost {lost[:5]}, "
                f"extra {extra[:5]}, different {differ[:5]}\n" + "\n".join(log))
    print(f"nemesis seed {seed}: {ROUNDS} rounds in {time.monotonic() - started:.0f} s; faults {dict(injected)}; "
          f"0 lost, 0 duplicated, 0 different\n" + "\n".join(log))

