"""doc-server SQL dumps of the ``documents`` table, read without executing any SQL.

A small tokenizer understands the parts of PostgreSQL syntax that dumps use: ``'...'`` strings
with ``''`` escapes, ``E'...'`` strings with backslash escapes, dollar quoting, comments,
``::type`` casts, ``NULL``, function calls such as ``gen_random_uuid()``/``NOW()``, ``ARRAY[...]``
and multi-row ``VALUES``; plus ``COPY documents (...) FROM stdin`` data blocks (pg_dump's
default). Every other statement is skipped. One ParsedDocument per row: content as stored (only
line endings normalised, as for every text source) and the row's vector carried over if present.

Partial failure: one bad row must not drop the file. :func:`parse_dump` returns the good rows
and a list of :class:`RowProblem`. :func:`parse` (the registry contract) returns a
:class:`DocumentList` — a plain ``list[ParsedDocument]`` that also carries ``.problems`` — so the
pipeline can record each skipped row (e.g. as a quarantine entry ``<file>#row N``) while callers
that only want documents are unaffected. The whole file is quarantined only when it yields no
document at all, when its syntax breaks (e.g. an unterminated string), or when
``ctx.options["on_row_error"] == "quarantine"`` and any row is bad.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .base import Block, ParseContext, ParsedDocument, QuarantineError, decode_text
from .openapi import load_json_bounded

log = logging.getLogger(__name__)

TABLE = "documents"
# Column order of the doc-server's documents table, used for INSERTs without a column list.
DEFAULT_COLUMNS = (
    "id", "doc_type", "source_name", "doc_path", "content", "metadata",
    "embedding", "token_count", "created_at", "updated_at",
)
MAX_PROBLEMS_LISTED = 20


@dataclass(frozen=True)
class RowProblem:
    """One row that was skipped or only partly carried over, with where to find it."""

    row: int  # 1-based row number among the documents rows of the dump
    line: int  # 1-based line where the row starts
    doc_path: str | None
    reason: str
    skipped: bool = True  # False: the row was kept but something was dropped (e.g. its vector)

    def __str__(self) -> str:
        where = f"row {self.row} (line {self.line}" + (f", {self.doc_path}" if self.doc_path else "") + ")"
        return f"{where}: {self.reason}" + ("" if self.skipped else " (row kept)")


class DocumentList(list[ParsedDocument]):
    """The documents of a dump, plus ``problems``: rows skipped or partly dropped."""

    def __init__(self, docs: Iterable[ParsedDocument] = (), problems: Iterable[RowProblem] = ()) -> None:
        super().__init__(docs)
        self.problems: list[RowProblem] = list(problems)


@dataclass
class DumpParseResult:
    documents: list[ParsedDocument]
    problems: list[RowProblem] = field(default_factory=list)
    rows_seen: int = 0
    statements_ignored: int = 0


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tok:
    kind: str  # str, num, ident, qident, punct, op, cast, eof
    value: Any
    pos: int


class SqlSyntaxError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lcomment>--[^\n]*)
  | (?P<bcomment>/\*)
  | (?P<estr>[eE]')
  | (?P<bstr>[bBxX]')
  | (?P<ustr>[uU]&')
  | (?P<str>')
  | (?P<dollar>\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<qident>")
  | (?P<cast>::)
  | (?P<punct>[(),;\[\].])
  | (?P<op>[+\-*/<>=~!@#%^&|`?:]+)
    """,
    re.X,
)
_ESCAPE_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# Pieces of an E'...' body: plain run, an escape, a doubled quote, or the closing quote.
_E_PIECE = re.compile(
    r"[^\\']+|\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))|('')|(')",
    re.S,
)
_COPY_PIECE = re.compile(r"[^\\]+|\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_STRING_CONTINUES = re.compile(r"[ \t\f\r]*\n\s*'")
_COMMENT_MARK = re.compile(r"/\*|\*/")


class _Unescaper:
    """Collects text where octal/hex escapes are *bytes* (so ``\\303\\251`` reads as "é")."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = bytearray()

    def byte(self, value: int) -> None:
        self.pending.append(value & 0xFF)

    def text(self, value: str) -> None:
        self.flush()
        self.parts.append(value)

    def flush(self) -> None:
        if self.pending:
            self.parts.append(self.pending.decode("utf-8", "replace"))
            self.pending.clear()

    def result(self) -> str:
        self.flush()
        return "".join(self.parts)


def _escape_piece(out: _Unescaper, octal: str | None, hex2: str | None, other: str | None) -> None:
    if octal:
        out.byte(int(octal, 8))
    elif hex2:
        out.byte(int(hex2, 16))
    elif other is not None:
        out.text(_ESCAPE_SIMPLE.get(other, other))


class Lexer:
    """Pull tokenizer over the whole dump; ``pos`` may be moved by the parser (COPY data)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.standard_strings = True  # standard_conforming_strings (on since PostgreSQL 9.1)
        self._peeked: Tok | None = None

    def peek(self) -> Tok:
        if self._peeked is None:
            self._peeked = self._next()
        return self._peeked

    def next(self) -> Tok:
        tok = self.peek()
        self._peeked = None
        return tok

    def seek(self, pos: int) -> None:
        self.pos = pos
        self._peeked = None

    def _string(self, start: int, backslashes: bool) -> str:
        """Body of a quoted string starting after its opening quote; handles '' and (for E'')
        backslash escapes, and PostgreSQL's rule that literals separated by whitespace that
        contains a newline are one literal."""
        text = self.text
        pieces: list[str] = []
        i = start
        while True:
            if backslashes:
                out = _Unescaper()
                for m in _E_PIECE.finditer(text, i):
                    octal, hex2, u4, u8, other, dq, close = m.groups()
                    if close:
                        end = m.start()
                        break
                    if dq:
                        out.text("'")
                    elif u4 or u8:
                        out.text(chr(min(int(u4 or u8, 16), 0x10FFFF)))
                    elif octal or hex2 or other is not None:
                        _escape_piece(out, octal, hex2, other)
                    else:
                        out.text(m.group())
                else:
                    raise SqlSyntaxError("unterminated string literal", start - 1)
                pieces.append(out.result())
            else:
                j = i
                while True:
                    end = text.find("'", j)
                    if end < 0:
                        raise SqlSyntaxError("unterminated string literal", start - 1)
                    if text.startswith("''", end):
                        j = end + 2
                        continue
                    break
                pieces.append(text[i:end].replace("''", "'"))
            self.pos = end + 1
            cont = _STRING_CONTINUES.match(text, self.pos)
            if not cont:
                return "".join(pieces)
            i = cont.end()

    def _next(self) -> Tok:
        text = self.text
        while True:
            if self.pos >= len(text):
                return Tok("eof", None, self.pos)
            m = _TOKEN.match(text, self.pos)
            start = self.pos
            if m is None:
                self.pos += 1
                return Tok("op", text[start], start)
            kind = m.lastgroup
            self.pos = m.end()
            if kind in ("ws", "lcomment"):
                continue
            if kind == "bcomment":
                self._skip_block_comment(start)
                continue
            if kind == "str":
                return Tok("str", self._string(self.pos, not self.standard_strings), start)
            if kind == "estr":
                return Tok("str", self._string(self.pos, True), start)
            if kind in ("bstr", "ustr"):
                return Tok("str", self._string(self.pos, False), start)
            if kind == "dollar":
                tag = m.group()
                end = text.find(tag, self.pos)
                if end < 0:
                    raise SqlSyntaxError(f"unterminated dollar-quoted string {tag}", start)
                body = text[self.pos : end]
                self.pos = end + len(tag)
                return Tok("str", body, start)
            if kind == "qident":
                name_parts: list[str] = []
                i = self.pos
                while True:
                    end = text.find('"', i)
                    if end < 0:
                        raise SqlSyntaxError("unterminated quoted identifier", start)
                    name_parts.append(text[i:end])
                    if text.startswith('""', end):
                        name_parts.append('"')
                        i = end + 2
                        continue
                    self.pos = end + 1
                    break
                return Tok("qident", "".join(name_parts), start)
            if kind == "ident":
                return Tok("ident", m.group().lower(), start)
            assert kind is not None
            return Tok(kind, m.group(), start)

    def _skip_block_comment(self, start: int) -> None:
        depth = 1  # PostgreSQL block comments nest
        text = self.text
        i = self.pos
        while depth:
            m = _COMMENT_MARK.search(text, i)
            if m is None:
                raise SqlSyntaxError("unterminated /* comment", start)
            depth += 1 if m.group() == "/*" else -1
            i = m.end()
        self.pos = i


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opaque:
    """A value the dump computes at load time (``gen_random_uuid()``, ``NOW()``, ``DEFAULT``...)."""

    text: str


@dataclass(frozen=True)
class Num:
    text: str


class _Parser:
    def __init__(self, text: str) -> None:
        self.lex = Lexer(text)
        self.text = text

    # -- helpers --------------------------------------------------------------------------
    def is_word(self, tok: Tok, *words: str) -> bool:
        return tok.kind == "ident" and tok.value in words

    def expect_punct(self, ch: str) -> Tok:
        tok = self.lex.next()
        if tok.kind != "punct" or tok.value != ch:
            raise SqlSyntaxError(f"expected '{ch}'", tok.pos)
        return tok

    def skip_statement(self) -> None:
        """Advance past the next top-level ``;`` (strings and comments are tokens, so safe)."""
        depth = 0
        while True:
            tok = self.lex.next()
            if tok.kind == "eof":
                return
            if tok.kind == "punct":
                if tok.value in "([":
                    depth += 1
                elif tok.value in ")]":
                    depth = max(0, depth - 1)
                elif tok.value == ";" and depth == 0:
                    return

    def skip_balanced(self) -> int:
        """Skip one malformed value up to the ``,`` or ``)`` that ends it; returns its start."""
        start = self.lex.peek().pos
        depth = 0
        while True:
            tok = self.lex.peek()
            if tok.kind == "eof":
                return start
            if tok.kind == "punct":
                if tok.value in "([":
                    depth += 1
                elif tok.value in ")]":
                    if depth == 0:
                        return start
                    depth -= 1
                elif tok.value == "," and depth == 0:
                    return start
                elif tok.value == ";":
                    return start
            self.lex.next()

    def qualified_name(self) -> str:
        """``schema.table`` → ``table`` (dumps may qualify with ``public.``)."""
        tok = self.lex.next()
        if tok.kind not in ("ident", "qident"):
            raise SqlSyntaxError("expected a table name", tok.pos)
        name = str(tok.value)
        while self.lex.peek().kind == "punct" and self.lex.peek().value == ".":
            self.lex.next()
            part = self.lex.next()
            if part.kind not in ("ident", "qident"):
                raise SqlSyntaxError("expected a name after '.'", part.pos)
            name = str(part.value)
        return name

    def column_list(self) -> list[str]:
        self.expect_punct("(")
        cols: list[str] = []
        while True:
            tok = self.lex.next()
            if tok.kind not in ("ident", "qident"):
                raise SqlSyntaxError("expected a column name", tok.pos)
            cols.append(str(tok.value))
            sep = self.lex.next()
            if sep.kind == "punct" and sep.value == ",":
                continue
            if sep.kind == "punct" and sep.value == ")":
                return cols
            raise SqlSyntaxError("expected ',' or ')' in column list", sep.pos)

    def type_name(self) -> str:
        """A type after ``::``: words (``timestamp with time zone``), ``(n)``, ``[]``."""
        words: list[str] = []
        tok = self.lex.next()
        if tok.kind not in ("ident", "qident"):
            raise SqlSyntaxError("expected a type name after '::'", tok.pos)
        words.append(str(tok.value))
        while True:
            nxt = self.lex.peek()
            if nxt.kind == "punct" and nxt.value == ".":
                self.lex.next()
                words[-1] = str(self.lex.next().value)
            elif nxt.kind == "ident" and nxt.value in (
                "precision", "varying", "with", "without", "time", "zone",
            ):
                words.append(str(self.lex.next().value))
            elif nxt.kind == "punct" and nxt.value == "(":
                self.lex.next()
                while not (self.lex.peek().kind == "punct" and self.lex.peek().value == ")"):
                    if self.lex.peek().kind == "eof":
                        raise SqlSyntaxError("unterminated type modifier", nxt.pos)
                    self.lex.next()
                self.lex.next()
            elif nxt.kind == "punct" and nxt.value == "[":
                self.lex.next()
                self.expect_punct("]")
                words.append("[]")
            else:
                return " ".join(words)

    # -- expressions ------------------------------------------------------------------------
    def value(self) -> Any:
        """One VALUES item: a literal with optional casts, possibly ``||``-concatenated."""
        val = self.primary()
        while True:
            tok = self.lex.peek()
            if tok.kind == "cast":
                self.lex.next()
                self.type_name()
            elif tok.kind == "op" and tok.value == "||":
                self.lex.next()
                rhs = self.primary()
                while self.lex.peek().kind == "cast":
                    self.lex.next()
                    self.type_name()
                val = val + rhs if isinstance(val, str) and isinstance(rhs, str) else Opaque("concatenation")
            else:
                return val

    def primary(self) -> Any:
        tok = self.lex.next()
        if tok.kind == "str":
            return tok.value
        if tok.kind == "num":
            return Num(tok.value)
        if tok.kind == "op" and tok.value in ("-", "+"):
            nxt = self.lex.next()
            if nxt.kind != "num":
                raise SqlSyntaxError("expected a number after sign", nxt.pos)
            return Num(("-" if tok.value == "-" else "") + nxt.value)
        if tok.kind == "punct" and tok.value == "(":
            inner = self.value()
            self.expect_punct(")")
            return inner
        if tok.kind == "ident":
            word = tok.value
            if word == "null":
                return None
            if word in ("true", "false"):
                return word == "true"
            if word == "default":
                return Opaque("DEFAULT")
            if word == "array":
                return self.array()
            if word == "cast":
                self.expect_punct("(")
                inner = self.value()
                as_tok = self.lex.next()
                if not self.is_word(as_tok, "as"):
                    raise SqlSyntaxError("expected AS in CAST", as_tok.pos)
                self.type_name()
                self.expect_punct(")")
                return inner
            if self.lex.peek().kind == "punct" and self.lex.peek().value == "(":
                self.lex.next()
                depth = 1
                while depth:
                    t = self.lex.next()
                    if t.kind == "eof":
                        raise SqlSyntaxError(f"unterminated call to {word}()", tok.pos)
                    if t.kind == "punct" and t.value == "(":
                        depth += 1
                    elif t.kind == "punct" and t.value == ")":
                        depth -= 1
                return Opaque(f"{word}()")
            if word in ("current_timestamp", "current_date", "localtimestamp", "current_time"):
                return Opaque(word)
        raise SqlSyntaxError(f"unsupported value starting with {tok.value!r}", tok.pos)

    def array(self) -> list[Any]:
        self.expect_punct("[")
        items: list[Any] = []
        if self.lex.peek().kind == "punct" and self.lex.peek().value == "]":
            self.lex.next()
            return items
        while True:
            items.append(self.value())
            sep = self.lex.next()
            if sep.kind == "punct" and sep.value == ",":
                continue
            if sep.kind == "punct" and sep.value == "]":
                return items
            raise SqlSyntaxError("expected ',' or ']' in ARRAY", sep.pos)


# ---------------------------------------------------------------------------------------------
# Rows → documents
# ---------------------------------------------------------------------------------------------


def _vector(value: Any) -> list[float]:
    """A pgvector literal (``'[1,2]'``), an array literal (``'{1,2}'``) or ``ARRAY[...]``."""
    if isinstance(value, list):
        nums = [float(v.text) if isinstance(v, Num) else float(v) for v in value]
    elif isinstance(value, str):
        s = value.strip()
        if len(s) < 2 or (s[0], s[-1]) not in (("[", "]"), ("{", "}")):
            raise ValueError("not a vector literal")
        body = s[1:-1].strip()
        nums = [float(x) for x in body.split(",")] if body else []
    else:
        raise ValueError(f"unexpected {type(value).__name__}")
    if not nums:
        raise ValueError("empty vector")
    if not all(math.isfinite(x) for x in nums):
        raise ValueError("vector has NaN or infinite components")
    return nums


class _RowBuilder:
    """Turns column→value rows into documents and problems, shared by INSERT and COPY."""

    def __init__(self, ctx: ParseContext, line_of: Any) -> None:
        self.ctx = ctx
        self.line_of = line_of
        self.docs: list[ParsedDocument] = []
        self.problems: list[RowProblem] = []
        self.rows = 0
        self.seen_paths: dict[str, int] = {}

    def problem(self, pos: int, doc_path: str | None, reason: str, skipped: bool = True) -> None:
        self.problems.append(RowProblem(self.rows, self.line_of(pos), doc_path, reason, skipped))

    def add(self, cols: list[str], values: list[Any], pos: int) -> None:
        self.rows += 1
        if len(values) != len(cols):
            self.problem(pos, None, f"{len(values)} values for {len(cols)} columns")
            return
        row = dict(zip(cols, values, strict=True))
        doc_path = row.get("doc_path")
        path_label = doc_path if isinstance(doc_path, str) else None
        if not isinstance(doc_path, str) or not doc_path.strip():
            self.problem(pos, None, "doc_path is NULL or empty" if not isinstance(doc_path, Opaque)
                         else f"doc_path is computed ({doc_path.text})")
            return
        content = row.get("content")
        if not isinstance(content, str):
            what = "NULL" if content is None else "not a string literal"
            self.problem(pos, path_label, f"content is {what}")
            return
        if "\x00" in content:
            content = content.replace("\x00", "")
        if not content.strip():
            self.problem(pos, path_label, "empty content")
            return
        if doc_path in self.seen_paths:
            self.problem(pos, path_label, f"duplicate doc_path (first seen in row {self.seen_paths[doc_path]}); "
                         "the first row was kept")
            return
        self.seen_paths[doc_path] = self.rows

        metadata: dict[str, Any] = {}
        raw_meta = row.get("metadata")
        if isinstance(raw_meta, str) and raw_meta.strip():
            try:
                parsed = load_json_bounded(raw_meta, self.ctx.limits.max_json_depth, "metadata JSON")
            except QuarantineError as exc:
                self.problem(pos, path_label, f"metadata dropped: {exc.reason}", skipped=False)
                parsed = {}
            metadata = parsed if isinstance(parsed, dict) else {"dump_metadata": parsed}
        elif isinstance(raw_meta, Opaque) and raw_meta.text != "DEFAULT":
            self.problem(pos, path_label, f"metadata is computed ({raw_meta.text}); dropped", skipped=False)
        elif raw_meta is not None and not isinstance(raw_meta, str | Opaque):
            self.problem(pos, path_label, "metadata is not a JSON string; dropped", skipped=False)
        doc_type = row.get("doc_type")
        if isinstance(doc_type, str) and doc_type != self.ctx.doc_type:
            metadata["doc_type_in_dump"] = doc_type

        embedding: list[float] | None = None
        raw_vec = row.get("embedding")
        if raw_vec is not None and not isinstance(raw_vec, Opaque):
            try:
                embedding = _vector(raw_vec)
            except (ValueError, TypeError) as exc:
                self.problem(pos, path_label, f"embedding dropped ({exc}); the row will be re-embedded",
                             skipped=False)
                metadata["embedding_dropped"] = str(exc)
        model = metadata.get("embedding_model")
        source_name = row.get("source_name")
        self.docs.append(
            ParsedDocument(
                path=doc_path,
                blocks=[Block(content)],
                metadata=metadata,
                embedding=embedding,
                embedding_model=str(model) if embedding is not None and model else None,
                source_name=source_name if isinstance(source_name, str) and source_name.strip() else None,
            )
        )


def _copy_field(raw: str) -> str | None:
    """COPY text format: ``\\N`` is NULL; backslash escapes as documented for COPY."""
    if raw == "\\N":
        return None
    if "\\" not in raw:
        return raw
    out = _Unescaper()
    for m in _COPY_PIECE.finditer(raw):
        octal, hex2, other = m.groups()
        if octal or hex2 or other is not None:
            _escape_piece(out, octal, hex2, other)
        else:
            out.text(m.group())
    return out.result()


def parse_dump(data: bytes, ctx: ParseContext) -> DumpParseResult:
    """Parse every documents row of a dump; syntax errors that break the file raise QuarantineError."""
    text = decode_text(data)
    table = str(ctx.options.get("table", TABLE)).lower()
    newlines: list[int] = []

    def line_of(pos: int) -> int:
        """Line number for a problem report; the newline index is built on first use only."""
        if not newlines:
            newlines.extend(m.start() for m in re.finditer("\n", text))
            newlines.append(len(text) + 1)
        return bisect.bisect_left(newlines, pos) + 1

    p = _Parser(text)
    rows = _RowBuilder(ctx, line_of)
    ignored = 0
    try:
        while True:
            tok = p.lex.peek()
            if tok.kind == "eof":
                break
            if tok.kind == "punct" and tok.value == ";":
                p.lex.next()
                continue
            if p.is_word(tok, "insert"):
                if not _insert(p, rows, table):
                    ignored += 1
            elif p.is_word(tok, "copy"):
                if not _copy(p, rows, table):
                    ignored += 1
            elif p.is_word(tok, "set"):
                _set(p)
            else:
                p.skip_statement()
                ignored += 1
    except SqlSyntaxError as exc:
        raise QuarantineError(
            f"SQL syntax error at line {line_of(exc.pos)}: {exc}",
            "the dump is damaged or uses syntax the reader does not know; re-export it with pg_dump --inserts",
        ) from None
    return DumpParseResult(rows.docs, rows.problems, rows.rows, ignored)


def _set(p: _Parser) -> None:
    """Track ``SET standard_conforming_strings``: it changes how backslashes in '...' read."""
    p.lex.next()
    name = p.lex.next()
    if name.kind == "ident" and name.value == "standard_conforming_strings":
        while True:
            tok = p.lex.next()
            if tok.kind == "eof" or (tok.kind == "punct" and tok.value == ";"):
                return
            if tok.kind in ("ident", "str") and str(tok.value).lower() in ("on", "off", "true", "false"):
                p.lex.standard_strings = str(tok.value).lower() in ("on", "true")
    elif not (name.kind == "punct" and name.value == ";"):
        p.skip_statement()


def _insert(p: _Parser, rows: _RowBuilder, table: str) -> bool:
    """``INSERT INTO documents [(cols)] VALUES (...), (...) [ON CONFLICT ...];``"""
    p.lex.next()  # INSERT
    into = p.lex.next()
    if not p.is_word(into, "into"):
        raise SqlSyntaxError("expected INTO after INSERT", into.pos)
    name = p.qualified_name().lower()
    if name != table:
        p.skip_statement()
        return False
    tok = p.lex.peek()
    if p.is_word(tok, "as"):
        p.lex.next()
        p.lex.next()
        tok = p.lex.peek()
    cols = list(DEFAULT_COLUMNS)
    if tok.kind == "punct" and tok.value == "(":
        cols = [c.lower() for c in p.column_list()]
    tok = p.lex.next()
    if p.is_word(tok, "overriding"):
        while not p.is_word(tok, "values") and tok.kind != "eof":
            tok = p.lex.next()
    if not p.is_word(tok, "values"):
        rows.rows += 1
        rows.problem(tok.pos, None, "INSERT without VALUES (e.g. INSERT ... SELECT) is not supported")
        p.skip_statement()
        return True
    while True:
        start = p.expect_punct("(").pos
        values: list[Any] = []
        bad: str | None = None
        while True:
            if p.lex.peek().kind == "punct" and p.lex.peek().value == ")":
                break
            try:
                values.append(p.value())
                after = p.lex.peek()
                if not (after.kind == "punct" and after.value in (",", ")")):
                    values.pop()
                    raise SqlSyntaxError(f"unsupported expression near {after.value!r}", after.pos)
            except SqlSyntaxError as exc:
                # One malformed value spoils its row, not the file: skip to the value's end.
                if "unterminated" in str(exc):
                    raise
                bad = bad or f"{exc} at line {rows.line_of(exc.pos)}"
                p.skip_balanced()
                values.append(Opaque("error"))
            sep = p.lex.peek()
            if sep.kind == "punct" and sep.value == ",":
                p.lex.next()
                continue
            if sep.kind == "punct" and sep.value == ")":
                break
            raise SqlSyntaxError("expected ',' or ')' in VALUES", sep.pos)
        p.expect_punct(")")
        if bad:
            rows.rows += 1
            doc_path = values[cols.index("doc_path")] if "doc_path" in cols and len(values) == len(cols) else None
            rows.problem(start, doc_path if isinstance(doc_path, str) else None, f"unreadable value: {bad}")
        else:
            rows.add(cols, values, start)
        sep = p.lex.peek()
        if sep.kind == "punct" and sep.value == ",":
            p.lex.next()
            continue
        p.skip_statement()  # ';' or ON CONFLICT ... / RETURNING ...;
        return True


def _copy(p: _Parser, rows: _RowBuilder, table: str) -> bool:
    """``COPY documents (cols) FROM stdin;`` followed by tab-separated lines up to ``\\.``."""
    p.lex.next()  # COPY
    name = p.qualified_name().lower()
    tok = p.lex.peek()
    cols = list(DEFAULT_COLUMNS)
    if tok.kind == "punct" and tok.value == "(":
        cols = [c.lower() for c in p.column_list()]
    words: list[str] = []
    while True:
        tok = p.lex.next()
        if tok.kind == "eof" or (tok.kind == "punct" and tok.value == ";"):
            break
        words.append(str(tok.value).lower())
    if "stdin" not in words:
        return False  # COPY ... FROM 'file' / TO ...: nothing inline to read
    text = p.text
    nl = text.find("\n", p.lex.pos)
    pos = len(text) if nl < 0 else nl + 1
    wanted = name == table
    while pos < len(text):
        end = text.find("\n", pos)
        line = text[pos:] if end < 0 else text[pos:end]
        line_start = pos
        pos = len(text) if end < 0 else end + 1
        if line == "\\.":
            break
        if wanted:
            values = [_copy_field(f) for f in line.split("\t")]
            rows.add(cols, values, line_start)
    else:
        if wanted:
            raise SqlSyntaxError("COPY data has no terminating \\. line", p.lex.pos)
    p.lex.seek(pos)
    return wanted


def parse(data: bytes, ctx: ParseContext) -> DocumentList:
    """Documents of a doc-server SQL dump, as a :class:`DocumentList` (a list with ``.problems``)."""
    result = parse_dump(data, ctx)
    problems = result.problems
    listed = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_LISTED])
    more = f" (+{len(problems) - MAX_PROBLEMS_LISTED} more)" if len(problems) > MAX_PROBLEMS_LISTED else ""
    if result.rows_seen == 0:
        raise QuarantineError(
            f"no INSERT or COPY rows for table '{ctx.options.get('table', TABLE)}' in the SQL dump",
            "export the doc-server's documents table, e.g. pg_dump --data-only --inserts -t documents",
        )
    if not result.documents:
        raise QuarantineError(f"no usable rows in SQL dump: {listed}{more}", "fix the rows or re-export the dump")
    if problems and ctx.options.get("on_row_error") == "quarantine":
        raise QuarantineError(
            f"{len(problems)} bad rows in SQL dump: {listed}{more}",
            "fix the rows, or drop on_row_error: quarantine to load the good rows",
        )
    for problem in problems[:MAX_PROBLEMS_LISTED]:
        log.warning("%s: %s", ctx.rel_path, problem)
    if len(problems) > MAX_PROBLEMS_LISTED:
        log.warning("%s: %d more row problems (see DocumentList.problems)", ctx.rel_path,
                    len(problems) - MAX_PROBLEMS_LISTED)
    return DocumentList(result.documents, problems)
