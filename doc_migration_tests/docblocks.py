"""Fenced code blocks of the Markdown docs, shared by test_docs.py (which checks every documented
``doc-migrate`` invocation) and the journey tests (which run the shell blocks), so that both read
the docs the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Fence:
    """One fenced block: where it opens, its info string, its body and the lines just above it."""

    start: int  # line number of the opening fence
    info: str  # e.g. "bash", "" for a bare fence
    body: tuple[tuple[int, str], ...]  # (line number, raw line)
    above: tuple[str, ...]  # the document's lines before the fence, nearest last

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


def split_markdown(markdown: str) -> tuple[list[Fence], list[tuple[int, str]]]:
    """The closed fenced blocks and the prose lines (everything outside a fence) of a document.

    An unclosed fence swallows the rest of the document, as CommonMark does, and is not returned.
    """
    lines = markdown.splitlines()
    fences: list[Fence] = []
    prose: list[tuple[int, str]] = []
    fence: str | None = None
    info = ""
    start = 0
    body: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        marker = FENCE.match(stripped)
        if fence is None and marker:
            fence, info, start, body = marker.group(1), marker.group(2).strip(), number, []
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fences.append(Fence(start, info, tuple(body), tuple(lines[: start - 1])))
                fence = None
            else:
                body.append((number, line))
            continue
        prose.append((number, line))
    return fences, prose


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Shell lines ending in a backslash continue on the next line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        out.append((number, line))
    if pending is not None:
        out.append(pending)
    return out
