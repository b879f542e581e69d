"""docs/*.md's shell blocks, every line that runs, as written: operations.md first (bootstrap,
operations, rollback, repair, recovery), then the other pages, in one fresh copy and home, with the
README's set-up (``. .venv/bin/activate``) done as a reader of the README has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .docs import Block, Command, all_blocks, readme_setup
from .runner import Journey
from .steps import run_documented

pytestmark = pytest.mark.journey

STEPS: list[tuple[Block, Command]] = [(b, c) for b in all_blocks() if b.doc != "README.md" for c in b.commands
                                      if c.not_run is None]


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    j = Journey("docs")
    yield j
    j.close()


@pytest.mark.parametrize(("block", "cmd"), STEPS, ids=[f"{c.where} {c.text[:60]}" for _, c in STEPS])
def test_doc_command(journey: Journey, block: Block, cmd: Command) -> None:
    run_documented(journey, block, cmd, prelude=readme_setup())
