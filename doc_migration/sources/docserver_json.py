"""The doc-server's exported JSON records: ``{"url", "content", "item_type", "module_path", "extracted_at"}``.

The record's content keeps the original format of the page it came from (reStructuredText for
Cilium, Markdown for Jupiter); it is parsed with that format's parser when the original path says
which, so headings and code blocks survive, and the record's fields become metadata.
"""

from __future__ import annotations

import json
from typing import Any

from .base import ParseContext, ParsedDocument, QuarantineError, decode_text
from .registry import EXTENSIONS, get_parser
from .text import text_document

RECORD_FIELDS = ("url", "item_type", "module_path", "extracted_at")
STRUCTURED = {"markdown", "mdx", "rst", "html"}


def load_json(data: bytes, what: str = "JSON") -> Any:
    """json.loads with quarantine-friendly errors (line/column, depth bombs)."""
    text = decode_text(data)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuarantineError(
            f"invalid {what}: {exc.msg} at line {exc.lineno} column {exc.colno}",
            "fix the syntax or exclude the file",
        ) from None
    except RecursionError:
        raise QuarantineError(f"{what} nested too deeply", "flatten the document or exclude it") from None


def inner_format(record: dict[str, Any]) -> str | None:
    for key in ("module_path", "url"):
        value = record.get(key)
        if isinstance(value, str):
            lower = value.lower().split("?", 1)[0]
            for ext, fmt in EXTENSIONS.items():
                if lower.endswith(ext):
                    return fmt
    return None


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """One record (an object with ``content``), or a list of them: one document per record.

    In a list, records whose content is empty are skipped (an export of an empty page is not
    a reason to lose the others); each record's path is ``<file>#<index>`` so ids stay stable.
    """
    value = load_json(data)
    if isinstance(value, list) and value and all(isinstance(v, dict) and "content" in v for v in value):
        docs: list[ParsedDocument] = []
        for i, record in enumerate(value):
            content = record.get("content")
            if isinstance(content, str) and not content.strip():
                continue
            docs.extend(_parse_record(record, f"{ctx.rel_path}#{i}", ctx))
        if not docs:
            raise QuarantineError("empty records: every 'content' is empty", "re-export the pages or delete the file")
        return docs
    if not isinstance(value, dict) or "content" not in value:
        raise QuarantineError(
            "not a doc-server record: no 'content' field",
            'expected {"url", "content", "item_type", "module_path", "extracted_at"}; set the source format explicitly',
        )
    return _parse_record(value, ctx.rel_path, ctx)


def _parse_record(record: dict[str, Any], path: str, ctx: ParseContext) -> list[ParsedDocument]:
    content = record.get("content")
    if not isinstance(content, str):
        raise QuarantineError("not a doc-server record: 'content' is not a string", "fix the export")
    if not content.strip():
        raise QuarantineError("empty record: 'content' is empty", "re-export the page or delete the record")
    metadata: dict[str, Any] = {k: record[k] for k in RECORD_FIELDS if isinstance(record.get(k), str | int | float)}
    fmt = inner_format(record)
    metadata["format"] = f"docserver-json/{fmt or 'text'}"
    if fmt in STRUCTURED:
        inner_ctx = ParseContext(path, ctx.doc_type, ctx.source_name, fmt or "text", ctx.options, ctx.limits)
        docs = get_parser(fmt or "text")(content.encode("utf-8"), inner_ctx)
        for doc in docs:
            doc.path = path if len(docs) == 1 else doc.path
            doc.metadata = {**doc.metadata, **metadata}
        return docs
    return [text_document(content.replace("\x00", ""), path, metadata)]
