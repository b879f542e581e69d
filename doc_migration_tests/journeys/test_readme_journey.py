"""README.md's shell blocks, every line as written, in document order, in one fresh copy and home
(``make run`` first, as on a clone). The blocks are one reader's shell: the README's set-up line
(``. .venv/bin/activate``) holds for the blocks after it too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .docs import REPO_ROOT, Block, Command, parse_doc, readme_setup
from .runner import Journey
from .steps import run_documented

pytestmark = pytest.mark.journey

STEPS: list[tuple[Block, Command]] = [(b, c) for b in parse_doc(REPO_ROOT / "README.md") for c in b.commands
                                      if c.not_run is None]


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    j = Journey("readme")
    yield j
    j.close()


@pytest.mark.parametrize(("block", "cmd"), STEPS, ids=[f"{c.where} {c.text[:60]}" for _, c in STEPS])
def test_readme_command(journey: Journey, block: Block, cmd: Command) -> None:
    run_documented(journey, block, cmd, prelude=readme_setup() if block.start > _first_setup_block() else ())


def _first_setup_block() -> int:
    """Line of the first block that activates the venv: blocks after it run in the activated shell."""
    return next((b.start for b, c in STEPS if c.text in readme_setup()), 10**9)
