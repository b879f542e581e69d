"""Running one documented command inside a journey, and the states (``given``) the docs assume."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .docs import Block, Command, _tokens
from .runner import SHARED_CORPUS, TRACEBACK, Journey, Result


def tamper_a_row(journey: Journey) -> None:
    """What a stray manual UPDATE does to a loaded row: validation must notice it. The database is
    migrated first: the repair section is about a loaded database (an earlier section of the same
    page may have rolled everything back)."""
    migrated = journey.doc_migrate("full --yes")
    assert migrated.code == 0, f"could not migrate before tampering\n{migrated.explain()}"
    result = journey.sql("UPDATE documents SET content = content || ' (edited by hand)' "
                         "WHERE id = (SELECT id FROM documents ORDER BY doc_type, doc_path LIMIT 1)")
    assert result.code == 0 and result.stdout.strip().endswith("1"), result.explain()


# `<!-- journey: given NAME -->` -> how the journey sets that state up before the block runs.
GIVENS: dict[str, Callable[[Journey], None]] = {
    "a tampered row": tamper_a_row,
}


def run_documented(journey: Journey, block: Block, cmd: Command, prelude: tuple[str, ...] = ()) -> Result:
    """Run one documented line as written (placeholders substituted) and check exit code and output."""
    if cmd.needs_shared and not SHARED_CORPUS.is_dir():
        pytest.skip(f"{cmd.where}: `{cmd.text}` reads ../shared/corpus, which is absent here")
    first = next(c for c in block.commands if c.not_run is None)
    if cmd is first:
        for name in block.givens:
            GIVENS[name](journey)
    text = journey.substitute(cmd)
    setup = (*prelude, *cmd.setup)
    if cmd.server:
        result = journey.serve(text, setup=setup)
        assert result.code == 0, f"{cmd.where}: server did not come up: {result.stderr}\n{result.stdout[-4000:]}"
        return result
    result = journey.run(text, setup=setup, answer_y=cmd.answers_y)
    where = f"{cmd.where}: `{cmd.text}`" + (f" (ran as `{text}`)" if text != cmd.text else "")
    assert result.code == cmd.expect, f"{where} should exit {cmd.expect}\n{result.explain()}"
    check_output(cmd, text, result)
    return result


def check_output(cmd: Command, text: str, result: Result) -> None:
    """The key output of what the docs promise: no stack traces, JSON on the last line of ``--json``."""
    tokens = _tokens(text)
    if tokens == ["make", "run"]:  # "prints the summary"
        assert "documents loaded" in result.stdout, f"{cmd.where}: no run summary\n{result.explain()}"
    if "doc-migrate" not in tokens:
        return
    assert TRACEBACK not in result.stderr, f"{cmd.where}: a stack trace on stderr\n{result.explain()}"
    if "--json" in tokens and result.code == 0 and "--help" not in tokens:
        payload = result.last_json()
        command = next((t for t in tokens[tokens.index("doc-migrate") + 1:] if t in {
            "full", "plan", "validate", "rollback", "history", "status", "config"}), None)
        if command == "full" and "--dry-run" not in tokens:
            assert payload.get("failed_partitions") == [], f"{cmd.where}: failed partitions\n{result.explain()}"
        if command == "status":
            assert isinstance(payload.get("rows"), int), f"{cmd.where}: no `rows` in status --json"
        if command == "history":
            assert isinstance(payload.get("events"), list), f"{cmd.where}: no `events` in history --json"
        if command == "validate":
            assert payload.get("passed") is (cmd.expect == 0), f"{cmd.where}: `passed` disagrees with the exit code"
