"""HTML parser: readable content of a page as heading-scoped blocks.

Encoding follows what a browser would do, except that a byte-level UTF-16 sniff beats a
``<meta charset>`` (real exports carry UTF-16 bytes under a stale ``charset=utf-8``): BOM, sniffed
UTF-16, declared charset, UTF-8, then cp1252. Page chrome (scripts, styles, navigation, headers,
footers, forms) is dropped and ``<main>``/``<article>`` preferred when the page has one.

The DOM is walked with an explicit stack (never recursion), so pathological nesting such as
100,000 nested ``<div>``s cannot exhaust the Python stack.
"""

from __future__ import annotations

import re
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from .base import Block, ParseContext, ParsedDocument, QuarantineError, decode_text, looks_binary
from .markdown import BlockBuilder

__all__ = ["parse", "declared_charset", "decode_html", "html_blocks"]

_DROP = frozenset({
    "script", "style", "noscript", "nav", "header", "footer", "aside", "svg", "template", "form",
    "iframe", "object", "embed", "canvas", "head", "button", "select", "input", "textarea", "dialog",
    "math-renderer", "map", "audio", "video", "meta", "link",
})
# Elements whose text flows inside the surrounding paragraph.
_INLINE = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "cite", "data", "del", "dfn", "em", "font", "i", "ins", "kbd", "label",
    "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var", "wbr", "tt",
    "code", "big", "strike", "nobr", "acronym", "output", "meter", "progress", "picture", "source", "ruby",
    "rt", "rp",
})
_CODE_INLINE = frozenset({"code", "kbd", "samp", "tt"})
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_LANG_CLASS = re.compile(r"(?:^|\s)(?:language|lang|highlight-source|brush:?)-?\s*([\w+#.-]+)")

# --------------------------------------------------------------------------- encoding

_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)|<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._:-]+)""",
    re.I,
)


def declared_charset(data: bytes) -> str | None:
    """The charset a ``<meta>`` (or XML declaration) in the first 4 KiB declares, HTML-spec mapped.

    Per the HTML standard a declared UTF-16 is read as UTF-8 (real UTF-16 is caught by the BOM
    or the byte sniff first), and Latin-1/ASCII labels mean windows-1252.
    """
    m = _META_CHARSET.search(data[:4096])
    if not m:
        return None
    label = (m.group(1) or m.group(2) or b"").decode("ascii", "replace").strip().lower()
    if not label:
        return None
    if label.startswith(("utf-16", "utf16", "ucs-2", "unicode")):
        return "utf-8"
    if label in ("iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii", "ansi_x3.4-1968"):
        return "cp1252"
    return label


def decode_html(data: bytes) -> str:
    """Decode HTML bytes: BOM, UTF-16 sniff, declared charset, UTF-8, cp1252 — or quarantine."""
    if looks_binary(data):
        raise QuarantineError(
            "binary content in an .html file", "the file holds control bytes; exclude it or fix its extension"
        )
    declared = declared_charset(data)
    try:
        return decode_text(data, declared)
    except QuarantineError as exc:
        if not exc.reason.startswith("undecodable bytes: invalid UTF-8"):
            raise
        try:
            return decode_text(data, "cp1252")
        except QuarantineError:
            raise exc from None


# --------------------------------------------------------------------------- DOM → blocks


def _collapse(text: str) -> str:
    """Whitespace as a browser renders it: runs collapse, ``<br>`` newlines survive."""
    lines = (_WS.sub(" ", ln).strip() for ln in text.replace("\n", " ").split("\x0b"))
    return "\n".join(ln for ln in lines if ln)


def _attr(node: LexborNode, name: str) -> str:
    value = node.attributes.get(name)
    return value if isinstance(value, str) else ""


def _code_text(node: LexborNode) -> str:
    lang = ""
    for cand in (node, node.css_first("code")):
        if cand is None:
            continue
        m = _LANG_CLASS.search(_attr(cand, "class")) if _attr(cand, "class") else None
        if m:
            lang = m.group(1)
            break
        if _attr(cand, "data-lang"):
            lang = _attr(cand, "data-lang")
            break
    text = (node.text(deep=True, separator="") or "").strip("\n")
    if not text.strip():
        return ""
    fence = "````" if "```" in text else "```"
    return f"{fence}{lang}\n{text}\n{fence}"


def _cell_text(node: LexborNode) -> str:
    return " ".join((node.text(deep=True, separator=" ") or "").split()).replace("|", "\\|")


def _table_text(table: LexborNode) -> str:
    """Rows of the table itself (not of tables nested in its cells) as Markdown-like rows."""
    rows: list[str] = []
    header_done = False
    for tr in table.css("tr"):
        # skip rows that belong to a nested table
        owner = tr.parent
        while owner is not None and owner.tag not in ("table",):
            owner = owner.parent
        if owner is not None and owner.mem_id != table.mem_id:
            continue
        cells = [c for c in tr.iter() if c.tag in ("td", "th")]
        if not cells:
            continue
        texts: list[str] = []
        for c in cells:
            span = _attr(c, "colspan")
            n = int(span) if span.isdigit() and 0 < int(span) <= 50 else 1
            texts.extend([_cell_text(c)] * n)
        rows.append("| " + " | ".join(texts) + " |")
        if not header_done and all(c.tag == "th" for c in cells) and len(rows) == 1:
            rows.append("|" + "---|" * len(texts))
            header_done = True
    caption = table.css_first("caption")
    if caption is not None and caption.text(deep=True).strip():
        rows.insert(0, " ".join(caption.text(deep=True).split()))
    return "\n".join(rows)


def _is_content_header(node: LexborNode) -> bool:
    """An ``<article>``/``<section>`` header holding the heading is content, not site chrome."""
    if node.css_first("h1, h2, h3, h4, h5, h6") is None:
        return False
    parent = node.parent
    while parent is not None:
        if parent.tag in ("article", "section", "main"):
            return True
        if parent.tag == "body":
            return False
        parent = parent.parent
    return False


class _Walker:
    """Turns a DOM subtree into blocks, gathering inline runs into paragraphs.

    Consecutive list items (and ``<dt>``/``<dd>`` pairs) are gathered into one block so a list
    reads as a list; a heading, ``<pre>`` or table ends the run.
    """

    def __init__(self) -> None:
        self.out = BlockBuilder()
        self.buf: list[str] = []
        self.items: list[str] = []
        self.prefixes: list[str] = []  # marker of each open list item, innermost last
        self.first_h1: str | None = None

    def end_paragraph(self) -> None:
        text = _collapse("".join(self.buf))
        self.buf = []
        if not text:
            return
        if self.prefixes:
            prefix = self.prefixes[-1]
            pad = " " * len(prefix)
            self.items.append(prefix + text.replace("\n", "\n" + pad))
            self.prefixes[-1] = pad  # later paragraphs of the same item are continuations
        else:
            self.flush_items()
            self.out.add(text)

    def flush_items(self) -> None:
        if self.items:
            self.out.add("\n".join(self.items))
            self.items = []

    def break_all(self) -> None:
        self.end_paragraph()
        self.flush_items()

    def walk(self, root: LexborNode) -> None:
        # Stack entries: a node to visit, or a string marker acted on when a subtree is done.
        stack: list[LexborNode | str] = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if item == "/item":
                    self.end_paragraph()
                    self.prefixes.pop()
                elif item == "/block":
                    self.end_paragraph()
                else:  # literal text, e.g. the closing backtick of inline code
                    self.buf.append(item)
                continue
            node = item
            if node.is_text_node:
                self.buf.append(node.text_content or "")
                continue
            if not node.is_element_node:
                continue
            tag = node.tag or ""
            if tag in _DROP and not (tag == "header" and _is_content_header(node)):
                continue
            attrs = node.attributes
            if "hidden" in attrs or attrs.get("aria-hidden") == "true":
                continue
            if tag in _INLINE:
                if tag in _CODE_INLINE:
                    self.buf.append("`")
                    stack.append("`")
                stack.extend(reversed(list(node.iter(include_text=True))))
                continue
            if tag == "br":
                self.buf.append("\x0b")
                continue
            if tag == "img":
                alt = attrs.get("alt")
                if isinstance(alt, str) and alt.strip():
                    self.buf.append(f" {alt.strip()} ")
                continue
            if tag in _HEADINGS:
                self.break_all()
                title = " ".join((node.text(deep=True, separator=" ") or "").split())
                level = _HEADINGS[tag]
                if level == 1 and self.first_h1 is None and title:
                    self.first_h1 = title
                self.out.heading(level, title)
                continue
            if tag in ("pre", "listing", "xmp", "plaintext"):
                self.break_all()
                self.out.add(_code_text(node), "code")
                continue
            if tag == "table":
                self.break_all()
                self.out.add(_table_text(node), "table")
                continue
            self.end_paragraph()
            if tag in ("li", "dt", "dd"):
                marker = "- " if tag == "li" else "" if tag == "dt" else "  "
                self.prefixes.append("  " * min(len(self.prefixes), 8) + marker)
                stack.append("/item")
            else:
                stack.append("/block")
            stack.extend(reversed(list(node.iter(include_text=True))))
        self.break_all()


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    """``<main>``, a single ``<article>`` or ``[role=main]``; else ``<body>``."""
    main = tree.css_first("main") or tree.css_first('[role="main"]')
    if main is not None and (main.text(deep=True) or "").strip():
        return main
    articles = tree.css("article")
    if len(articles) == 1 and (articles[0].text(deep=True) or "").strip():
        return articles[0]
    return tree.body or tree.root


_TAG_RE = re.compile(r"<(/?)([A-Za-z][\w:-]*)[^<>]*?(/?)>")  # [^<>]: an unclosed tag costs O(1)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                   "track", "wbr", "param", "keygen"})
# End tags the HTML parser may imply: they never make a document deeper on their own.
_OPTIONAL_END = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option",
                           "optgroup", "colgroup", "caption", "rb", "rt", "rp", "rtc", "html", "head", "body"})
MAX_DEPTH = 512  # what Chromium's tree builder allows before it flattens


def limit_depth(text: str, max_depth: int = MAX_DEPTH) -> str:
    """Drop the tags of elements nested deeper than ``max_depth``, keeping their text.

    lexbor's tree builder is quadratic in nesting depth (100,000 nested ``<div>``s take ~15 s),
    so hostile nesting is flattened first, much as browsers do. Documents that stay within the
    limit are returned unchanged.
    """
    if text.count("<") < max_depth:
        return text
    stack: list[tuple[str, bool]] = []  # (tag, dropped)
    drops: list[tuple[int, int]] = []
    deepest = 0
    for m in _TAG_RE.finditer(text):
        closing, name, selfclose = m.group(1), m.group(2).lower(), m.group(3)
        if name in _VOID or name in _OPTIONAL_END or selfclose:
            continue
        if not closing:
            dropped = len(stack) >= max_depth
            stack.append((name, dropped))
            deepest = max(deepest, len(stack))
            if dropped:
                drops.append(m.span())
            continue
        for i in range(len(stack) - 1, max(-1, len(stack) - 64), -1):
            if stack[i][0] == name:
                if stack[i][1]:
                    drops.append(m.span())
                del stack[i:]
                break
    if deepest <= max_depth or not drops:
        return text
    parts: list[str] = []
    pos = 0
    for start, end in drops:
        parts.append(text[pos:start])
        parts.append(" ")
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def html_blocks(text: str) -> tuple[BlockBuilder, str | None]:
    """Parse HTML text; returns the filled builder and the page title."""
    tree = LexborHTMLParser(limit_depth(text))
    title_node = tree.css_first("title")
    title = " ".join((title_node.text(deep=True) or "").split()) if title_node is not None else ""
    root = _content_root(tree)
    walker = _Walker()
    if root is not None:
        walker.walk(root)
    return walker.out, (title or walker.first_h1 or None)


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """Parse an HTML page into one document."""
    text = decode_html(data)
    builder, title = html_blocks(text)
    blocks = builder.finish()
    metadata: dict[str, Any] = {"format": "html", "headings": builder.heading_count}
    if title:
        metadata["title"] = title
    if not blocks:
        if not title:
            raise QuarantineError(
                "no readable text in HTML", "the page has no text outside scripts, styles and navigation"
            )
        blocks = [Block(title)]
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]
