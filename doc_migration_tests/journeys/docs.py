"""The shell commands of README.md and docs/*.md, with the journey markers that say how to run them.

A marker is an HTML comment on the line(s) right above a fence (invisible once rendered):

* ``<!-- journey: not run — REASON -->``: no line of the block runs (REASON must say why).
* ``<!-- journey: not run `CMD` — REASON -->``: only the line whose command is exactly CMD.
* ``<!-- journey: server -->`` / ``<!-- journey: server `CMD` -->``: the block's (or that line's)
  long-running server is started, must answer HTTP on its port, and is stopped.
* ``<!-- journey: given a tampered row -->``: a state the block's prose assumes, set up first
  (the names are the keys of ``GIVENS`` in test_doc_commands.py).
* ``<!-- journey: answers y to `CMD` -->``: CMD asks for confirmation; it runs on a terminal and
  the operator answers ``y``.

A trailing ``# exit N: ...`` comment on a line means exit code N is expected (otherwise 0). Only
documented placeholders are substituted (``PLACEHOLDERS``); any other ``<...>`` or ``...`` in a
line that runs is an error of the docs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..docblocks import Fence, join_continuations, split_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "console", "shell", "shell-session", "zsh"}
# Docs after the README: bootstrap and operations first, the reference pages after.
DOC_ORDER = ["operations.md", "troubleshooting.md", "security.md", "kubernetes.md", "benchmarks.md"]
MARKER = re.compile(r"^\s*<!--\s*journey:\s*(?P<body>.*?)\s*-->\s*$")
DIRECTIVE = re.compile(
    r"^(?P<kind>not run|server|given|answers y to)"
    r"(?:\s+`(?P<cmd>[^`]+)`)?"
    r"(?:\s*(?:—|–|-|:)?\s*(?P<rest>.*))?$")
EXIT_COMMENT = re.compile(r"^exit\s+(\d+)\s*:")
# Commands that serve until stopped: running them as ordinary lines would hang the suite.
SERVER_COMMAND = re.compile(r"^(?:\S*/)?(?:dagster dev|dg dev|dagster-webserver|dagster-daemon run|"
                            r"dagster api grpc|dagster code-server start)\b")
# Documented placeholders -> the name of the real value the journey substitutes.
PLACEHOLDERS: dict[str, re.Pattern[str]] = {
    "run_id": re.compile(r"<run[_ ]id>|\b[0-9a-f]{8}-(?:\.\.\.|…)"),
    "key": re.compile(r"<key>|<partition(?:[_ ]key)?>"),
}
UNDOCUMENTED_PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>]*>|\.\.\.|…")
# Commands that read ../shared/corpus by default, without naming it.
READS_SHARED = {"make fidelity"}
ENV_SETUP = re.compile(r"^(?:\.|source|export|cd)\s")


@dataclass(frozen=True)
class Directive:
    kind: str  # "not run", "server", "given", "answers y to"
    command: str | None  # the line it applies to, None for the whole block
    text: str  # the reason (not run) or the state's name (given)


@dataclass(frozen=True)
class Command:
    """One command line of a shell block, and how the journey runs it."""

    doc: str  # "README.md", "docs/operations.md"
    line: int
    block: int  # line of the block's opening fence
    text: str  # the command as written (continuations joined), without its trailing comment
    comment: str
    expect: int  # expected exit code
    not_run: str | None  # the reason it does not run
    server: bool
    answers_y: bool
    setup: tuple[str, ...]  # earlier lines of the block that set up the shell (., source, export, cd)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def needs_shared(self) -> bool:
        """Whether the command reads ../shared (directly or through an examples/ manifest)."""
        if "../shared" in self.text or self.text.strip() in READS_SHARED:
            return True
        for token in _tokens(self.text):
            path = REPO_ROOT / token
            if token.endswith((".yaml", ".yml")) and path.is_file() and "shared/corpus" in path.read_text():
                return True
        return False

    @property
    def placeholders(self) -> list[str]:
        return [name for name, pattern in PLACEHOLDERS.items() if pattern.search(self.text)]


@dataclass(frozen=True)
class Block:
    doc: str
    start: int
    language: str
    directives: tuple[Directive, ...]
    commands: tuple[Command, ...]
    problems: tuple[str, ...] = field(default=())  # marker errors, reported by the meta-test

    @property
    def givens(self) -> list[str]:
        return [d.text for d in self.directives if d.kind == "given"]


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def split_comment(line: str) -> tuple[str, str]:
    """(command, trailing comment) of one shell line; a ``#`` inside quotes is not a comment."""
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _directives(fence: Fence) -> tuple[list[Directive], list[str]]:
    found: list[Directive] = []
    problems: list[str] = []
    for above in reversed(fence.above):
        m = MARKER.match(above)
        if not m:
            break
        d = DIRECTIVE.match(m.group("body"))
        if not d:
            problems.append(f"unknown journey marker {m.group('body')!r}")
            continue
        found.append(Directive(d.group("kind"), d.group("cmd"), (d.group("rest") or "").strip()))
    return list(reversed(found)), problems


def _norm(text: str) -> str:
    return " ".join(text.split())


def parse_doc(path: Path, root: Path = REPO_ROOT) -> list[Block]:
    """The shell blocks of one document with their commands and markers."""
    fences, _ = split_markdown(path.read_text(encoding="utf-8"))
    doc = str(path.relative_to(root))
    blocks = []
    for fence in fences:
        if fence.language not in SHELL_LANGUAGES:
            continue
        directives, problems = _directives(fence)
        whole_not_run = next((d.text for d in directives if d.kind == "not run" and d.command is None), None)
        whole_server = any(d.kind == "server" and d.command is None for d in directives)
        by_line = {(d.kind, _norm(d.command)): d for d in directives if d.command}
        commands: list[Command] = []
        setup: list[str] = []
        for number, raw in join_continuations(list(fence.body)):
            text, comment = split_comment(raw.strip())
            if fence.language == "console" and text.startswith("$ "):
                text = text[2:]
            if not text:
                continue
            exit_comment = EXIT_COMMENT.match(comment)
            line_not_run = by_line.get(("not run", _norm(text)))
            commands.append(Command(
                doc=doc, line=number, block=fence.start, text=text, comment=comment,
                expect=int(exit_comment.group(1)) if exit_comment else 0,
                not_run=whole_not_run if whole_not_run is not None else (line_not_run.text if line_not_run else None),
                server=whole_server or ("server", _norm(text)) in by_line,
                answers_y=("answers y to", _norm(text)) in by_line,
                setup=tuple(setup)))
            if ENV_SETUP.match(text):
                setup.append(text)
        texts = {_norm(c.text) for c in commands}
        for d in directives:
            if d.command and _norm(d.command) not in texts:
                problems.append(f"marker `{d.command}` names no line of the block")
            if d.kind == "not run" and not d.text:
                problems.append("a `not run` marker must give its reason")
            if d.kind == "given" and not d.text:
                problems.append("a `given` marker must name the state")
        blocks.append(Block(doc, fence.start, fence.language, tuple(directives), tuple(commands), tuple(problems)))
    return blocks


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """README.md, then docs/*.md in DOC_ORDER (pages it does not list last, alphabetically)."""
    pages = sorted((root / "docs").glob("*.md"), key=lambda p: (
        DOC_ORDER.index(p.name) if p.name in DOC_ORDER else len(DOC_ORDER), p.name))
    return [root / "README.md", *pages]


def all_blocks(root: Path = REPO_ROOT) -> list[Block]:
    return [b for path in documents(root) for b in parse_doc(path, root)]


def readme_setup(root: Path = REPO_ROOT) -> tuple[str, ...]:
    """The README's shell set-up lines (``. .venv/bin/activate``): docs/*.md assume them."""
    return tuple(c.text for b in parse_doc(root / "README.md", root) for c in b.commands
                 if ENV_SETUP.match(c.text) and c.not_run is None)
