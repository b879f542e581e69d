"""Issue 9, part 1: hostile input files are quarantined for the right reason, within bounded time
and memory, and do not stop the rest of the corpus from loading."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from doc_migration_tests.security.support import HOSTILE, MiB, run_cli_measured, write_hostile_corpus

RUN_SECONDS = 120
PEAK_RSS = 1536 * MiB


@pytest.fixture(scope="module")
def hostile_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    return write_hostile_corpus(base / "files", base / "outside")


@pytest.mark.parametrize("parallel", [1, 2])
def test_hostile_files_are_quarantined_within_bounds(parallel: int, hostile_manifest: Path, database_url: str,
                                                      tmp_path: Path) -> None:
    result = run_cli_measured(["--sources", str(hostile_manifest), "full", "--json", "--parallel", str(parallel)],
                              database_url=database_url, home=tmp_path, timeout=RUN_SECONDS * 1.5,
                              kill_rss=2 * PEAK_RSS)
    print(f"--parallel {parallel}: {result.seconds:.1f} s, peak RSS of the process tree {result.peak_rss / MiB:.0f} MiB")
    assert result.killed is None, f"watchdog: {result.killed}; stderr:\n{result.stderr[-3000:]}"
    assert result.code == 0, result.stderr[-3000:]
    assert result.seconds < RUN_SECONDS, f"the run took {result.seconds:.1f} s"
    assert result.peak_rss < PEAK_RSS, f"peak RSS of the process tree {result.peak_rss / MiB:.0f} MiB"
    summary = result.json
    assert summary["failed_partitions"] == [], summary["failures"]

    quarantined = {q["path"]: q for q in summary["quarantined_files"] if q["doc_type"] == "hostile"}
    problems = []
    for h in HOSTILE:
        q = quarantined.pop(h.name, None)
        if h.expect == "load":
            if q is not None:
                problems.append(f"{h.name}: expected to load, quarantined: {q['reason']}")
            continue
        if q is None:
            problems.append(f"{h.name}: not quarantined")
            continue
        missing = [s for s in h.reason if s.lower() not in q["reason"].lower()]
        if missing or (h.stage and q["stage"] != h.stage):
            problems.append(f"{h.name}: wrong reason/stage {q['stage']}: {q['reason']!r} (expected {h.reason})")
    assert not problems, "\n".join(problems)
    assert not quarantined, f"controls quarantined: {quarantined}"
    others = [q for q in summary["quarantined_files"] if q["doc_type"] != "hostile"]
    assert others == [], f"sample corpus files quarantined: {others}"

    with psycopg.connect(database_url) as conn:
        by_type: dict[str, int] = dict(conn.execute("SELECT doc_type, count(DISTINCT metadata->>'source_file') FROM documents "
                                    "GROUP BY doc_type").fetchall())
        hostile_files = {r[0] for r in conn.execute(
            "SELECT DISTINCT metadata->>'source_file' FROM documents WHERE doc_type = 'hostile'")}
        html = conn.execute("SELECT string_agg(content, ' ') FROM documents WHERE doc_type = 'hostile' AND "
                            "metadata->>'source_file' = 'nested-divs.html'").fetchone()
        nb = conn.execute("SELECT string_agg(content, ' '), max(length(content)) FROM documents WHERE "
                          "doc_type = 'hostile' AND metadata->>'source_file' = 'huge-output.ipynb'").fetchone()
        leaked = conn.execute("SELECT count(*) FROM documents WHERE content LIKE '%root:x:0:0%'").fetchone()
    # The whole sample corpus loaded beside the hostile files (13 files in 7 doc types).
    assert {"rust", "talos", "cilium", "birdeye", "jupiter", "ietf_rfc", "jupyter"} <= set(by_type)
    assert sum(v for k, v in by_type.items() if k != "hostile") == 13
    assert hostile_files == {"fine.md", "fine.pdf", "nested-divs.html", "huge-output.ipynb"}
    assert html is not None and "Text before the nesting survives" in html[0] and "after the nesting" in html[0]
    assert nb is not None and "latency histogram" in nb[0] and nb[1] < 20_000, "the 30 MB output is not indexed"
    assert leaked is not None and leaked[0] == 0, "the symlink target outside the source folder was read"
