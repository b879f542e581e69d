"""Sequences of documented commands an operator runs one after the other, in one copy and home:
two manifests in one home, tamper -> validate -> repair, rollback -> status, Ctrl-C -> resume, and
the Dagster CLI on a partition key."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .runner import SHARED_CORPUS, TRACEBACK, Journey, Result
from .steps import tamper_a_row

pytestmark = pytest.mark.journey

ACTIVATE = (". .venv/bin/activate",)
REAL_FORMATS = "--sources examples/shared-real-formats.yaml"
# A command the output tells the operator to run, quoted with backticks or single quotes.
SUGGESTED = re.compile(r"[`']((?:\S*/)?doc-migrate [^`'\n]+)[`']")


@pytest.fixture(scope="module")
def loaded() -> Iterator[Journey]:
    """A copy after the README's `make run`."""
    j = Journey("sequences")
    result = j.run("make run")
    assert result.code == 0, result.explain()
    yield j
    j.close()


def _run(j: Journey, command: str, answer_y: bool = False) -> Result:
    """A line in the README's shell (venv activated), from the copy's root."""
    return j.run(command, setup=ACTIVATE, answer_y=answer_y)


def _expect(result: Result, code: int) -> Result:
    assert result.code == code, f"expected exit {code}\n{result.explain()}"
    assert TRACEBACK not in result.stderr, f"a stack trace on stderr\n{result.explain()}"
    return result


# --------------------------------------------------------------------------- (a) foreign rows


def _follow_the_output(j: Journey, command: str) -> list[str]:
    """Run ``command``; if it fails, run what its output tells the operator to run, then ``command``
    again, which must then succeed. Returns the commands run, in order."""
    ran = [command]
    first = _run(j, command)
    if first.code == 0:
        return ran
    told = [c for c in SUGGESTED.findall(first.stdout + "\n" + first.stderr)
            if c.split() != command.split()]
    assert told, (f"`{command}` failed without telling the operator which command to run next "
                  f"(e.g. `doc-migrate prune --foreign`)\n{first.explain()}")
    fix = told[0].strip()
    ran.append(fix)
    _expect(_run(j, fix, answer_y="--yes" not in fix.split()), 0)
    ran.append(command)
    _expect(_run(j, command), 0)
    return ran


def test_a_second_manifest_in_the_same_home() -> None:
    """`make run` then the real-formats manifest in the same home: the operator ends with a passing
    validate of the real-formats manifest by following only what the output says."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip("needs ../shared/corpus (examples/shared-real-formats.yaml), absent here")
    j = Journey("foreign")
    try:
        _expect(j.run("make run"), 0)
        ran = _follow_the_output(j, f"doc-migrate {REAL_FORMATS} full")
        ran += _follow_the_output(j, f"doc-migrate {REAL_FORMATS} validate")
        final = _expect(_run(j, f"doc-migrate {REAL_FORMATS} validate --json"), 0)
        assert final.last_json()["passed"] is True, (ran, final.explain())
    finally:
        j.close()


# --------------------------------------------------------------------------- (b) (c) (e)


def test_tamper_validate_repair(loaded: Journey) -> None:
    """A row edited by hand: validate exits 3, `validate --repair --yes` repairs, validate passes."""
    tamper_a_row(loaded)
    _expect(_run(loaded, "doc-migrate validate"), 3)
    _expect(_run(loaded, "doc-migrate validate --repair --yes"), 0)
    _expect(_run(loaded, "doc-migrate validate"), 0)


def test_rollback_then_status(loaded: Journey) -> None:
    """`rollback <key> --yes` on a partition loaded once leaves it not loaded, as status shows."""
    before = loaded.status()
    key = loaded.value("key")
    _expect(_run(loaded, f"doc-migrate rollback {key} --yes"), 0)
    after = loaded.status()
    assert key not in after["partitions"], after["partitions"].get(key)
    assert after["partitions_loaded"] == before["partitions_loaded"] - 1, (before, after)
    assert after["rows"] == before["rows"] - before["partitions"][key]["rows"], (before["rows"], after["rows"])
    human = _expect(_run(loaded, "doc-migrate status"), 0)
    assert not re.search(rf"^\s+{re.escape(key)}\s", human.stdout, re.M), human.stdout


def test_dagster_job_execute_on_a_partition(loaded: Journey) -> None:
    """README's `dagster job execute ... --tags '{"dagster/partition": "<key>"}'` from the copy's root."""
    key = sorted(loaded.status()["partitions"])[-1]
    tags = json.dumps({"dagster/partition": key})
    _expect(_run(loaded, f"dagster job execute -m doc_migration -j migrate --tags '{tags}'"), 0)


# --------------------------------------------------------------------------- (d) Ctrl-C


DOC_TYPES = ["alpha", "beta", "gamma", "delta"]
FILES_PER_TYPE = 150
WORDS = ("partition ledger vector index shard embedding chunk manifest rollback replica checkpoint "
         "transaction cursor planner vacuum schema tenant quorum lease backoff").split()


def _big_corpus(root: Path) -> Path:
    """A few hundred small Markdown files in 4 doc types and a manifest with 4 shards (16 partitions)."""
    rng = random.Random(7)
    for doc_type in DOC_TYPES:
        folder = root / "corpus" / doc_type
        folder.mkdir(parents=True)
        for n in range(FILES_PER_TYPE):
            sections = "\n\n".join(
                f"## Section {s}\n\n" + " ".join(rng.choice(WORDS) for _ in range(160)) for s in range(4))
            (folder / f"page_{n:04d}.md").write_text(f"# {doc_type} page {n}\n\n{sections}\n", encoding="utf-8")
    manifest = root / "big.yaml"
    manifest.write_text('shards: 4\nsources:\n  - source_name: "{doc_type}-docs"\n    doc_type: "{folder}"\n'
                        '    path: corpus\n    include: ["*/*.md"]\n', encoding="utf-8")
    return manifest


def _committed_partitions(j: Journey) -> int:
    """Partitions committed so far, read from the ledger while a run holds the embedded server."""
    result = j.sql("SELECT * FROM doc_migration.partition_state")
    return int(result.stdout.strip() or 0) if result.code == 0 else 0


def test_ctrl_c_then_resume() -> None:
    """Ctrl-C after the first partition commits: exit 130; the re-run exits 0 with the rows of an
    uninterrupted run."""
    j = Journey("interrupt")
    reference = Journey("reference")
    try:
        manifest = _big_corpus(j.parent)
        command = f"doc-migrate --sources {manifest} full --all-partitions"
        # The home's database and schema exist before the poller connects: the poller must not race
        # the run to create them (two first uses at once can collide on CREATE DATABASE).
        j.status(f"--sources {manifest}")
        # Each load waits 2 s before its commit (a failpoint, as in the resume tests): loads of this
        # small corpus are otherwise over before the poller has seen the first one commit.
        proc = subprocess.Popen(["bash", "-c", f"{ACTIVATE[0]} && exec {command}"], cwd=j.repo,
                                env={**j.env, "DOC_MIGRATION_PAUSE_AT": "load-before-commit:2"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        committed = 0
        while proc.poll() is None and time.monotonic() < deadline and committed == 0:
            time.sleep(0.5)
            committed = _committed_partitions(j)
        assert proc.poll() is None, ("the run finished before a partition was seen committed: make the input "
                                     f"bigger\n{proc.communicate()[1][-3000:]}")
        assert committed, "no partition committed within 300 s"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole foreground group
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, f"exit {proc.returncode} after Ctrl-C\n{out[-2000:]}\n{err[-3000:]}"
        partial = j.status(f"--sources {manifest}")
        assert 1 <= partial["partitions_loaded"] < len(DOC_TYPES) * 4, partial["partitions_loaded"]

        _expect(_run(j, command), 0)
        _expect(_run(reference, f"doc-migrate --sources {manifest} full"), 0)
        resumed, uninterrupted = j.status(f"--sources {manifest}"), reference.status(f"--sources {manifest}")
        assert resumed["rows"] == uninterrupted["rows"] > 0, (resumed["rows"], uninterrupted["rows"])
        assert resumed["documents_loaded"] == uninterrupted["documents_loaded"] == len(DOC_TYPES) * FILES_PER_TYPE
        assert resumed["partitions_loaded"] == uninterrupted["partitions_loaded"] == len(DOC_TYPES) * 4
        # Checked last so that the resume is checked even while Ctrl-C still prints one.
        assert TRACEBACK not in err, f"Ctrl-C printed a stack trace:\n{err[-4000:]}"
    finally:
        j.close()
        reference.close()
