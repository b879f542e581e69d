"""Plain text (RFCs, READMEs): paragraphs become blocks; form feeds are page breaks."""

from __future__ import annotations

import re

from .base import (
    Block,
    ParseContext,
    ParsedDocument,
    QuarantineError,
    decode_text_file,
    encoding_metadata,
)

_PARA_SPLIT = re.compile(r"\n[ \t]*\n+|\f")


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    text, encoding = decode_text_file(data)
    return [text_document(text, ctx.rel_path, {"format": "text", **encoding_metadata(encoding)})]


def text_document(text: str, path: str, metadata: dict[str, object]) -> ParsedDocument:
    """Shared by formats whose body is unstructured text (doc-server records of unknown type)."""
    blocks = [Block(p.strip("\n")) for p in _PARA_SPLIT.split(text) if p.strip()]
    if not blocks:
        raise QuarantineError("empty file", "the file holds no text")
    title = next((line.strip() for line in text.splitlines() if line.strip()), None)
    meta = dict(metadata)
    if title:
        meta.setdefault("title", title[:200])
    return ParsedDocument(path=path, blocks=blocks, title=title[:200] if title else None, metadata=meta)
