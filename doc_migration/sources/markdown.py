"""Markdown and MDX parser: front matter to metadata, body to heading-scoped blocks.

The body is tokenised with markdown-it-py *block rules only* (inline parsing is switched off,
which is what keeps this at several MB/s); each top-level token's ``.map`` line range is then
used to slice the original source, so text stays exactly as the author wrote it, fenced code
stays whole, and every block carries the heading path it sits under.

MDX and the usual documentation-site dialects (Docusaurus ``:::note``, MkDocs ``!!! note``,
Hugo ``{{< shortcode >}}``) are reduced to plain Markdown first by a fence-aware pre-pass
that never touches the inside of code fences.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import textwrap
import tomllib
from collections.abc import Callable
from functools import cache
from typing import Any

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .base import (
    Block,
    BlockKind,
    ParseContext,
    ParsedDocument,
    decode_text_file,
    encoding_metadata,
)

__all__ = ["BlockBuilder", "parse", "parse_mdx", "split_front_matter", "strip_mdx", "markdown_blocks"]

# --------------------------------------------------------------------------- front matter

_FM_YAML = re.compile(r"\A---[ \t]*\n(.*?)(?:\n|\A)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FM_TOML = re.compile(r"\A\+\+\+[ \t]*\n(.*?)(?:\n|\A)\+\+\+[ \t]*(?:\n|\Z)", re.S)
_MAX_FM_BYTES = 256 * 1024
_MAX_META_NODES = 500
_MAX_META_DEPTH = 20
_MAX_META_STR = 2000


def _json_safe(value: Any, budget: list[int], depth: int = 0) -> Any:
    """Make a YAML/TOML value JSON-serialisable (dates become ISO strings).

    ``budget`` bounds the number of nodes visited: YAML aliases can make a tiny document
    expand into an exponentially large tree, and metadata must stay small anyway.
    """
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_META_DEPTH:
        return None
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value[:_MAX_META_STR]
    if isinstance(value, _dt.date | _dt.time):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:_MAX_META_STR]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if budget[0] < 0:
                break
            out[str(k)] = _json_safe(v, budget, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = []
        for v in value:
            if budget[0] < 0:
                break
            items.append(_json_safe(v, budget, depth + 1))
        return items
    return str(value)[:_MAX_META_STR]


def split_front_matter(text: str) -> tuple[dict[str, Any], str, str | None]:
    """Split ``---`` YAML or ``+++`` TOML front matter off the top of a document.

    Returns ``(metadata, body, error)``. A front matter block that does not parse, or parses to
    something other than a mapping, never loses the body: the error text is returned instead.
    """
    stripped = text.lstrip("\ufeff")
    for pattern, kind in ((_FM_YAML, "yaml"), (_FM_TOML, "toml")):
        m = pattern.match(stripped)
        if not m:
            continue
        raw, body = m.group(1), stripped[m.end():]
        if len(raw) > _MAX_FM_BYTES:
            return {}, body, f"{kind} front matter larger than {_MAX_FM_BYTES} bytes ignored"
        try:
            loaded: Any = yaml.safe_load(raw) if kind == "yaml" else tomllib.loads(raw)
        except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
            first = str(exc).strip().splitlines()
            return {}, body, f"invalid {kind} front matter: {first[0] if first else type(exc).__name__}"[:300]
        if loaded is None:
            return {}, body, None
        if not isinstance(loaded, dict):
            return {}, body, f"{kind} front matter is a {type(loaded).__name__}, not a mapping"
        safe = _json_safe(loaded, [_MAX_META_NODES])
        return (safe if isinstance(safe, dict) else {}), body, None
    return {}, text, None


# --------------------------------------------------------------------------- pre-pass

_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")


def _split_fences(text: str) -> list[tuple[bool, str]]:
    """Cut text into alternating (is_fence, segment) runs so rewrites can skip code.

    Lenient about indentation (MDX nests fences inside JSX at any depth). An unclosed fence
    runs to the end of the document, as CommonMark says.
    """
    if "```" not in text and "~~~" not in text:
        return [(False, text)]
    lines = text.split("\n")
    out: list[tuple[bool, str]] = []
    buf: list[str] = []
    fence_char = ""
    fence_len = 0
    in_fence = False
    for line in lines:
        if not in_fence:
            if ("`" in line or "~" in line) and (m := _FENCE_OPEN.match(line)):
                marker, info = m.group(2), m.group(3)
                if not (marker[0] == "`" and "`" in info):
                    if buf:
                        out.append((False, "\n".join(buf)))
                    buf = [line]
                    in_fence, fence_char, fence_len = True, marker[0], len(marker)
                    continue
            buf.append(line)
        else:
            buf.append(line)
            s = line.strip()
            if s and s[0] == fence_char and len(s) >= fence_len and s == fence_char * len(s):
                out.append((True, "\n".join(buf)))
                buf = []
                in_fence = False
    if buf:
        out.append((in_fence, "\n".join(buf)))
    return out


def _join_segments(segments: list[tuple[bool, str]]) -> str:
    return "\n".join(seg for _, seg in segments)


_ADMONITION_LABELS = {
    "note": "Note", "info": "Info", "tip": "Tip", "warning": "Warning", "caution": "Caution",
    "danger": "Danger", "important": "Important", "example": "Example", "abstract": "Summary",
    "success": "Success", "question": "Question", "failure": "Failure", "bug": "Bug", "quote": "Quote",
}
_DOCUSAURUS_ADMON = re.compile(r"^[ \t]*:{3,}[ \t]*([A-Za-z][\w-]*)?(?:\[([^\]\n]*)\])?[ \t]*(.*?)[ \t]*$", re.M)
_MKDOCS_ADMON = re.compile(r'^(!!!|\?\?\?\+?)[ \t]+([\w-]+)(?:[ \t]+"([^"\n]*)")?[ \t]*$')
_HUGO_SHORTCODE = re.compile(r"\\?\{\{([<%])\s*(/?)\s*([\w.-]+)((?:[^{}]|\}(?!\}))*?)\s*[>%]\\?\}\}")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


def _admonition_label(kind: str | None, title: str | None) -> str:
    label = _ADMONITION_LABELS.get((kind or "").lower(), (kind or "").capitalize())
    title = (title or "").strip().strip('"')
    if label and title:
        return f"{label}: {title}"
    return f"{label}:" if label else title


def _docusaurus_sub(m: re.Match[str]) -> str:
    kind, bracket, rest = m.group(1), m.group(2), m.group(3)
    if not kind:  # closing ':::'
        return ""
    return _admonition_label(kind, bracket or rest)


def _hugo_sub(m: re.Match[str]) -> str:
    name, args = m.group(3).lower(), m.group(4)
    if m.group(2):  # closing {{< /name >}}
        return ""
    if name in ("ref", "relref"):
        q = re.search(r'"([^"]*)"', args)
        return q.group(1) if q else args.strip()
    if name in ("note", "caution", "warning", "alert", "tip", "info"):
        return _admonition_label(name, None)
    if name == "tab":  # {{< tab "Linux" >}}, {{% tab header="Linux" %}}, {{< tab Kind >}}
        q = re.search(r'(?:header=)?"([^"]*)"|([^\s"=]+)(?:\s|$)', args.strip())
        return (q.group(1) or q.group(2) or "") if q else ""
    return ""


def _mkdocs_admonitions(text: str) -> str:
    """``!!! note "Title"`` + 4-space-indented body → a label line + dedented body.

    Without this the indented body would be read as an indented code block.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MKDOCS_ADMON.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        label = _admonition_label(m.group(2), m.group(3))
        out.extend(["", label] if label else [""])
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(("    ", "\t"))):
            line = lines[i]
            out.append(line[4:] if line.startswith("    ") else line[1:] if line.startswith("\t") else line)
            i += 1
    return "\n".join(out)


def _markdown_prepass(text: str) -> str:
    """Dialect clean-up for plain Markdown files (outside code fences only)."""
    if ":::" not in text and "{{" not in text and "!!!" not in text and "???" not in text and "<!--" not in text:
        return text
    segments = _split_fences(text)
    out: list[tuple[bool, str]] = []
    for is_code, seg in segments:
        if not is_code:
            if "<!--" in seg:
                seg = _HTML_COMMENT.sub("", seg)
            if ":::" in seg:
                seg = _DOCUSAURUS_ADMON.sub(_docusaurus_sub, seg)
            if "{{" in seg:
                seg = _HUGO_SHORTCODE.sub(_hugo_sub, seg)
            if "!!!" in seg or "???" in seg:
                seg = _mkdocs_admonitions(seg)
        out.append((is_code, seg))
    return _join_segments(out)


# JSX: a balanced {...} expression (two levels deep is plenty for attribute values).
_BRACES = r"\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"
_ATTR = rf"""(?:\s+(?:{_BRACES}|[\w:.@-]+(?:\s*=\s*(?:"[^"<]*"|'[^'<]*'|{_BRACES}))?))"""
_JSX = re.compile(
    rf"""(?P<code>`[^`\n]*`)"""
    rf"""|(?P<comment>\{{/\*.*?(?:\*/\}}|\Z)|<!--.*?(?:-->|\Z))"""
    rf"""|(?P<tag><(?P<close>/)?(?P<name>[A-Za-z][\w.:-]*)?(?P<attrs>{_ATTR}*)\s*(?P<self>/)?>)""",
    re.S,
)
_LABEL_ATTR = re.compile(
    r"""\b(title|label|name|path|query|body|header|question|param)\s*=\s*(?:"([^"]*)"|'([^']*)'|\{\s*["'`]([^"'`]*)["'`]\s*\})"""
)
_ALT_ATTR = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# Elements whose whole content is not page text (Docusaurus pages set <head> from MDX).
_NON_CONTENT = re.compile(r"<(head|style|script)\b[^<>]*>.*?(?:</\1\s*>|\Z)", re.S | re.I)
_TYPE_ATTR = re.compile(r"""\btype\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# ESM syntax only, so prose such as "import the data" at the start of a line is kept.
_IMPORT_EXPORT = re.compile(
    r"""^(?:import\s+(?:['"{*]|[\w$]+\s*(?:,|from\b))|export\s+(?:default|const|let|var|function|class|async|[{*]))"""
)


def _jsx_sub(m: re.Match[str]) -> str:
    """Replace a JSX/HTML tag with its human-readable label (title="…"), or nothing."""
    if m.group("code") is not None:
        return m.group(0)
    if m.group("comment") is not None:
        return ""
    if m.group("close") or not m.group("attrs"):
        return ""
    attrs = m.group("attrs")
    name = m.group("name") or ""
    if not name[:1].isupper():  # plain HTML: only an image's alt text is content
        if name.lower() == "img" and (alt := _ALT_ATTR.search(attrs)):
            return alt.group(1) or alt.group(2) or ""
        return ""
    lm = _LABEL_ATTR.search(attrs)
    if not lm:
        return ""
    label = next(g for g in lm.groups()[1:] if g is not None).strip()
    tm = _TYPE_ATTR.search(attrs)
    if tm and lm.group(1) != "title":
        label += f" ({tm.group(1) or tm.group(2)})"
    if not label:
        return ""
    # A tag alone on its line becomes a paragraph of its own rather than gluing onto neighbours.
    s = m.string
    line_start = s.rfind("\n", 0, m.start()) + 1
    line_end = s.find("\n", m.end())
    line_end = len(s) if line_end < 0 else line_end
    if not s[line_start:m.start()].strip() and not s[m.end():line_end].strip():
        return f"\n{label}"
    return label


def _strip_import_export(seg: str) -> str:
    """Drop top-level ``import``/``export`` statements, following brackets across lines."""
    if "import" not in seg and "export" not in seg:
        return seg
    lines = seg.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not _IMPORT_EXPORT.match(line):
            out.append(line)
            i += 1
            continue
        depth = 0
        j = i
        while j < len(lines):
            cur = lines[j]
            depth += cur.count("{") + cur.count("(") + cur.count("[")
            depth -= cur.count("}") + cur.count(")") + cur.count("]")
            j += 1
            tail = cur.rstrip()
            if depth <= 0 and not tail.endswith(("=", ",", "=>", "(", "{", "[")):
                break
            if j - i > 500:  # runaway statement: stop swallowing the document
                break
        i = j
    return "\n".join(out)


def _dedent_fence(seg: str) -> str:
    """Move a fence nested deep in JSX (indent >= 4) to column 0 so it still reads as code."""
    first_nl = seg.find("\n")
    first = seg if first_nl < 0 else seg[:first_nl]
    indent = len(first) - len(first.lstrip(" \t"))
    if indent < 4:
        return seg
    return textwrap.dedent(seg)


def strip_mdx(text: str) -> str:
    """Reduce MDX to Markdown: drop import/export and JSX tags, keep the text inside them."""
    segments = _split_fences(text)
    out: list[tuple[bool, str]] = []
    for is_code, seg in segments:
        if is_code:
            out.append((True, _dedent_fence(seg)))
            continue
        seg = _strip_import_export(seg)
        if "<" in seg:
            seg = _NON_CONTENT.sub("", seg)
        if "<" in seg or "{/*" in seg:
            seg = _JSX.sub(_jsx_sub, seg)
        out.append((False, seg))
    return _markdown_prepass(_join_segments(out))


# --------------------------------------------------------------------------- body → blocks


@cache
def _md(mdx: bool) -> MarkdownIt:
    """Block-level tokenizer; MDX disables indented code exactly like MDX itself does."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.disable(["inline", "linkify", "replacements", "smartquotes", "text_join"], ignoreInvalid=True)
    if mdx:
        md.disable("code")
    return md


_MAX_HEADING = 500  # longer "headings" are hostile or broken; also bounds the regexes below
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HEADING_NOISE = re.compile(r"`|\*\*|__|\s*\{#[^}]*\}\s*$|<[^>]+>")
_TAG = re.compile(r"<[^>]*>")
_WORDY = re.compile(r"\w")


def clean_heading(raw: str) -> str:
    """Heading text without inline markup, links or ``{#anchor}`` suffixes."""
    text = _MD_LINK.sub(r"\1", raw[:_MAX_HEADING])
    text = _HEADING_NOISE.sub("", text)
    return " ".join(text.split()).strip(" #")


class BlockBuilder:
    """Collects blocks under a heading stack; shared by the Markdown, reST and HTML parsers.

    A heading is not a block of its own: its line (``## Title``) prefixes the first text block
    of its section so the content reads naturally. A heading whose section is empty, or that is
    followed directly by code, is flushed as a short text block so no title is ever lost.
    """

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._stack: list[tuple[int, str]] = []
        self._pending: list[str] = []
        self.heading_count = 0

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(t for _, t in self._stack)

    def _flush_pending(self) -> None:
        if self._pending:
            self.blocks.append(Block("\n\n".join(self._pending), self.path, "text"))
            self._pending = []

    def heading(self, level: int, title: str) -> None:
        """Open a section at ``level`` (1 = top); deeper sections nest under it."""
        title = " ".join(title.split())
        if not title:
            return
        self.heading_count += 1
        if self._pending and self._stack and self._stack[-1][0] >= level:
            self._flush_pending()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._pending.append(f"{'#' * min(max(level, 1), 6)} {title}")

    def label(self, text: str) -> None:
        """A line (``Note:``, a tab name) that should lead the next text block."""
        if text.strip():
            self._pending.append(text.strip())

    def add(self, text: str, kind: BlockKind = "text") -> None:
        if kind == "code":
            if not text.strip():
                return
            self._flush_pending()
            self.blocks.append(Block(text, self.path, "code"))
            return
        if not _WORDY.search(text):  # stray "{" / "}" or bare punctuation left by generators
            return
        if self._pending:
            text = "\n\n".join([*self._pending, text])
            self._pending = []
        self.blocks.append(Block(text, self.path, kind))

    def finish(self) -> list[Block]:
        self._flush_pending()
        return self.blocks


def markdown_blocks(body: str, mdx: bool = False) -> tuple[list[Block], str | None, int]:
    """Turn a Markdown body into blocks; returns ``(blocks, first_h1, heading_count)``."""
    tokens: list[Token] = _md(mdx).parse(body)
    lines = body.split("\n")
    out = BlockBuilder()
    first_h1: str | None = None

    def source(tok: Token) -> str:
        assert tok.map is not None
        return textwrap.dedent("\n".join(lines[tok.map[0]:tok.map[1]])).strip("\n")

    n = len(tokens)
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.map is None:
            continue
        t = tok.type
        if t == "heading_open":
            level = int(tok.tag[1]) if tok.tag[1:].isdigit() else 1
            raw = tokens[i + 1].content if i + 1 < n and tokens[i + 1].type == "inline" else ""
            title = clean_heading(raw)
            if level == 1 and first_h1 is None and title:
                first_h1 = title
            out.heading(level, title)
        elif t == "fence":
            content = tok.content if tok.content.endswith("\n") or not tok.content else tok.content + "\n"
            out.add(f"{tok.markup}{tok.info.strip()}\n{content}{tok.markup}", "code")
        elif t == "code_block":
            content = tok.content if tok.content.endswith("\n") else tok.content + "\n"
            out.add(f"```\n{content}```", "code")
        elif t == "table_open":
            out.add(source(tok), "table")
        elif t == "html_block":
            text = _TAG.sub("", _HTML_COMMENT.sub("", tok.content))
            out.add(textwrap.dedent(text).strip("\n"))
        elif t == "paragraph_open":  # leading whitespace inside a paragraph means nothing
            assert tok.map is not None
            out.add("\n".join(ln.strip() for ln in lines[tok.map[0]:tok.map[1]]).strip("\n"))
        elif t.endswith("_open"):
            out.add(source(tok))
    return out.finish(), first_h1, out.heading_count


# --------------------------------------------------------------------------- entry points


def _parse(data: bytes, ctx: ParseContext, fmt: str, prepare: Callable[[str], str]) -> list[ParsedDocument]:
    text, encoding = decode_text_file(data)
    front, body, fm_error = split_front_matter(text)
    mdx = fmt == "mdx"
    if not mdx and _looks_like_mdx(body):
        prepare, mdx = strip_mdx, True
    blocks, first_h1, headings = markdown_blocks(prepare(body), mdx=mdx)
    fm_title = front.get("title")
    title = fm_title.strip() if isinstance(fm_title, str) and fm_title.strip() else first_h1
    metadata: dict[str, Any] = dict(front)
    metadata["format"] = fmt
    metadata["headings"] = headings
    metadata.update(encoding_metadata(encoding))
    if title:
        metadata["title"] = title
    if fm_error:
        metadata["front_matter_error"] = fm_error
    if not blocks:
        # Section index pages are often front matter only: their title and description are the text.
        desc = next((front[k] for k in ("description", "summary", "excerpt") if isinstance(front.get(k), str)), "")
        text = "\n\n".join(p for p in (f"# {title}" if title else "", desc.strip()) if p)
        if text:
            blocks = [Block(text, (title,) if title else ())]
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]


_MDX_SIGNS = re.compile(
    r"""^(?:import\s+(?:[\w*{][^\n]*?\s+from\s+)?['"][^'"\n]+['"];?[ \t]*$|export\s+(?:default|const|function)\b)""",
    re.M,
)


def _looks_like_mdx(body: str) -> bool:
    """Docusaurus reads ``.md`` as MDX: ES imports at column 0 (outside code) give it away."""
    if not _MDX_SIGNS.search(body):
        return False
    return any(not is_code and _MDX_SIGNS.search(seg) for is_code, seg in _split_fences(body))


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """Parse a Markdown file (CommonMark + GFM tables + common doc-site dialects).

    A ``.md`` file that is really MDX (Docusaurus) is read as MDX, so its imports and
    components do not end up in the text.
    """
    return _parse(data, ctx, "markdown", _markdown_prepass)


def parse_mdx(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """Parse an MDX file: Markdown once imports, exports and JSX tags are stripped."""
    return _parse(data, ctx, "mdx", strip_mdx)
