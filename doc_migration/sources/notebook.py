"""Jupyter notebooks (nbformat 4, and the older 3) as one document of text and code blocks.

Markdown cells become text blocks, and their headings drive ``heading_path`` for everything that
follows, as in a markdown file. Code cells become fenced code blocks in the kernel's language.
Outputs are mostly noise for search (images, HTML, tracebacks), so only short plain-text outputs
are kept, attached to the code that produced them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .base import Block, ParseContext, ParsedDocument, QuarantineError, decode_text
from .openapi import load_json_bounded

MAX_OUTPUT_CHARS = 1000

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Inline images whose bytes live in the notebook: keep the alt text, drop the payload/reference.
_EMBEDDED_IMAGE = re.compile(r"!\[([^\]]*)\]\((?:attachment:|data:)[^)]*\)")
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]{64,}")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
# Output that is only object reprs ("<Figure size 640x480 with 1 Axes>", "[<Line2D at 0x7f..>]").
_PLACEHOLDER_REPR = re.compile(r"^[\[(]?\s*(?:<[^<>\n]*(?: at 0x[0-9a-fA-F]+|Figure size [^<>]*)>,?\s*)+[\])]?$")


def _source(value: Any) -> str:
    """nbformat stores multi-line strings either as one string or as a list of lines."""
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _clean(text: str) -> str:
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


class _Headings:
    """The heading stack of the markdown seen so far (levels 1-6); remembers a title."""

    def __init__(self) -> None:
        self.levels: list[str | None] = [None] * 6
        self.first_any: str | None = None
        self.first_h1: str | None = None

    def set(self, level: int, text: str) -> None:
        self.levels[level - 1] = text
        for i in range(level, 6):
            self.levels[i] = None
        self.first_any = self.first_any or text
        if level == 1:
            self.first_h1 = self.first_h1 or text

    @property
    def title(self) -> str | None:
        return self.first_h1 or self.first_any

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(h for h in self.levels if h)


def _markdown_blocks(text: str, headings: _Headings) -> Iterator[Block]:
    """Split a markdown cell at ATX headings (outside code fences); each piece is one block."""
    text = _DATA_URI.sub("[embedded data]", _EMBEDDED_IMAGE.sub(lambda m: f"[image: {m.group(1)}]", text))
    lines: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        elif fence is None:
            h = _ATX.match(line)
            heading = _plain_heading(h.group(2) or "") if h else ""
            if h and heading:
                if "\n".join(lines).strip():
                    yield Block("\n".join(lines).strip("\n"), headings.path)
                lines = []
                headings.set(len(h.group(1)), heading)
        lines.append(line)
    if "\n".join(lines).strip():
        yield Block("\n".join(lines).strip("\n"), headings.path)


def _plain_heading(text: str) -> str:
    """Heading text without markdown markup (badges, link targets, emphasis, code ticks)."""
    text = _MD_LINK.sub(r"\1", _MD_IMAGE.sub("", text))
    text = re.sub(r"\*\*|\*|`|<[^>]+>", "", text)
    return " ".join(text.split())


def _fence(code: str, lang: str) -> str:
    """A fence longer than any backtick run inside the code, so the block cannot end early."""
    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{code}\n{ticks}"


def _output_text(out: dict[str, Any], nbformat: int) -> str | None:
    """Plain text of one output if it is worth keeping, else None (images, HTML, errors, long)."""
    kind = out.get("output_type")
    text: str | None = None
    if kind == "stream":
        text = _source(out.get("text"))
    elif kind in ("execute_result", "display_data", "pyout"):
        if nbformat >= 4:
            data = _dict(out.get("data"))
            if any(str(k).startswith("image/") for k in data):
                return None
            text = _source(data.get("text/plain")) if "text/plain" in data else None
        else:
            if any(k in out for k in ("png", "jpeg", "svg", "gif")):
                return None
            text = _source(out.get("text")) if "text" in out else None
    if text is None:
        return None
    text = _clean(_ANSI.sub("", text)).strip("\n")
    if not text.strip() or len(text) > MAX_OUTPUT_CHARS or _PLACEHOLDER_REPR.match(text.strip()):
        return None
    if _DATA_URI.search(text):
        return None
    return text


def _cells(nb: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    nbformat = nb.get("nbformat")
    major = nbformat if isinstance(nbformat, int) else 4
    if major < 3:
        raise QuarantineError(
            f"unsupported notebook format {nbformat}", "upgrade it with `jupyter nbconvert --to notebook`"
        )
    if isinstance(nb.get("cells"), list):
        return [c for c in nb["cells"] if isinstance(c, dict)], max(major, 4)
    worksheets = nb.get("worksheets")
    if isinstance(worksheets, list):
        cells = [
            c
            for ws in worksheets
            if isinstance(ws, dict) and isinstance(ws.get("cells"), list)
            for c in ws["cells"]
            if isinstance(c, dict)
        ]
        return cells, 3
    raise QuarantineError(
        "not a Jupyter notebook", "the JSON has no 'cells' (nbformat 4) or 'worksheets' (nbformat 3) list"
    )


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """One document per notebook: markdown as text blocks, code as fenced code blocks."""
    text = decode_text(data)
    nb = load_json_bounded(text, ctx.limits.max_json_depth, "notebook JSON")
    if not isinstance(nb, dict):
        raise QuarantineError("not a Jupyter notebook", "the top level of the JSON is not an object")
    cells, nbformat = _cells(nb)
    meta = _dict(nb.get("metadata"))
    kernelspec = _dict(meta.get("kernelspec"))
    lang_info = _dict(meta.get("language_info"))
    language = str(kernelspec.get("language") or lang_info.get("name") or meta.get("language") or "").strip()
    kernel_name = kernelspec.get("name")

    headings = _Headings()
    blocks: list[Block] = []
    counts = {"code": 0, "markdown": 0, "raw": 0}
    kept_outputs = 0
    for cell in cells:
        kind = cell.get("cell_type")
        if nbformat >= 4 or kind != "code":
            src = _clean(_source(cell.get("source")))
        else:
            src = _clean(_source(cell.get("input")))
        if kind == "markdown":
            counts["markdown"] += 1
            blocks.extend(_markdown_blocks(src, headings))
        elif kind == "heading":  # nbformat 3
            counts["markdown"] += 1
            raw_level = cell.get("level")
            level = min(max(raw_level, 1), 6) if isinstance(raw_level, int) else 1
            if src.strip():
                blocks.extend(_markdown_blocks("#" * level + " " + " ".join(src.split()), headings))
        elif kind == "code":
            counts["code"] += 1
            cell_lang = language or str(cell.get("language") or "")
            parts: list[str] = []
            if src.strip():
                parts.append(_fence(src.strip("\n"), cell_lang))
            for out in _list(cell.get("outputs")):
                out_text = _output_text(out, nbformat) if isinstance(out, dict) else None
                if out_text is not None:
                    kept_outputs += 1
                    parts.append("Output:\n" + _fence(out_text, ""))
            if parts:
                blocks.append(Block("\n".join(parts), headings.path, "code"))
        elif kind == "raw":
            counts["raw"] += 1
            if src.strip():
                blocks.append(Block(src.strip("\n"), headings.path))
    if not any(b.text.strip() for b in blocks):
        raise QuarantineError("notebook has no text", "every cell is empty; remove the file or exclude it")
    metadata: dict[str, Any] = {
        "kernel_language": language or None,
        "kernel_name": str(kernel_name) if kernel_name else None,
        "cells": len(cells),
        "code_cells": counts["code"],
        "markdown_cells": counts["markdown"],
        "outputs_kept": kept_outputs,
        "nbformat": nbformat,
    }
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=headings.title, metadata=metadata)]
