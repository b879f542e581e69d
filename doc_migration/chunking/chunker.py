"""Pack a document's blocks into chunks of at most ``max_tokens`` cl100k tokens.

Why this shape: the doc-server answers with whole chunks, so a chunk should be a readable unit.
Blocks are packed whole; a chunk boundary prefers a heading change; a code block is split only
when it alone exceeds the limit (then at line boundaries). Every chunk is guaranteed to fit the
embedding model's 8191-token input limit, whatever the configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..manifest import ChunkingConfig
from ..sources.base import Block, ParsedDocument
from ..tokens import PIECE_CHARS, count_tokens, prefix_within_tokens, tail_within_tokens


@dataclass(frozen=True)
class Chunk:
    text: str
    heading_path: tuple[str, ...]
    token_count: int
    index: int


@dataclass(frozen=True)
class _Piece:
    text: str
    heading_path: tuple[str, ...]
    tokens: int
    kind: str


def _fit_prefix(text: str, limit: int) -> int:
    """Length in characters of a longest prefix of ``text`` (at token granularity) within ``limit``
    tokens; never splits a character, unlike cutting token ids, which can fall inside a multi-byte
    UTF-8 sequence.

    One encoding gives the cut; re-tokenising a prefix can merge differently, so the result is
    verified and, only if that fails, found by the counting binary search.
    """
    head = prefix_within_tokens(text, limit)
    if head is not None and head and (head is text or count_tokens(head) <= limit):
        return len(head)
    return _search_prefix(text, limit)


def _search_prefix(text: str, limit: int) -> int:
    """Binary search for :func:`_fit_prefix` (a count per probe: the slow, always-correct path)."""
    total = count_tokens(text)
    if total <= limit:
        return len(text)
    lo, hi = 1, len(text)
    guess = max(1, min(len(text) - 1, int(len(text) * limit / max(1, total))))
    while lo < hi:  # binary search around the proportional guess
        mid = guess if lo <= guess < hi else (lo + hi + 1) // 2
        guess = -1
        if count_tokens(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return max(1, lo)


def _window(text: str, limit: int, overlap: int) -> list[str]:
    """Last resort for a single over-long line: windows of at most ``limit`` tokens, with overlap."""
    out: list[str] = []
    start = 0
    while start < len(text):
        size = _fit_prefix(text[start:start + limit * 12], limit)
        out.append(text[start:start + size])
        if start + size >= len(text):
            break
        back = len(_tail(text[start:start + size], overlap)[0]) if overlap else 0
        start += max(1, size - back)
    return [o for o in out if o]


def _split_block(block: Block, limit: int, overlap: int) -> list[tuple[str, int]]:
    """Split an over-long block at paragraph, then line boundaries, never exceeding ``limit``;
    returns ``(text, tokens)`` parts (each unit is counted once, and so is each part)."""
    separators = ["\n"] if block.kind == "code" else ["\n\n", "\n", ". "]
    units = [(block.text, count_tokens(block.text))]
    for sep in separators:
        next_units: list[tuple[str, int]] = []
        for unit, n in units:
            if n <= limit:
                next_units.append((unit, n))
            else:
                parts = unit.split(sep)
                for i, p in enumerate(parts):
                    part = p + (sep if i < len(parts) - 1 and sep == ". " else "")
                    next_units.append((part, count_tokens(part)))
        units = next_units
    out: list[str] = []
    buf: list[str] = []
    buf_tokens = 0
    joiner = "\n"
    for unit, n in units:
        if n > limit:
            if buf:
                out.append(joiner.join(buf))
                buf, buf_tokens = [], 0
            out.extend(_window(unit, limit, overlap))
            continue
        if buf and buf_tokens + n + 1 > limit:
            out.append(joiner.join(buf))
            buf, buf_tokens = [], 0
        buf.append(unit)
        buf_tokens += n + 1
    if buf:
        out.append(joiner.join(buf))
    return [(o, count_tokens(o)) for o in out if o.strip()]


def _tail(text: str, overlap: int, tokens: int | None = None) -> tuple[str, int]:
    """The end of ``text`` within ``overlap`` tokens, starting at a word boundary when possible,
    with its token count. ``tokens``, when known, is ``count_tokens(text)``.

    Runs at every chunk boundary: one encoding of the text's end and one count of the result
    (plus a re-count per trimmed word in the rare case re-tokenising the tail merges differently).
    """
    if overlap <= 0:
        return "", 0
    if tokens is not None and tokens <= overlap:
        return text, tokens
    tail = tail_within_tokens(text, overlap)
    if tail is None:  # text the fast path refuses: search by counting
        if tokens is None:
            tokens = count_tokens(text)
        if tokens <= overlap:
            return text, tokens
        tail = text[-_search_prefix(text[::-1], overlap):]  # reversed text: counts are close enough
    if tail == text:
        return text, count_tokens(text) if tokens is None else tokens
    cut = tail.find(" ")
    if 0 <= cut < len(tail) // 2:
        tail = tail[cut + 1:]
    n = count_tokens(tail)
    while tail and n > overlap:
        cut = tail.find(" ")
        tail = tail[cut + 1:] if 0 <= cut < len(tail) // 2 else tail[1:]
        n = count_tokens(tail)
    return tail, n


_JOIN = "\n\n"  # between the pieces of a chunk; one cl100k token on its own
# A safe split point q of a text X: X[q-1] an ASCII letter or digit and X[q] an ASCII character that
# is neither, or X[q-1] a newline and X[q] not whitespace. No cl100k pre-token spans q, and scanning
# X[:q] alone yields the same pre-tokens as X up to q (the only end-sensitive patterns, ``\s++$``
# and ``\s+(?!\S)``, need whitespace before q), so count(X) == count(X[:q]) + count(X[q:]).
_SAFE_SPLIT = re.compile(r".*(?:[A-Za-z0-9](?=[^A-Za-z0-9\x80-\U0010ffff])|\n(?=\S))", re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_NON_ALNUM = "".join(chr(c) for c in range(128) if not chr(c).isalnum())
_DELTA_SCAN = 256  # characters searched for a safe split point at the end of a piece
_MAX_DELTA_COUNT = 4096  # beyond this, a piece without a safe split point is not re-counted
_delta_cache: dict[str, int] = {}


def _join_delta(text: str) -> int | None:
    """``count(text + _JOIN) - count(text)``, from the text after its last safe split point (see
    ``_SAFE_SPLIT``); ``None`` when that would mean re-counting a long text.

    Usually the piece ends with a letter or digit (the join is one more token) or with a short run
    of ASCII punctuation after one (``.``, ``):``...), whose delta is memoised.
    """
    head = text.rstrip(_ASCII_NON_ALNUM)
    if head and head[-1].isascii():  # head[-1] is a letter or digit: a safe split point
        suffix = text[len(head):]
        if not suffix:
            return 1
    else:
        end = text[-_DELTA_SCAN:]
        m = _SAFE_SPLIT.match(end)
        if m is not None:
            suffix = end[m.end():]
        elif len(text) <= _MAX_DELTA_COUNT:
            suffix = text
        else:
            return None
    delta = _delta_cache.get(suffix)
    if delta is None:
        delta = count_tokens(suffix + _JOIN) - count_tokens(suffix)
        if len(suffix) <= 32 and len(_delta_cache) < 10_000:
            _delta_cache[suffix] = delta
    return delta


def _joined_count(group: list[_Piece], text: str) -> int | None:
    """Exact ``count_tokens(text)`` of ``_JOIN.join(group)`` from the pieces' counts, or ``None``
    when it must be counted.

    Each join is followed by a piece that starts with a non-space (after an indent of spaces and
    tabs, which cannot merge with the join's newlines: ``\\s*[\\r\\n]`` stops at the last newline),
    i.e. a safe split point (see ``_SAFE_SPLIT``), so the chunk's count is the sum over
    ``piece + _JOIN`` and the last piece;
    ``count(piece + _JOIN)`` is ``piece.tokens`` plus a delta that depends on the piece's end only.
    Long chunks (cut into pieces by ``count_tokens``) and lone surrogates (sanitised before
    counting) are counted instead.
    """
    if len(group) == 1:
        return group[0].tokens
    if len(text) > PIECE_CHARS or (not text.isascii() and _SURROGATE.search(text)):
        return None
    total = group[-1].tokens
    for prev, nxt in zip(group, group[1:], strict=False):
        head = nxt.text.lstrip(" \t")  # an indent after the join's newline is a pre-token of its own
        if not head or head[0].isspace():
            return None
        delta = _join_delta(prev.text)
        if delta is None:
            return None
        total += prev.tokens + delta
    return total


def chunk_document(doc: ParsedDocument, cfg: ChunkingConfig) -> list[Chunk]:
    limit = min(cfg.max_tokens, cfg.hard_max_tokens)
    pieces: list[_Piece] = []
    for block in doc.blocks:
        text = block.text.strip("\n")
        if not text.strip():
            continue
        n = count_tokens(text)
        if n <= limit:
            pieces.append(_Piece(text, block.heading_path, n, block.kind))
        else:
            for part, part_tokens in _split_block(Block(text, block.heading_path, block.kind), limit,
                                                  cfg.overlap_tokens):
                pieces.append(_Piece(part, block.heading_path, part_tokens, block.kind))

    # (text, heading path, token count when the chunk is one piece and so already counted)
    chunks: list[tuple[str, tuple[str, ...], int | None]] = []
    cur: list[_Piece] = []
    cur_tokens = 0
    min_at_heading = limit // 3

    def joined(group: list[_Piece]) -> tuple[str, tuple[str, ...], int | None]:
        text = _JOIN.join(p.text for p in group)
        return text, group[0].heading_path, _joined_count(group, text)

    def flush() -> None:
        nonlocal cur, cur_tokens
        if cur:
            chunks.append(joined(cur))
        last = cur[-1] if cur else None
        cur, cur_tokens = [], 0
        if last is not None and cfg.overlap_tokens and last.kind == "text":
            tail, t = _tail(last.text, cfg.overlap_tokens, last.tokens)
            if tail.strip() and tail != last.text:
                cur, cur_tokens = [_Piece(tail, last.heading_path, t, "overlap")], t

    for piece in pieces:
        heading_changed = bool(cur) and piece.heading_path != cur[-1].heading_path
        only_overlap = bool(cur) and all(p.kind == "overlap" for p in cur)
        if only_overlap and (heading_changed or cur_tokens + piece.tokens + 2 > limit):
            cur, cur_tokens = [], 0
        elif cur and (cur_tokens + piece.tokens + 2 > limit or (heading_changed and cur_tokens >= min_at_heading)):
            flush()
            if cur and (piece.heading_path != cur[-1].heading_path or cur_tokens + piece.tokens + 2 > limit):
                cur, cur_tokens = [], 0
        cur.append(piece)
        cur_tokens += piece.tokens + 2
    if cur and not all(p.kind == "overlap" for p in cur):
        chunks.append(joined(cur))

    out: list[Chunk] = []
    for text, path, known in chunks:
        n = count_tokens(text) if known is None else known  # every chunk's count is exact, counted once
        if n > cfg.hard_max_tokens:  # joins pushed it over the model limit: split hard
            for part in _window(text, cfg.hard_max_tokens, 0):
                out.append(Chunk(part, path, count_tokens(part), len(out)))
        else:
            out.append(Chunk(text, path, n, len(out)))
    return out
