"""Issue 19: a randomized fault ("nemesis") test. Faults are drawn from a seed, not placed by hand:
kill -9 of the whole process group at a random moment of ``full``, ``rollback --run`` or
``validate --repair``; PostgreSQL itself killed -9 (postmaster and every backend) at a random
moment of ``full`` and restarted on the same data directory (crash recovery), after no pause or
a few seconds down; two ``full`` runs at once; and an embedding server answering random 500s,
429s and garbage. The ``full`` the database died under must end, not hang, with exit 5 and a
``database error:`` line. After each round the database is resumed with a plain ``full`` and its
whole-table fingerprint (every row's key, id, content, metadata, vector and token count) must
equal a clean load of the same files: nothing lost, nothing duplicated.

The test runs its own PostgreSQL (``testkit.crashable_pg``: a data directory and a socket of its
own, under tmp_path unless root), never the suite's shared server, which other tests are using.

Short in CI (``DOC_MIGRATION_NEMESIS_ROUNDS``, default 4); longer with a larger value. Every run
draws ``kill-postgres`` (the only fault no other test injects) and as many distinct faults as
rounds allow, the remaining rounds at random. The seed (``DOC_MIGRATION_NEMESIS_SEED``, default
random) is printed on failure so a run can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli
from doc_migration_tests.test_resume_rollback import snapshot
from testkit.crashable_pg import CrashablePostgres
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-nemesis-0123456789"
ROUNDS = int(os.environ.get("DOC_MIGRATION_NEMESIS_ROUNDS") or 4)
FAULTS = ("kill-full", "kill-rollback", "kill-repair", "kill-postgres", "concurrent", "flaky-embedder")
EXIT_UNAVAILABLE = 5  # what a command the database died under must exit with (retry later)


@pytest.fixture()
def own_postgres(tmp_path: Path) -> Iterator[CrashablePostgres]:
    """A PostgreSQL only this test uses, since it kills it; stopped even when the test fails.

    Under tmp_path, except as root: the server then runs as another user, and pytest makes its
    temp tree private (0700) again whenever a pytest session starts, so a restart would find its
    data directory unreachable. Its directory is then a world-traversable one in /tmp instead,
    as the shared server's is (conftest.py), removed afterwards."""
    root = tmp_path / "pg" if os.geteuid() != 0 else Path(tempfile.mkdtemp(prefix="doc_migration_nemesis_pg_"))
    server = CrashablePostgres(root)
    try:
        if os.geteuid() == 0:
            root.chmod(0o755)
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        if os.geteuid() == 0:
            shutil.rmtree(root, ignore_errors=True)


def _plan(rng: random.Random, rounds: int) -> list[str]:
    """The faults of the rounds, in a random order: kill-postgres always (nothing else kills the
    database), then distinct faults while rounds allow, so a short CI run still covers most kinds."""
    others = [f for f in FAULTS if f != "kill-postgres"]
    distinct = ["kill-postgres", *rng.sample(others, max(0, min(rounds, len(FAULTS)) - 1))]
    plan = distinct[:rounds] + [rng.choice(FAULTS) for _ in range(rounds - len(distinct))]
    rng.shuffle(plan)
    return plan


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


def _popen(args: list[str], url: str, home: Path, env: dict[str, str],
           stderr: Path | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "DATABASE_URL": url, "DOC_MIGRATION_HOME": str(home), "DAGSTER_HOME": "", **env}
    with open(stderr or os.devnull, "w", encoding="utf-8") as err:  # a file, not a pipe: nobody reads it meanwhile
        return subprocess.Popen([sys.executable, "-m", "doc_migration.cli", *args], env=full_env, cwd=str(home),
                                stdout=subprocess.DEVNULL, stderr=err, text=True,
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


def _run_locks_held(url: str) -> bool:
    """Whether a ``full`` holds its run locks (advisory locks are the only ones the pipeline takes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()
    return bool(row and row[0])


def _kill_postgres(server: CrashablePostgres, proc: subprocess.Popen[str], err: Path,
                   rng: random.Random, longest: float) -> tuple[str, bool]:
    """kill -9 the database at a random moment of ``proc``, restart it after a random pause (none
    half the time: the run then meets a working server again) and check how ``proc`` ended.

    Mostly the moment is drawn within the run proper (from when its run locks are held: a timer
    from the start would mostly hit the seconds of imports before it), a quarter of the time from
    the start (start-up, migrations). The command is frozen (SIGSTOP) around the kill, so whether
    it held its locks when the database died is known exactly: then it must exit 5 with a
    database error; before it took them or after it let them go, 0 is also right. Never a hang.
    Returns the log text and whether the kill struck mid-run."""
    early = rng.random() < 0.25
    delay = rng.uniform(0.3, 2.0) if early else rng.uniform(0.0, longest)
    down = rng.choice((0.0, rng.uniform(0.5, 3.0)))
    started = time.monotonic()
    if not early:
        while proc.poll() is None and not _run_locks_held(server.url):
            assert time.monotonic() - started < 120, "`full` never took its run locks"
            time.sleep(0.02)
    since = "the start" if early else "the run locks"
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        held = proc.poll() is None and _run_locks_held(server.url)
        killed = server.kill()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
    stage = ("mid-run (run locks held)" if held else
             "after the command ended" if proc.poll() is not None else "outside the run (no run locks)")
    time.sleep(down)
    t0 = time.monotonic()
    server.restart()
    recovery = time.monotonic() - t0
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"`full` hung after PostgreSQL was killed {stage}") from None
    stderr = err.read_text(encoding="utf-8", errors="replace")
    errors = [line for line in stderr.splitlines() if line.startswith("doc-migrate: ")][-1:]
    what = (f"PostgreSQL ({killed} processes) killed {delay:.1f} s after {since}, {stage}, down {down:.1f} s, "
            f"recovered in {recovery:.1f} s; the run exited {code}" + (f": {errors[0][:90]}..." if errors else ""))
    allowed = {EXIT_UNAVAILABLE} if held else {0, EXIT_UNAVAILABLE}
    assert code in allowed and (code == 0 or (errors and "database error:" in errors[0])), (
        f"{what}\n{stderr[-3000:]}")
    return what, held


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


def test_nemesis(tmp_path: Path, own_postgres: CrashablePostgres) -> None:
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
    mid_run: Counter[str] = Counter()  # faults that struck while the command was running
    log: list[str] = []
    pg_server_url = own_postgres.url
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "nemesis"')
    database_url = psycopg.conninfo.make_conninfo(pg_server_url, dbname="nemesis")
    with EmbeddingTestServer(api_key=KEY) as clean, \
            EmbeddingTestServer(api_key=KEY, fail_rate_500=0.2, garbage_rate=0.1, force_429_every=7,
                                retry_after_seconds=0.1, seed=0) as flaky:
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": clean.base_url}
        refs = _references(manifest, root, originals, versions, pg_server_url, tmp_path, env)
        assert refs["A"] != refs["B"]
        cli = ["--sources", str(manifest)]
        started = time.monotonic()
        current = "A"  # the empty database gets version A's rows in the first round
        for n, fault in enumerate(_plan(rng, ROUNDS)):
            # Every round moves to the other version, so the faulted command always has work to do
            # (rollback and repair: the full run before them does).
            target = current if n == 0 else ("B" if current == "A" else "A")
            current = target
            _apply(root, originals, versions[target])
            injected[fault] += 1
            if fault == "kill-full":
                what = _kill_at_random(_popen([*cli, "full"], database_url, home, env), rng, 7.0)
                mid_run[fault] += what.startswith("killed")
            elif fault == "kill-postgres":
                err = tmp_path / f"round-{n}.stderr"
                try:
                    what, struck = _kill_postgres(own_postgres, _popen([*cli, "full"], database_url, home, env, err),
                                                  err, rng, 2.5)
                except AssertionError as exc:
                    raise AssertionError(f"replay with DOC_MIGRATION_NEMESIS_SEED={seed}, round {n}: {exc}") from None
                mid_run[fault] += struck
            elif fault == "kill-rollback":
                done = run_cli([*cli, "full", "--json"], database_url=database_url, home=home, extra_env=env)
                assert done.code == 0, done.stderr[-2000:]
                run_id = done.json["run_id"]
                assert run_id, f"seed {seed}, round {n}: the run before the rollback did nothing"
                what = _kill_at_random(_popen([*cli, "rollback", "--run", run_id, "--yes"], database_url, home,
                                              env), rng, 4.0)
                mid_run[fault] += what.startswith("killed")
            elif fault == "kill-repair":
                assert run_cli([*cli, "full"], database_url=database_url, home=home, extra_env=env).code == 0
                _tamper(database_url)
                what = _kill_at_random(_popen([*cli, "validate", "--repair", "--yes"], database_url, home, env),
                                       rng, 9.0)
                mid_run[fault] += what.startswith("killed")
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
          f"struck mid-run {dict(mid_run)}; PostgreSQL restarts {own_postgres.restarts}; "
          f"0 lost, 0 duplicated, 0 different\n" + "\n".join(log))

