"""Contracts shared by every parser: what a parser receives, returns, and how it refuses input.

A parser is a pure function ``parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]``.
It never touches the database or the network; it raises :class:`QuarantineError` for input it
cannot or must not load, and the pipeline records that as a quarantine row and goes on.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

BlockKind = Literal["text", "code", "table"]


class QuarantineError(Exception):
    """Input refused with a reason an operator can act on.

    ``reason`` is a short machine-friendly phrase (``"empty file"``, ``"invalid JSON"``...),
    ``hint`` says what to do about it. ``str(exc)`` combines both.
    """

    def __init__(self, reason: str, hint: str = "", stage: str = "parse") -> None:
        self.reason = reason
        self.hint = hint
        self.stage = stage
        super().__init__(f"{reason}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class Block:
    """A structural unit of a document; the chunker packs blocks and never splits a code block
    unless it alone exceeds the chunk size."""

    text: str
    heading_path: tuple[str, ...] = ()
    kind: BlockKind = "text"


@dataclass
class ParsedDocument:
    """One logical document (a file, or one OpenAPI operation, or one exported record).

    ``path`` is the document's identity inside its source (e.g. ``guide/intro.md`` or
    ``api/openapi.yaml#GET /pets``); row ids derive from it, so it must be stable.
    ``embedding`` is set only when a previous database's vector is carried over; such documents
    are stored as one row, unchunked, and never re-embedded.
    """

    path: str
    blocks: list[Block]
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: Sequence[float] | None = None
    embedding_model: str | None = None
    source_name: str | None = None  # override of the manifest's source_name (SQL dumps, legacy DBs)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks if b.text.strip())


@dataclass(frozen=True)
class ParseLimits:
    """Bounds that keep hostile input from exhausting time or memory (the manifest's ``limits:``;
    docs/security.md explains each one).

    ``max_file_bytes``: bigger files are refused at scan time, before a byte is read.
    ``max_json_depth``: nesting of JSON/YAML/notebooks, checked before any recursive decoder runs.
    ``max_yaml_aliases``: YAML alias uses (the expanded size is bounded separately).
    ``parse_timeout_s``: wall time per file; enforced by killing the parser process, so it holds
    for a parser stuck inside C code (PDFium, libyaml) too.
    ``max_pdf_pages``: pages read per PDF; the rest are skipped and the document marked truncated.
    ``max_parse_memory_mb``: address space a parser process may add while parsing one file
    (``RLIMIT_AS`` above its size at start-up); a file that needs more is refused.
    """

    max_file_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 200
    max_yaml_aliases: int = 1000
    parse_timeout_s: float = 120.0
    max_pdf_pages: int = 2000
    max_parse_memory_mb: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_json_depth", "max_yaml_aliases", "max_pdf_pages", "max_parse_memory_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be a positive integer, got {getattr(self, name)}")


@dataclass(frozen=True)
class ParseContext:
    rel_path: str
    doc_type: str
    source_name: str
    fmt: str
    options: Mapping[str, Any] = field(default_factory=dict)
    limits: ParseLimits = field(default_factory=ParseLimits)


ParserFn = Callable[[bytes, ParseContext], list[ParsedDocument]]

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def sniff_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as every other byte NUL in ASCII-heavy text."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even_nul = sample[0::2].count(0) / max(1, len(sample[0::2]))
    odd_nul = sample[1::2].count(0) / max(1, len(sample[1::2]))
    if odd_nul > 0.4 and even_nul < 0.05:
        return "utf-16-le"
    if even_nul > 0.4 and odd_nul < 0.05:
        return "utf-16-be"
    return None


# charset_normalizer's "chaos" (mess ratio, 0..1) above which a guess is not trusted; its own cut-off is 0.2.
MAX_GUESS_CHAOS = 0.1
# Valid multi-byte UTF-8 sequences: a file holding these *and* invalid bytes is mixed or corrupt,
# not a legacy single-byte encoding (Latin-1 text almost never contains "Ã©"-like pairs).
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


_HIGH_BYTES = bytes(range(128, 256))


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with some corrupt bytes (or mixed encodings): >= 10 % of non-ASCII runs are valid UTF-8.

    Legacy text matches the UTF-8 pattern only by accident (a cp1251 capital before ``ё``), far
    below that share; a guess would misread the valid part of a really mixed file.
    """
    valid = _UTF8_MULTIBYTE.findall(data)
    if not valid:
        return False
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    invalid = high - sum(len(v) for v in valid)
    return len(valid) >= 0.1 * (len(valid) + invalid)


def _first_invalid_utf8(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return -1


def _canonical(enc: str) -> str:
    """Python's canonical codec name (``latin_1`` -> ``iso8859-1``), so metadata is consistent."""
    try:
        return codecs.lookup(enc).name
    except LookupError:
        return enc


def _guess_legacy(data: bytes) -> str | None:
    """A single-byte (or other non-UTF) encoding charset_normalizer is confident about, or None.

    Ties go to Windows-1252: on short Western text cp1250/cp1257 score the same and would turn
    ``ï`` into ``ď``; cp1252 is by far the most common legacy encoding of documentation.
    """
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a declared dependency; degrade to refusing
        return None
    try:
        matches = list(from_bytes(data))
    except Exception:  # noqa: BLE001 - a detector bug must become a refusal, not a crash
        return None
    matches = [m for m in matches if m.chaos <= MAX_GUESS_CHAOS]
    if not matches:
        return None
    best = min(matches, key=lambda m: (m.chaos, -m.coherence))
    for m in matches:
        if _canonical(m.encoding) == "cp1252" and m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.05:
            return "cp1252"
    return _canonical(best.encoding)


def decode_text_with_encoding(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode bytes the way a careful reader would and say which encoding was used, or quarantine.

    Order: BOM (UTF-8/16/32), sniffed BOM-less UTF-16, the declared charset, strict UTF-8, then a
    confident charset_normalizer guess (Latin-1, Windows-125x, KOI8...). A file that mixes valid
    UTF-8 with invalid bytes is refused rather than guessed: no single encoding reads it right.
    NUL bytes are refused because PostgreSQL text cannot hold them. Line endings become ``\\n``.
    The encoding is returned as Python's canonical codec name (``utf-8``, ``cp1252``...).
    """
    if not data.strip():
        raise QuarantineError("empty file", "the file has no content; remove it or exclude it in the manifest")
    text: str | None = None
    used = "utf-8"
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(enc)
            except UnicodeDecodeError as exc:
                raise QuarantineError(
                    f"undecodable bytes: starts with a {enc} byte-order mark but byte {exc.start} is invalid",
                    "re-save the file in UTF-8",
                ) from None
            used = enc
            break
    if text is None:
        utf16 = sniff_utf16(data)
        candidates = [c for c in (utf16, declared, "utf-8") if c]
        for enc in candidates:
            try:
                text = data.decode(enc)
                used = enc
                break
            except (UnicodeDecodeError, LookupError):
                continue
        if text is None:
            bad = _first_invalid_utf8(data)
            guess = None if _mostly_utf8(data) else _guess_legacy(data)
            if guess is None:
                raise QuarantineError(
                    f"undecodable bytes: invalid UTF-8 at byte {bad} and no other encoding fits with confidence",
                    "re-save the file in UTF-8 or declare its encoding",
                ) from None
            try:
                text = data.decode(guess)
            except (UnicodeDecodeError, LookupError):
                raise QuarantineError(
                    f"undecodable bytes: invalid UTF-8 at byte {bad} and no other encoding fits with confidence",
                    "re-save the file in UTF-8 or declare its encoding",
                ) from None
            used = guess
    if "\x00" in text:
        raise QuarantineError(
            f"NUL byte at character {text.index(chr(0))}: binary data or a mis-encoded file",
            "PostgreSQL text cannot store NUL; convert the file to UTF-8 text or exclude it",
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise QuarantineError("empty file", "the file holds only whitespace; remove it or exclude it in the manifest")
    return text, _canonical(used)


def decode_text(data: bytes, declared: str | None = None) -> str:
    """:func:`decode_text_with_encoding` for callers that do not record the encoding."""
    return decode_text_with_encoding(data, declared)[0]


def decode_text_file(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a file of a text format: binary content under a text extension is refused
    first (its bytes would otherwise be guessed into some legacy encoding)."""
    if looks_binary(data):
        raise QuarantineError(
            "binary content in a text file", "the file holds control bytes; exclude it or fix its extension"
        )
    return decode_text_with_encoding(data)


def encoding_metadata(encoding: str) -> dict[str, str]:
    """``{"encoding": ...}`` for row metadata when the file was not UTF-8 (the common case stays quiet)."""
    return {} if encoding == "utf-8" else {"encoding": encoding}


# C0 control bytes other than TAB, LF, VT, FF and CR: rare in text, common in binary formats.
_CONTROL_BYTES = bytes(b for b in range(32) if b < 9 or 13 < b)


def looks_binary(data: bytes) -> bool:
    """A text extension on binary content: many control bytes in the first 8 KiB.

    Counted with ``bytes.translate`` (C speed, ~100x a Python loop): parsers call this on every file.
    """
    sample = data[:8192]
    if not sample:
        return False
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or sniff_utf16(sample):
        return False
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    ratio = controls / len(sample)
    # Random bytes hold ~10.5 % control bytes, too close to 10 % to decide alone (1 file in 30 slipped
    # through); they also hold NULs, which text (UTF-16 is handled above) has at most as a stray one.
    return ratio > 0.1 or (ratio > 0.05 and sample.count(0) > 1)
