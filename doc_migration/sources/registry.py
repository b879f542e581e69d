"""Format names, how they are detected, and which parser module handles each.

Parsers are imported lazily so a heavy dependency (PDF, HTML, Word) costs nothing until a file of
that format is seen, and so a worker process imports only what it needs.

Detection (issue 15) loads what a person would call a readable document and refuses only what a
person would refuse:

* A known extension decides (``.md``, ``.rst``, ``.pdf``, ``.docx``...).
* ``.json`` is decided by the document's *top-level keys*, not a byte prefix (generators sort keys,
  so ``"components"`` comes before ``"openapi"``): an ``openapi``/``swagger`` key is an OpenAPI
  spec; an object with a ``content`` field, or a list of such objects, is a doc-server export
  record; anything else (JSON Schema, Anchor IDL, other JSON) is ``json-text``: one structured text
  document per file whose metadata says ``json_kind``. JSON that does not parse is ``json-text``
  too, and that parser refuses it naming the line and column.
* ``.yaml``/``.yml`` with an ``openapi:``/``swagger:`` key at column 0 is OpenAPI, anything else
  ``yaml-text``.
* Any other file (``README``, ``NOTES``, ``tutor1.ru``) is sniffed: binary content is refused
  (``binary file (...)``), so is an SVG image (``image file (SVG)``: XML text, but a picture); a
  PDF or Word file is read as such whatever its name; text that opens with a ``# `` heading is
  Markdown, other text is ``text``. Text that does not decode is left to
  the text parser, whose refusal names the bytes.

Detection never raises anything but :class:`QuarantineError`.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from typing import Any

from .base import ParserFn, QuarantineError, decode_text, looks_binary, sniff_utf16

# format name -> "module:function"
PARSERS: dict[str, str] = {
    "markdown": "doc_migration.sources.markdown:parse",
    "mdx": "doc_migration.sources.markdown:parse_mdx",
    "text": "doc_migration.sources.text:parse",
    "docserver-json": "doc_migration.sources.docserver_json:parse",
    "rst": "doc_migration.sources.rst:parse",
    "html": "doc_migration.sources.html:parse",
    "openapi": "doc_migration.sources.openapi:parse",
    "notebook": "doc_migration.sources.notebook:parse",
    "pdf": "doc_migration.sources.pdf:parse",
    "sql-dump": "doc_migration.sources.sqldump:parse",
    "json-text": "doc_migration.sources.json_text:parse",
    "yaml-text": "doc_migration.sources.json_text:parse_yaml",
    "docx": "doc_migration.sources.docx:parse",
}

EXTENSIONS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "mdx",
    ".txt": "text",
    ".text": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".ipynb": "notebook",
    ".pdf": "pdf",
    ".sql": "sql-dump",
    ".docx": "docx",
}


@dataclass(frozen=True)
class Detection:
    """A detected format and the evidence for it (shown in logs and tests, e.g. "top-level key 'openapi'")."""

    fmt: str
    evidence: str


def json_kind(value: Any) -> str:
    """What kind of JSON/YAML document this is: ``json-schema``, ``anchor-idl`` or ``json``."""
    if isinstance(value, dict):
        if "$schema" in value or ("properties" in value and ("type" in value or "required" in value)):
            return "json-schema"
        if "instructions" in value and any(k in value for k in ("accounts", "types", "version", "metadata", "name")):
            return "anchor-idl"
    return "json"


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and "content" in value


def _detect_json(text: str) -> Detection:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
        return Detection("json-text", "not valid JSON (the JSON text parser says where)")
    if isinstance(value, dict):
        for key in ("openapi", "swagger"):
            if key in value:
                return Detection("openapi", f"top-level key '{key}'")
        if _is_record(value):
            return Detection("docserver-json", "object with a 'content' field")
    elif isinstance(value, list) and value and all(_is_record(v) for v in value):
        return Detection("docserver-json", f"list of {len(value)} objects with a 'content' field")
    return Detection("json-text", f"JSON ({json_kind(value)})")


_YAML_OPENAPI = re.compile(r"""^["']?(openapi|swagger)["']?[ \t]*:""", re.M)


def _detect_yaml(text: str) -> Detection:
    if text.lstrip("\ufeff \t\n").startswith("{"):  # JSON is YAML: flow syntax decides by its keys
        found = _detect_json(text)
        if found.fmt != "json-text":
            return found
    m = _YAML_OPENAPI.search(text)
    if m:
        return Detection("openapi", f"top-level key '{m.group(1)}:'")
    return Detection("yaml-text", "YAML without an 'openapi'/'swagger' key")


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"\x7fELF", "ELF executable"),
    (b"\x1f\x8b", "gzip archive"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office (OLE) file"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
)


def _is_docx(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "word/document.xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _sniff(rel_path: str, data: bytes) -> Detection:
    """Unknown or missing extension: binary is refused, PDF/Word read as such, text as text/Markdown."""
    name = rel_path.rsplit("/", 1)[-1]
    if data.startswith(b"%PDF-"):
        return Detection("pdf", "starts with '%PDF-'")
    if _is_docx(data):
        return Detection("docx", "ZIP archive holding word/document.xml")
    kind = next((label for magic, label in _MAGIC if data.startswith(magic)), None)
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff")) or sniff_utf16(data) is not None
    if kind is None and not utf16:
        if looks_binary(data):
            kind = "control bytes in the first 8 KiB"
        elif b"\x00" in data[:65536]:
            kind = "NUL bytes"
    if kind is not None:
        raise QuarantineError(
            f"binary file ({kind}): '{name}'",
            "not a readable document; exclude it with the source's include/exclude globs",
            stage="scan",
        )
    try:
        text = decode_text(data)
    except QuarantineError:
        return Detection("text", "not decodable as text (the text parser says why)")
    head = text.lstrip("\ufeff \t\r\n")[:2048].lower()
    if head.startswith("<svg") or (head.startswith(("<?xml", "<!doctype svg")) and "<svg" in head):
        raise QuarantineError(f"image file (SVG): '{name}'",
                              "not a readable document; exclude it with the source's include/exclude globs",
                              stage="scan")
    if text.lstrip("\ufeff \t\n").startswith("# "):
        return Detection("markdown", "text opening with a '# ' heading")
    return Detection("text", "decodable text")


def detect(rel_path: str, data: bytes) -> Detection:
    """Pick a format from the extension and, where it is ambiguous or missing, from the content.

    ``data`` is the whole file (already bounded by ``limits.max_file_bytes``).
    """
    lower = rel_path.lower()
    for ext, fmt in EXTENSIONS.items():
        if lower.endswith(ext):
            return Detection(fmt, f"extension '{ext}'")
    is_json = lower.endswith(".json")
    if is_json or lower.endswith((".yaml", ".yml")):
        try:
            text = decode_text(data)
        except QuarantineError:  # the parser refuses it with the same reason
            return Detection("json-text" if is_json else "yaml-text", "not decodable as text")
        return _detect_json(text) if is_json else _detect_yaml(text)
    return _sniff(rel_path, data)


def detect_format(rel_path: str, data: bytes) -> str:
    """The format name :func:`detect` picks (callers that need no evidence)."""
    return detect(rel_path, data).fmt


@cache
def get_parser(fmt: str) -> ParserFn:
    try:
        target = PARSERS[fmt]
    except KeyError:
        raise QuarantineError(
            f"unknown format '{fmt}'", f"use one of: {', '.join(sorted(PARSERS))}", stage="scan"
        ) from None
    module_name, func = target.split(":")
    module = importlib.import_module(module_name)
    parser: ParserFn = getattr(module, func)
    return parser
