"""JSON and YAML that is neither an OpenAPI spec nor a doc-server record, as a structured text document.

JSON Schemas, Anchor IDLs and configuration files are documentation people search ("which
accounts does ``initialize`` take?"), so they are loaded rather than refused: one document per
file, parsed with the same bounded loaders as OpenAPI (depth, YAML aliases) so hostile input is
refused before anything recursive runs (YAML that merely fails to parse, such as a
multi-document stream, is still loaded as its text, with ``yaml_error`` in the metadata). A JSON document is pretty-printed (2-space indent, keys
in file order); a YAML document keeps its text as written, since its comments are often the
documentation. A top-level mapping becomes one block per key, headed by that key, so chunks
follow the document's structure; the normal text chunker splits any block that is too big.
Metadata records ``json_kind`` (``json-schema``, ``anchor-idl`` or ``json``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import (
    Block,
    ParseContext,
    ParsedDocument,
    QuarantineError,
    decode_text_file,
    encoding_metadata,
)
from .openapi import load_json_bounded, load_yaml_bounded
from .registry import json_kind

_MAX_TITLE = 200
# A YAML top-level key at column 0 (``key:`` / ``"key":``), where a block per key starts.
_YAML_TOP_KEY = re.compile(r"""^(?!#|-|\s)(["']?)([^"'\n:#]+)\1[ \t]*:(?:[ \t]|$)""", re.M)


def _title(value: Any, ctx: ParseContext) -> str:
    """A schema's ``title``, an IDL's ``name`` (or ``metadata.name``), else the file name."""
    if isinstance(value, dict):
        for key in ("title", "name"):
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key]).strip()[:_MAX_TITLE]
        meta = value.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"].strip():
            return str(meta["name"]).strip()[:_MAX_TITLE]
    return ctx.rel_path.rsplit("/", 1)[-1][:_MAX_TITLE]


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _json_blocks(value: Any) -> list[Block]:
    if isinstance(value, dict) and value:
        return [Block(f"{json.dumps(str(k), ensure_ascii=False)}: {_dump(v)}", (str(k),)) for k, v in value.items()]
    return [Block(_dump(value))]


def _yaml_blocks(text: str) -> list[Block]:
    """Cut the YAML source at its column-0 keys; text before the first key (comments) leads."""
    starts = [(m.start(), m.group(2).strip()) for m in _YAML_TOP_KEY.finditer(text)]
    if len(starts) < 2:
        return [Block(text.strip("\n"))]
    blocks: list[Block] = []
    if text[: starts[0][0]].strip():
        blocks.append(Block(text[: starts[0][0]].strip("\n")))
    for i, (pos, key) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        piece = text[pos:end].strip("\n")
        if piece.strip():
            blocks.append(Block(piece, (key,)))
    return blocks


def _parse(data: bytes, ctx: ParseContext, yaml_source: bool) -> list[ParsedDocument]:
    text, encoding = decode_text_file(data)
    lim = ctx.limits
    yaml_error: str | None = None
    value: Any
    if yaml_source:
        try:
            value = load_yaml_bounded(text, lim.max_yaml_aliases, lim.max_json_depth)
        except QuarantineError as exc:
            if not exc.reason.startswith("invalid YAML"):  # depth and alias bombs stay refused
                raise
            # Multi-document streams and small syntax slips are still readable text.
            value, yaml_error = text, exc.reason[:300]
    else:
        value = load_json_bounded(text, lim.max_json_depth)
    if value is None or value == {} or value == []:
        raise QuarantineError("empty document: nothing but an empty value", "remove the file or exclude it")
    blocks = _yaml_blocks(text) if yaml_source else _json_blocks(value)
    blocks = [b for b in blocks if b.text.strip()]
    if not blocks:
        raise QuarantineError("empty file", "the file holds no text")
    title = _title(value, ctx)
    fmt = "yaml-text" if yaml_source else "json-text"
    metadata: dict[str, Any] = {"format": fmt, "json_kind": json_kind(value), "title": title,
                                **encoding_metadata(encoding)}
    if yaml_error:
        metadata["yaml_error"] = yaml_error
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """A JSON file as one pretty-printed structured text document."""
    return _parse(data, ctx, yaml_source=False)


def parse_yaml(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """A YAML file (validated by the bounded loader) as one text document, comments kept."""
    return _parse(data, ctx, yaml_source=True)
