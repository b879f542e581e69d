"""Format names, how they are detected, and which parser module handles each.

Parsers are imported lazily so a heavy dependency (PDF, HTML) costs nothing until a file of that
format is seen, and so a worker process imports only what it needs.
"""

from __future__ import annotations

import importlib
from functools import cache

from .base import ParserFn, QuarantineError

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
}


def detect_format(rel_path: str, head: bytes) -> str:
    """Pick a format from the extension, peeking at content where the extension is ambiguous."""
    lower = rel_path.lower()
    for ext, fmt in EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    if lower.endswith(".json"):
        sample = head[:4096].lstrip()
        if b'"openapi"' in sample or b'"swagger"' in sample:
            return "openapi"
        return "docserver-json"
    if lower.endswith((".yaml", ".yml")):
        return "openapi"
    raise QuarantineError(
        f"unsupported file type '{rel_path.rsplit('/', 1)[-1]}'",
        "set 'format:' on the source in the manifest or narrow its include globs",
        stage="scan",
    )


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
