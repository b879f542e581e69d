"""Cross-references between corpus documents: do the links of migrated pages lead to migrated pages?

Parsers keep a link's visible text, not its target, so the targets are read from the source files on
disk (Markdown/MDX ``[x](rel/path.md#a)`` and reference definitions, reStructuredText ``:doc:`` and
`` `x <path>`_ ``, HTML ``<a href>``, notebook Markdown cells) and, for OpenAPI, from the ``refs`` /
``unresolved_refs`` the parser stored in row metadata. Targets resolve relative to the linking file
(absolute ones against each of its ancestor folders, the way a docs site root would) and must be
the ``source_file`` of a migrated document. External URLs and pure anchors are ignored; links to
assets (images, code) are not cross-references. Doc-server export records resolve against the other
records' original ``module_path``.

Extension-less Markdown/HTML links are site routes: resolved when a page matches, otherwise counted
as unverified rather than reported (routing rules belong to the site generator).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..config import Settings
from ..manifest import Manifest
from ..storage import audit
from .common import WARN, check_result, norm_path, plural, source_roots
from .config import ValidationConfig

DOC_EXTS = (".md", ".mdx", ".markdown", ".rst", ".txt", ".html", ".htm", ".ipynb", ".pdf")
ROUTE_SUFFIXES = (".md", ".mdx", ".rst", ".html", ".ipynb", "/index.md", "/README.md", "/index.mdx",
                  "/index.rst", "/index.html")
DOC_ROLE_SUFFIXES = (".rst", ".md", ".txt", ".ipynb", ".mdx")
MAX_FILE_BYTES = 5_000_000

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
# ``[`` first (then "not preceded by !") lets the engine jump from one ``[`` to the next; possessive
# quantifiers: no backtracking can turn a failed ``](`` into a match. Same matches, ~10x faster.
_MD_LINK = re.compile(r"\[(?<!!\[)(?:[^\[\]\n]++|\[[^\]\n]*+\])*+\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)\n]*)?\)")
_MD_REFDEF = re.compile(r"^[ ]{0,3}\[[^\]\n]+\]:[ \t]*<?([^\s>]+)>?", re.M)
_RST_DOC = re.compile(r":doc:`([^`]+)`")
_RST_LINK = re.compile(r"`[^`<]*<([^>`]+)>`__?")
_HTML_HREF = re.compile(r"<a\b[^>]*?\bhref\s*=\s*([\"'])(.*?)\1", re.I | re.S)


def _blank(match: re.Match[str]) -> str:
    return "\n" * match.group(0).count("\n")


class _Lines:
    """Line numbers of increasing offsets, counting only the newlines since the previous offset:
    counting from the start of the text for every link is quadratic in a long page with many links."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def __call__(self, offset: int) -> int:
        if offset < self.offset:  # not increasing: start over
            self.offset, self.line = 0, 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def _has_html_link(text: str) -> bool:
    return "<a" in text or "<A" in text


def extract_links(text: str, fmt: str) -> list[tuple[int, str, str]]:
    """(line, target, kind) of every link in a document's source text; kind is markdown|doc|rst|html.

    Each pattern runs only when the text holds the characters it starts with (most chunks hold none)."""
    out: list[tuple[int, str, str]] = []

    def add(pattern: re.Pattern[str], src: str, kind: str, group: int = 1) -> None:
        line = _Lines(src)
        for m in pattern.finditer(src):
            out.append((line(m.start()), m.group(group).strip(), kind))

    if fmt == "markdown":
        if "[" not in text and not _has_html_link(text):
            return out
        body = text
        if "```" in body or "~~~" in body:
            body = _FENCE.sub(_blank, body)
        if "`" in body:
            body = _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), body)
        if "](" in body:
            add(_MD_LINK, body, "markdown")
        if "]:" in body:
            add(_MD_REFDEF, body, "markdown")
        if _has_html_link(body):
            add(_HTML_HREF, body, "html", 2)  # raw HTML inside Markdown/MDX
    elif fmt == "rst":
        if ":doc:`" in text:
            line = _Lines(text)
            for m in _RST_DOC.finditer(text):
                target = m.group(1)
                inner = re.search(r"<([^>]+)>\s*$", target)
                out.append((line(m.start()), (inner.group(1) if inner else target).strip(), "doc"))
        if ">`_" in text:
            line = _Lines(text)
            for m in _RST_LINK.finditer(text):
                if text[max(0, m.start() - 1)] == ":" or m.group(1).endswith("_"):
                    continue  # a role's argument, or a named reference (``target_``), not a path
                out.append((line(m.start()), m.group(1).strip(), "rst"))
    elif fmt == "html" and _has_html_link(text):
        add(_HTML_HREF, text, "html", 2)
    return out


def source_format(path: str, meta_format: str | None) -> tuple[str | None, bool]:
    """(format to extract links with, is a doc-server export record)."""
    if meta_format and meta_format.startswith("docserver-json/"):
        inner = meta_format.split("/", 1)[1]
        return ({"markdown": "markdown", "mdx": "markdown", "rst": "rst", "html": "html"}.get(inner), True)
    ext = os.path.splitext(path.lower())[1]
    return ({".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst", ".html": "html",
             ".htm": "html", ".ipynb": "notebook"}.get(ext), False)


def _read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _texts(abs_path: Path, fmt: str, is_record: bool) -> list[tuple[str, str]]:
    """(text, format) blocks of a file: the record's content, notebook Markdown cells, or the file."""
    raw = _read_text(abs_path)
    if raw is None:
        return []
    if is_record:
        try:
            content = json.loads(raw).get("content")
        except (ValueError, AttributeError):
            return []
        return [(content, fmt)] if isinstance(content, str) else []
    if fmt == "notebook":
        try:
            cells = json.loads(raw).get("cells") or []
        except (ValueError, AttributeError):
            return []
        out = []
        for cell in cells:
            if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
                src = cell.get("source")
                out.append(("".join(src) if isinstance(src, list) else str(src or ""), "markdown"))
        return out
    return [(raw, fmt)]


def _split_target(target: str) -> str | None:
    """The path part of a link, or None when it is external, an anchor, a template or empty."""
    target = target.strip().strip("<>")
    if not target or target.startswith(("#", "//", "{", "$", "%7B")) or _SCHEME.match(target) or "{{" in target:
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0]).strip()
    return path or None


def _candidates(base_dir: str, root: str, path: str, suffixes: tuple[str, ...]) -> list[str]:
    """Normalised paths the target may denote: relative to the file, or (absolute) to each ancestor."""
    bases = [base_dir]
    if path.startswith("/"):
        bases, cur = [], base_dir
        while True:
            bases.append(cur)
            if cur in (root, "/", "") or not cur.startswith(root):
                break
            cur = posixpath.dirname(cur)
        path = path.lstrip("/")
    out = []
    for b in bases:
        joined = posixpath.normpath(posixpath.join(b, path))
        out.append(joined)
        out.extend(joined.rstrip("/") + s for s in suffixes)
    return out


def _link_targets(docs: list[tuple[Any, ...]], quarantined: list[tuple[Any, ...]], roots: dict[tuple[str, str], Path]
                  ) -> tuple[set[str], dict[str, set[str]], dict[str, str]]:
    """What a link may lead to: migrated files (absolute, normalised), exported records' module paths
    per source, and quarantined files with their reason."""
    migrated: set[str] = set()  # absolute, normalised paths of migrated source files
    records: dict[str, set[str]] = {}  # export source_name -> normalised module paths
    for _, doc_type, source_name, source_file, fmt, module_path in docs:
        root = roots.get((source_name, doc_type))
        if root is not None:
            migrated.add(norm_path(str(root / source_file)))
        if fmt and fmt.startswith("docserver-json/") and module_path:
            records.setdefault(source_name, set()).add(posixpath.normpath(module_path))
    q_reason: dict[str, str] = {}
    for source_name, doc_type, rel_path, stage, reason in quarantined:
        root = roots.get((source_name, doc_type))
        if root is not None:
            abs_q = norm_path(str(root / rel_path))
            if stage == "validate":  # a dropped duplicate: its text is served by the canonical copy
                migrated.add(abs_q)
            else:
                q_reason[abs_q] = reason
    return migrated, records, q_reason


def _document_links(docs: list[tuple[Any, ...]], wanted: set[str], roots: dict[tuple[str, str], Path],
                    migrated: set[str], records: dict[str, set[str]], q_reason: dict[str, str],
                    stats: Counter[str]) -> list[dict[str, Any]]:
    """Dangling links in the partitions' documents (Markdown, RST, HTML, records), counting the rest."""
    findings: list[dict[str, Any]] = []
    for key, doc_type, source_name, source_file, fmt_meta, module_path in docs:
        root = roots.get((source_name, doc_type))
        if key not in wanted or root is None:
            continue
        fmt, is_record = source_format(source_file, fmt_meta)
        if fmt is None:
            continue
        abs_file = norm_path(str(root / source_file))
        if is_record:
            if not module_path:
                continue
            base_dir, base_root = posixpath.dirname(posixpath.normpath(module_path)), "/"
            known = records.get(source_name, set())
        else:
            base_dir, base_root, known = posixpath.dirname(abs_file), norm_path(str(root)), migrated
        seen: set[str] = set()
        for text, block_fmt in _texts(Path(abs_file), fmt, is_record):
            for line, target, kind in extract_links(text, block_fmt):
                path = _split_target(target)
                if path is None:
                    stats["external_or_anchor"] += 1
                    continue
                if target in seen:
                    continue
                seen.add(target)
                ext = os.path.splitext(path.rstrip("/"))[1].lower()
                suffixes: tuple[str, ...]
                if kind == "doc":
                    suffixes = DOC_ROLE_SUFFIXES
                elif ext in DOC_EXTS:
                    suffixes = ()
                elif not ext or path.endswith("/"):
                    suffixes = ROUTE_SUFFIXES
                else:
                    stats["assets"] += 1
                    continue
                cands = _candidates(base_dir, base_root, path, suffixes)
                if any(c in known for c in cands):
                    stats["resolved"] += 1
                    continue
                if kind != "doc" and not ext:
                    stats["unverified_routes"] += 1
                    continue
                stats["dangling"] += 1
                if is_record:
                    reason = "target is not among the exported records"
                else:
                    hit = next((c for c in cands if c in q_reason), None)
                    on_disk = next((c for c in cands if os.path.isfile(c)), None)
                    reason = (f"target quarantined: {q_reason[hit]}" if hit else
                              "target exists but is not migrated (excluded by the manifest?)" if on_disk else
                              "target does not exist")
                findings.append({"partition": key, "doc_type": doc_type, "source_name": source_name,
                                 "source_file": source_file, "line": line, "link": target, "kind": kind,
                                 "reason": reason})
    return findings


def _openapi_refs(refs: list[tuple[Any, ...]], roots: dict[tuple[str, str], Path], migrated: set[str],
                  stats: Counter[str]) -> list[dict[str, Any]]:
    """OpenAPI references the parser could not resolve inside the spec, or files it does not follow."""
    findings: list[dict[str, Any]] = []
    reported: set[tuple[str, str]] = set()
    for key, doc_type, source_name, source_file, unresolved in refs:
        root = roots.get((source_name, doc_type))
        for ref in sorted({r for r in (unresolved or []) if isinstance(r, str)}):
            if (source_file, ref) in reported:  # every operation of a spec repeats the spec's refs
                continue
            reported.add((source_file, ref))
            file_part = ref.split("#", 1)[0]
            if file_part and root is not None and not _SCHEME.match(file_part):
                cand = posixpath.normpath(posixpath.join(posixpath.dirname(norm_path(str(root / source_file))),
                                                         file_part))
                if cand in migrated:
                    stats["resolved"] += 1
                    continue
                reason = "referenced file is not migrated"
            elif file_part:
                stats["external_or_anchor"] += 1
                continue
            else:
                reason = "JSON pointer does not resolve inside the spec"
            stats["dangling"] += 1
            findings.append({"partition": key, "doc_type": doc_type, "source_name": source_name,
                             "source_file": source_file, "line": None, "link": ref, "kind": "openapi_ref",
                             "reason": reason})
    return findings


def check_links(settings: Settings, url: str, keys: list[str], manifest: Manifest | None,
                config: ValidationConfig | None = None) -> dict[str, Any]:
    """Dangling cross-references from the partitions' documents (WARN): each is a page the assistant is
    told about but cannot retrieve."""
    cfg = config or ValidationConfig()
    if not cfg.links_enabled:
        return check_result("links", passed=True, severity=WARN, findings=[], cap=cfg.max_findings,
                            message="link checking disabled (validation.links.enabled: false)")
    roots = source_roots(manifest)
    docs, refs, quarantined = audit.link_facts(settings, url, keys)

    migrated, records, q_reason = _link_targets(docs, quarantined, roots)
    findings: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()
    findings += _document_links(docs, set(keys), roots, migrated, records, q_reason, stats)
    findings += _openapi_refs(refs, roots, migrated, stats)

    checked = stats["resolved"] + stats["dangling"]
    if findings:
        f0 = findings[0]
        message = (f"{plural(len(findings), 'dangling cross-reference')} of {checked} checked (e.g. "
                   f"{f0['source_file']}: {f0['link']} — {f0['reason']}): fix the links in the sources or "
                   "add the targets to the manifest, then run `doc-migrate full`")
    else:
        message = f"all {plural(checked, 'cross-reference')} between migrated documents resolve"
    return check_result("links", passed=not findings, severity=WARN, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=[], links_checked=checked,
                        resolved=stats["resolved"], unverified_routes=stats["unverified_routes"],
                        external_or_anchor=stats["external_or_anchor"], assets=stats["assets"])
