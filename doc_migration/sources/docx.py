"""Word ``.docx`` documents: heading styles become sections, tables become rows of cells.

Blocks are built with the Markdown parser's :class:`~.markdown.BlockBuilder`, so a Word file is
chunked exactly like a Markdown file with ``#`` headings (``Title`` is the outermost section,
``#``; ``Heading n`` nests under it one level down, or is level n in a file without a Title) and body text is never re-read as Markdown
(a paragraph starting with ``#`` or ``1.`` stays a paragraph). Tables become one ``table`` block
each, a line per row with the cells joined by `` | ``. The ZIP container is checked before
python-docx opens it, so a corrupt file, a legacy ``.doc`` or a ZIP bomb is refused with a reason.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from .base import Block, ParseContext, ParsedDocument, QuarantineError
from .markdown import BlockBuilder

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)
_LIST_STYLE = re.compile(r"^list\s*(bullet|number)", re.I)
_MAX_HEADING = 500
_HINT = "re-save the file from Word (File > Save As > Word Document) or exclude it"


def _check_container(data: bytes, ctx: ParseContext) -> None:
    """Refuse what python-docx would choke on, with a reason naming what is wrong."""
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise QuarantineError(
            "not a .docx: an OLE file (a legacy .doc, or a password-protected document)", _HINT)
    if not data.startswith(b"PK"):
        raise QuarantineError("corrupt .docx: not a ZIP archive", _HINT)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = {i.filename for i in infos}
            expanded = sum(i.file_size for i in infos)
            bad = zf.testzip() if "word/document.xml" in names else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise QuarantineError(f"corrupt .docx: broken ZIP archive ({str(exc)[:120]})", _HINT) from None
    if "word/document.xml" not in names:
        raise QuarantineError("corrupt .docx: the ZIP archive holds no word/document.xml", _HINT)
    budget = ctx.limits.max_parse_memory_mb * 1024 * 1024 // 2
    if expanded > budget:
        raise QuarantineError(
            f"corrupt .docx: expands to {expanded:,} bytes, over {budget:,} (ZIP bomb?)",
            "raise limits.max_parse_memory_mb only if the file is trusted")
    if bad is not None:
        raise QuarantineError(f"corrupt .docx: ZIP member '{bad[:100]}' fails its CRC check", _HINT)


def _level(style_name: str, offset: int) -> int | None:
    """Heading level of a paragraph style; ``offset`` is 1 when the document has a Title paragraph."""
    if style_name.strip().lower() == "title":
        return 1
    m = _HEADING_STYLE.match(style_name.strip())
    return min(int(m.group(1)) + offset, 6) if m else None


def _style_name(obj: Any) -> str:
    try:
        style = obj.style
    except (KeyError, ValueError, AttributeError):  # a style id the styles part does not define
        return ""
    name = getattr(style, "name", None) if style is not None else None
    return name if isinstance(name, str) else ""


def _table_text(table: Any) -> str:
    """One line per row, cells `` | ``-joined; a merged cell (same XML cell repeated) is written once."""
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """A Word document as one document whose blocks follow its heading structure."""
    _check_container(data, ctx)
    import docx  # python-docx; imported here so other formats never pay for lxml
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from lxml import etree

    try:
        document = docx.Document(io.BytesIO(data))
        items = list(document.iter_inner_content())
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile, etree.XMLSyntaxError) as exc:
        raise QuarantineError(f"corrupt .docx: {type(exc).__name__}: {str(exc)[:200]}", _HINT) from None
    styles = [_style_name(i) if not isinstance(i, Table) else "" for i in items]
    offset = 1 if any(st.strip().lower() == "title" for st in styles) else 0
    builder = BlockBuilder()
    first_heading: str | None = None
    for item, style in zip(items, styles, strict=True):
        if isinstance(item, Table):
            text = _table_text(item)
            if text:
                builder.add(text, "table")
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _level(style, offset)
        if level is not None:
            heading = " ".join(text.split())[:_MAX_HEADING]
            first_heading = first_heading or heading
            builder.heading(level, heading)
            continue
        lst = _LIST_STYLE.match(style)
        if lst:
            text = ("- " if lst.group(1).lower() == "bullet" else "1. ") + text
        builder.add(text)
    blocks: list[Block] = builder.finish()
    if not blocks:
        raise QuarantineError("empty document: the .docx holds no text", "remove the file or exclude it")
    core_title = (document.core_properties.title or "").strip()
    title: str | None = core_title[:_MAX_HEADING] or first_heading
    metadata: dict[str, Any] = {"format": "docx", "headings": builder.heading_count}
    if title:
        metadata["title"] = title
    author = (document.core_properties.author or "").strip()
    if author:
        metadata["author"] = author[:200]
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]
