"""Meta-test: every shell block of README.md and docs/*.md is run by the journeys or marked with a
reason; no line is skipped silently, and the markers themselves are well-formed."""

from __future__ import annotations

import pytest

from .docs import (
    PLACEHOLDERS,
    SERVER_COMMAND,
    UNDOCUMENTED_PLACEHOLDER,
    Block,
    all_blocks,
    parse_doc,
)
from .steps import GIVENS

pytestmark = pytest.mark.journey

BLOCKS = all_blocks()


def test_the_docs_have_shell_blocks() -> None:
    docs = {b.doc for b in BLOCKS}
    assert "README.md" in docs and "docs/operations.md" in docs, docs


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.doc}:{b.start}" for b in BLOCKS])
def test_every_line_is_run_or_marked_with_a_reason(block: Block) -> None:
    assert not block.problems, f"{block.doc}:{block.start}: {block.problems}"
    assert block.commands, f"{block.doc}:{block.start}: an empty {block.language} block"
    unknown = [g for g in block.givens if g not in GIVENS]
    assert not unknown, f"{block.doc}:{block.start}: unknown `given` state(s) {unknown}; known: {sorted(GIVENS)}"
    for cmd in block.commands:
        if cmd.not_run is not None:
            assert cmd.not_run.strip(), f"{cmd.where}: `{cmd.text}` is not run without a reason"
            continue
        if SERVER_COMMAND.match(cmd.text):
            assert cmd.server, (f"{cmd.where}: `{cmd.text}` serves until stopped; mark it "
                                "`<!-- journey: server -->` (or not run, with a reason)")
        rest = cmd.text
        for pattern in PLACEHOLDERS.values():
            rest = pattern.sub("", rest)
        leftover = UNDOCUMENTED_PLACEHOLDER.findall(rest)
        assert not leftover, (f"{cmd.where}: `{cmd.text}` runs but contains {leftover}, which is not a "
                              f"placeholder the journey knows ({sorted(PLACEHOLDERS)}); mark it not run or fix it")


def test_markers_are_understood(tmp_path: object) -> None:
    """Self-test of the marker grammar on a made-up page."""
    from pathlib import Path

    root = Path(str(tmp_path))
    page = root / "page.md"
    page.write_text(
        "<!-- journey: not run `make test` — it is the suite itself -->\n"
        "<!-- journey: server `dagster dev -m x` -->\n"
        "```bash\nmake run   # first\nmake test\n. .venv/bin/activate\ndagster dev -m x\n"
        "doc-migrate validate   # exit 3: broken\ndoc-migrate rollback --run <run_id> \\\n  --yes\n```\n\n"
        "<!-- journey: not run: needs a cluster -->\n```sh\nkubectl get pods\n```\n\n"
        "<!-- journey: frobnicate -->\n```bash\nls\n```\n", encoding="utf-8")
    first, second, third = parse_doc(page, root)
    by_text = {" ".join(c.text.split()): c for c in first.commands}
    assert by_text["make test"].not_run == "it is the suite itself" and by_text["make run"].not_run is None
    assert by_text["dagster dev -m x"].server and by_text["dagster dev -m x"].setup == (". .venv/bin/activate",)
    assert by_text["doc-migrate validate"].expect == 3 and by_text["make run"].expect == 0
    assert by_text["doc-migrate rollback --run <run_id> --yes"].placeholders == ["run_id"]
    assert [c.not_run for c in second.commands] == ["needs a cluster"]
    assert third.problems, "an unknown marker must be reported"


def test_not_run_lines_are_listed() -> None:
    """The lines the journeys do not run, with the reasons the docs give (shown with -rP / -s)."""
    skipped = [f"{c.where}: {c.text[:70]} -- {c.not_run}" for b in BLOCKS for c in b.commands if c.not_run]
    print("\n".join(skipped))
    assert all(" -- " in s and not s.endswith(" -- ") for s in skipped)
