"""reStructuredText parser: docutils doctree → heading-scoped blocks.

Real documentation is Sphinx-flavoured: ``.. code-block::`` with Sphinx-only options,
``.. toctree::``, ``.. tabs::``, ``:ref:`` and custom project directives. Plain docutils turns
every one of those into an error node and drops the content, so while *this* parser runs, role
and directive look-ups fall back to lenient handlers that keep the readable text (the fallback
is switched on through a context variable, so other docutils users in the process are
unaffected). If docutils itself still fails, the source is rendered as plain paragraphs rather
than quarantined: losing markup is better than losing the document.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docutils.core
from docutils import nodes, utils
from docutils.parsers.rst import Directive, directives, roles

from .base import (
    ParseContext,
    ParsedDocument,
    decode_text_file,
    encoding_metadata,
)
from .markdown import BlockBuilder

__all__ = ["parse", "rst_blocks"]

_LENIENT: contextvars.ContextVar[bool] = contextvars.ContextVar("doc_migration_rst_lenient", default=False)

# --------------------------------------------------------------------------- lenient roles


def _generic_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: dict[str, Any] | None = None,
    content: list[str] | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    """Any unknown role (``:ref:``, ``:doc:``, ``:py:class:``): keep its visible text.

    ``:ref:`Title <target>``` shows "Title"; ``:class:`~pkg.Cls``` shows "Cls".
    """
    text = utils.unescape(text)
    m = re.match(r"^(.*?)\s*<([^<>]*)>$", text, re.S)
    if m and m.group(1).strip():
        text = m.group(1).strip()
    elif text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    text = text.lstrip("!")
    literal_roles = ("class", "func", "meth", "mod", "attr", "obj", "data", "const", "exc", "option",
                     "envvar", "file", "command", "program", "samp", "kbd", "code", "macro", "type",
                     "member", "var", "struct", "enum", "enumerator", "expr")
    if name.rsplit(":", 1)[-1] in literal_roles:
        return [nodes.literal(rawtext, text)], []
    return [nodes.Text(text)], []


# --------------------------------------------------------------------------- lenient directives


class _AnyOptions(dict[str, Callable[[str | None], Any]]):
    """An option spec that accepts every option (Sphinx adds many docutils does not know)."""

    def __missing__(self, key: str) -> Callable[[str | None], Any]:
        return directives.unchanged

    def __contains__(self, key: object) -> bool:
        return True


_CODE_DIRECTIVES = frozenset({"code", "code-block", "sourcecode", "literalinclude", "prompt", "console",
                              "highlight-block", "jupyter-execute", "ipython", "doctest", "testcode",
                              "testoutput"})
_DROP_DIRECTIVES = frozenset({"toctree", "include", "index", "highlight", "default-role", "default-domain",
                              "currentmodule", "module", "tabularcolumns", "raw", "meta", "contents",
                              "sectnum", "header", "footer", "role", "title", "spelling:word-list"})
_HIDDEN_OPTIONS = frozenset({"class", "name", "maxdepth", "hidden", "glob", "width", "height", "align", "scale",
                             "target", "linenos", "lineno-start", "emphasize-lines", "dedent", "force",
                             "titlesonly", "numbered", "reversed", "includehidden", "sync", "key"})
# Directives whose argument is a condition or a class name rather than readable text.
_SILENT_ARGUMENT = frozenset({"only", "ifconfig", "cssclass", "rst-class", "container", "tab-set"})


class _LenientCode(Directive):
    """``code-block`` & friends with any Sphinx option; the body becomes a literal block."""

    required_arguments = 0
    optional_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = _AnyOptions({"language": directives.unchanged})

    def run(self) -> list[nodes.Node]:
        text = "\n".join(self.content)
        if not text.strip():
            return []  # literalinclude without file access: nothing to show
        node = nodes.literal_block(text, text)
        lang = self.arguments[0].strip() if self.arguments else ""
        if lang:
            node["language"] = lang
        caption = str(self.options.get("caption") or "").strip()
        return [nodes.rubric(caption, caption), node] if caption else [node]


class _LenientContainer(Directive):
    """Any other unknown directive: its argument as a label, its body parsed as reST."""

    required_arguments = 0
    optional_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = _AnyOptions({"class": directives.unchanged})

    def run(self) -> list[nodes.Node]:
        name = self.name.lower()
        if name in _DROP_DIRECTIVES:
            return []
        container = nodes.container()
        if self.arguments and name not in _SILENT_ARGUMENT:
            arg = self.arguments[0].strip()
            container += nodes.rubric(arg, arg)
        # Options of project directives often carry the facts (``:set: hubble.enabled=true``).
        shown = [(k, str(v).strip()) for k, v in self.options.items() if k not in _HIDDEN_OPTIONS and v]
        if shown:
            block = nodes.line_block()
            for key, value in shown:
                block += nodes.line(f"{key}: {value}", f"{key}: {value}")
            container += block
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, container)
        return [container] if len(container) else []


_original_role = roles.role
_original_directive = directives.directive


def _role_lookup(role_name: str, language_module: Any, lineno: int, reporter: Any) -> tuple[Any, list[Any]]:
    fn, messages = _original_role(role_name, language_module, lineno, reporter)
    if fn is None and _LENIENT.get():
        return _generic_role, []
    return fn, messages


def _directive_lookup(directive_name: str, language_module: Any, document: Any) -> tuple[Any, list[Any]]:
    if _LENIENT.get():
        lowered = directive_name.lower()
        if lowered in _CODE_DIRECTIVES or lowered.endswith(":code-block"):
            return _LenientCode, []
        if lowered in _DROP_DIRECTIVES:
            return _LenientContainer, []
    cls, messages = _original_directive(directive_name, language_module, document)
    if cls is None and _LENIENT.get():
        return _LenientContainer, []
    return cls, messages


def _install() -> None:
    """Wrap docutils' look-ups once; the wrappers act only while ``_LENIENT`` is set."""
    if getattr(roles.role, "__name__", "") != "_role_lookup":
        roles.role = _role_lookup  # type: ignore[assignment]
    if getattr(directives.directive, "__name__", "") != "_directive_lookup":
        directives.directive = _directive_lookup  # type: ignore[assignment]


@contextmanager
def _lenient() -> Iterator[None]:
    _install()
    token = _LENIENT.set(True)
    try:
        yield
    finally:
        _LENIENT.reset(token)


class _NullStream:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None


_SETTINGS: dict[str, Any] = {
    "report_level": 5,
    "halt_level": 5,
    "warning_stream": _NullStream(),
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "_disable_config": True,  # never read docutils.conf from the working directory
    "doctitle_xform": False,  # keep the first title as a section so heading paths nest naturally
    "sectsubtitle_xform": False,
    "syntax_highlight": "none",  # no Pygments: faster, and unknown languages cannot fail
    "pep_references": False,
    "rfc_references": False,
    "line_length_limit": 100_000,
    "traceback": True,
}


# --------------------------------------------------------------------------- doctree → blocks

_ADMONITION_LABELS = {
    "note": "Note", "warning": "Warning", "tip": "Tip", "hint": "Hint", "important": "Important",
    "caution": "Caution", "danger": "Danger", "error": "Error", "attention": "Attention", "seealso": "See also",
}
_SKIP: tuple[type[nodes.Node], ...] = (
    nodes.comment, nodes.target, nodes.substitution_definition, nodes.system_message, nodes.raw,
    nodes.pending, nodes.transition, nodes.decoration, nodes.meta, nodes.label,
)
_LISTS = (nodes.bullet_list, nodes.enumerated_list)


_PROBLEM_MARKUP = re.compile(r"^[`|]*(.*?)[`|]*_{0,2}$", re.S)


def _inline_text(node: nodes.Node) -> str:
    """Visible text of an inline-level element, with ``literal`` shown as `code`."""
    parts: list[str] = []
    stack: list[nodes.Node] = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, nodes.Text):
            parts.append(cur.astext())
        elif isinstance(cur, nodes.system_message | nodes.comment | nodes.target | nodes.footnote_reference):
            continue
        elif isinstance(cur, nodes.problematic):
            # unresolved `Target`_ / |substitution| (defined in a file we do not have)
            parts.append(_PROBLEM_MARKUP.sub(r"\1", cur.astext()))
        elif isinstance(cur, nodes.literal) and cur is not node:
            parts.append(f"`{cur.astext()}`")
        elif isinstance(cur, nodes.image):
            alt = cur.get("alt", "")
            if alt:
                parts.append(str(alt))
        elif isinstance(cur, nodes.Element):
            stack.extend(reversed(cur.children))
    return "".join(parts)


def _code_block(node: nodes.Element) -> str:
    lang = node.get("language") or ""
    classes = [c for c in node.get("classes", []) if c not in ("code", "literal-block")]
    if not lang and classes:
        lang = classes[0]
    text = node.astext().rstrip("\n")
    fence = "````" if "```" in text else "```"
    return f"{fence}{lang}\n{text}\n{fence}"


def _table(node: nodes.Element) -> str:
    """Markdown-style rows; a cell spanning rows/columns is repeated so every row stands alone."""
    rows: list[str] = []
    carry: dict[int, tuple[int, str]] = {}  # column -> (rows still to fill, text)
    header_rows = 0
    for row in node.findall(nodes.row):
        cells: dict[int, str] = {}
        for col, (left, text) in list(carry.items()):
            cells[col] = text
            if left <= 1:
                del carry[col]
            else:
                carry[col] = (left - 1, text)
        col = 0
        for entry in row.children:
            if not isinstance(entry, nodes.entry):
                continue
            while col in cells:
                col += 1
            text = " ".join(_inline_text(entry).split()).replace("|", "\\|")
            for c in range(col, col + 1 + int(entry.get("morecols", 0))):
                cells[c] = text
                if entry.get("morerows"):
                    carry[c] = (int(entry["morerows"]), text)
            col += 1 + int(entry.get("morecols", 0))
        width = max(cells) + 1 if cells else 0
        rows.append("| " + " | ".join(cells.get(c, "") for c in range(width)) + " |")
        if isinstance(row.parent, nodes.thead):
            header_rows = len(rows)
    if header_rows and rows:
        ncols = rows[0].count(" | ") + 1
        rows.insert(header_rows, "|" + "---|" * ncols)
    return "\n".join(rows)


def _has_code(node: nodes.Element) -> bool:
    return any(True for _ in node.findall(nodes.literal_block))


def _render_list(node: nodes.Element, indent: str = "") -> str:
    """A code-free list as Markdown-like bullets; nesting becomes indentation."""
    lines: list[str] = []
    enumerated = isinstance(node, nodes.enumerated_list)
    for n, item in enumerate(node.children, 1):
        if not isinstance(item, nodes.list_item):
            continue
        marker = f"{n}. " if enumerated else "- "
        first = True
        for child in item.children:
            if isinstance(child, _LISTS):
                lines.append(_render_list(child, indent + "  "))
                continue
            text = " ".join(_inline_text(child).split())
            if not text:
                continue
            lines.append(f"{indent}{marker if first else '  '}{text}")
            first = False
    return "\n".join(lines)


def _definition_list(node: nodes.Element) -> str:
    out: list[str] = []
    for item in node.children:
        if not isinstance(item, nodes.definition_list_item):
            continue
        term = " ".join(_inline_text(c) for c in item.children if isinstance(c, nodes.term | nodes.classifier))
        defs = [c for c in item.children if isinstance(c, nodes.definition)]
        body = "\n".join(" ".join(_inline_text(p).split()) for d in defs for p in d.children)
        out.append(f"{term.strip()}\n  {body.strip()}" if body.strip() else term.strip())
    return "\n".join(out)


def _field_list(node: nodes.Element) -> str:
    """``name: body`` lines; docinfo's typed children (author, version...) read the same way."""
    out = []
    for field in node.children:
        if isinstance(field, nodes.field) and len(field.children) >= 2:
            name = " ".join(_inline_text(field.children[0]).split())
            body = " ".join(_inline_text(field.children[1]).split())
            out.append(f"{name}: {body}")
        elif isinstance(field, nodes.Element):
            body = " ".join(_inline_text(field).split())
            if body:
                out.append(f"{field.tagname.replace('_', ' ').capitalize()}: {body}")
    return "\n".join(out)


def _option_list(node: nodes.Element) -> str:
    """Command-line option lists as ``-v, --verbose  description`` lines."""
    out = []
    for item in node.findall(nodes.option_list_item):
        opts = ", ".join(" ".join(o.astext().split()) for o in item.findall(nodes.option))
        desc = " ".join(" ".join(_inline_text(d).split()) for d in item.findall(nodes.description))
        out.append(f"{opts}  {desc}".strip())
    return "\n".join(out)


_DIRECTIVE_LINE = re.compile(r"^\s*\.\.\s+[\w:.-]+::\s*")
_OPTION_LINE = re.compile(r"^\s*:[\w-]+:.*$")


def _recover(msg: nodes.system_message) -> str:
    """Readable text of a directive docutils rejected (it keeps the source in a literal block)."""
    if msg.get("level", 0) < 3:
        return ""
    literals = [c for c in msg.children if isinstance(c, nodes.literal_block)]
    if not literals:
        return ""
    lines = literals[0].astext().split("\n")
    if lines and _DIRECTIVE_LINE.match(lines[0]):
        lines[0] = _DIRECTIVE_LINE.sub("", lines[0])
    kept = [ln.strip() for ln in lines if not _OPTION_LINE.match(ln)]
    return "\n".join(ln for ln in kept if ln)


def rst_blocks(doctree: nodes.document) -> tuple[BlockBuilder, str | None]:
    """Walk the doctree iteratively (no recursion limit) in document order."""
    out = BlockBuilder()
    title: str | None = None
    # (node, section depth)
    stack: list[tuple[nodes.Node, int]] = [(c, 0) for c in reversed(doctree.children)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, nodes.system_message):
            recovered = _recover(node)
            if recovered:
                out.add(recovered)
            continue
        if isinstance(node, _SKIP) or not isinstance(node, nodes.Element):
            if isinstance(node, nodes.Text) and node.astext().strip():
                out.add(node.astext().strip())
            continue
        if isinstance(node, nodes.section):
            children = list(node.children)
            if children and isinstance(children[0], nodes.title):
                heading = " ".join(_inline_text(children[0]).split())
                if title is None and heading:
                    title = heading
                out.heading(depth + 1, heading)
                children = children[1:]
            stack.extend((c, depth + 1) for c in reversed(children))
        elif isinstance(node, nodes.title | nodes.subtitle | nodes.rubric):
            out.label(" ".join(_inline_text(node).split()))
        elif isinstance(node, nodes.literal_block | nodes.doctest_block):
            if isinstance(node, nodes.literal_block) and "parsed-literal" in node.get("classes", []):
                out.add(node.astext())
            else:
                out.add(_code_block(node), "code")
        elif isinstance(node, nodes.table):
            for t in node.children:
                if isinstance(t, nodes.title):
                    out.label(_inline_text(t))
            out.add(_table(node), "table")
        elif isinstance(node, _LISTS) and not _has_code(node):
            out.add(_render_list(node))
        elif isinstance(node, nodes.definition_list) and not _has_code(node):
            out.add(_definition_list(node))
        elif isinstance(node, nodes.field_list | nodes.docinfo) and not _has_code(node):
            out.add(_field_list(node))
        elif isinstance(node, nodes.option_list) and not _has_code(node):
            out.add(_option_list(node))
        elif isinstance(node, nodes.line_block):
            out.add("\n".join(_inline_text(line) for line in node.findall(nodes.line)))
        elif isinstance(node, nodes.Admonition):
            kind = node.tagname
            label = _ADMONITION_LABELS.get(kind, "")
            children = list(node.children)
            if children and isinstance(children[0], nodes.title):  # generic ``.. admonition:: Title``
                label = " ".join(_inline_text(children[0]).split())
                children = children[1:]
            if label:
                out.label(f"{label}:")
            stack.extend((c, depth) for c in reversed(children))
        elif isinstance(node, nodes.image):
            alt = node.get("alt", "")
            if alt:
                out.add(str(alt))
        elif isinstance(node, nodes.TextElement):
            # paragraph, caption, attribution, term, ... : leaf text
            out.add(" ".join(_inline_text(node).split()) if not isinstance(node, nodes.FixedTextElement)
                    else node.astext())
        else:
            # containers: block_quote, list items with code, figure, topic, compound, container...
            stack.extend((c, depth) for c in reversed(node.children))
    return out, title


# --------------------------------------------------------------------------- plain fallback

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def plain_blocks(text: str) -> tuple[BlockBuilder, str | None]:
    """Paragraph-split rendering used when docutils gives up; underlined lines become headings."""
    out = BlockBuilder()
    title: str | None = None
    levels: list[str] = []
    for para in re.split(r"\n[ \t]*\n", text):
        lines = para.split("\n")
        kept: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and not _ADORNMENT.match(line) and _ADORNMENT.match(nxt) and len(nxt.strip()) >= len(
                line.strip()
            ):
                if kept:
                    out.add("\n".join(kept))
                    kept = []
                char = nxt.strip()[0]
                if char not in levels:
                    levels.append(char)
                heading = line.strip()
                title = title or heading
                out.heading(levels.index(char) + 1, heading)
                i += 2
                continue
            if not _ADORNMENT.match(line):
                kept.append(line)
            i += 1
        if kept:
            out.add("\n".join(kept).strip("\n"))
    return out, title


# --------------------------------------------------------------------------- entry point


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """Parse a reStructuredText file; Sphinx extensions degrade to their readable text."""
    text, encoding = decode_text_file(data)
    metadata: dict[str, Any] = {"format": "rst", **encoding_metadata(encoding)}
    try:
        with _lenient():
            doctree = docutils.core.publish_doctree(
                text, source_path=ctx.rel_path, settings_overrides=dict(_SETTINGS)
            )
        builder, title = rst_blocks(doctree)
    except (Exception, RecursionError) as exc:  # docutils bugs or pathological nesting
        metadata["parse_fallback"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        builder, title = plain_blocks(text)
    blocks = builder.finish()
    metadata["headings"] = builder.heading_count
    if title:
        metadata["title"] = title
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]
