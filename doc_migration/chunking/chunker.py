"""Pack a document's blocks into chunks of at most ``max_tokens`` cl100k tokens.

Why this shape: the doc-server answers with whole chunks, so a chunk should be a readable unit.
Blocks are packed whole; a chunk boundary prefers a heading change; a code block is split only
when it alone exceeds the limit (then at line boundaries). Every chunk is guaranteed to fit the
embedding model's 8191-token input limit, whatever the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..manifest import ChunkingConfig
from ..sources.base import Block, ParsedDocument
from ..tokens import count_tokens


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
    """Length in characters of the longest prefix of ``text`` within ``limit`` tokens (never splits a
    character, unlike cutting token ids, which can fall inside a multi-byte UTF-8 sequence)."""
    if count_tokens(text) <= limit:
        return len(text)
    lo, hi = 1, len(text)
    guess = max(1, min(len(text) - 1, int(len(text) * limit / max(1, count_tokens(text)))))
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
        back = len(_tail(text[start:start + size], overlap)) if overlap else 0
        start += max(1, size - back)
    return [o for o in out if o]


def _split_block(block: Block, limit: int, overlap: int) -> list[str]:
    """Split an over-long block at paragraph, then line boundaries, never exceeding ``limit``."""
    separators = ["\n"] if block.kind == "code" else ["\n\n", "\n", ". "]
    units = [block.text]
    for sep in separators:
        next_units: list[str] = []
        for unit in units:
            if count_tokens(unit) <= limit:
                next_units.append(unit)
            else:
                parts = unit.split(sep)
                next_units.extend(p + (sep if i < len(parts) - 1 and sep == ". " else "") for i, p in enumerate(parts))
        units = next_units
    out: list[str] = []
    buf: list[str] = []
    buf_tokens = 0
    joiner = "\n" if block.kind == "code" else "\n"
    for unit in units:
        n = count_tokens(unit)
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
    return [o for o in out if o.strip()]


def _tail(text: str, overlap: int) -> str:
    """The end of ``text`` within ``overlap`` tokens, starting at a word boundary when possible."""
    if overlap <= 0:
        return ""
    if count_tokens(text) <= overlap:
        return text
    size = _fit_prefix(text[::-1], overlap)  # reversed text: token counts are close enough for a tail
    tail = text[-size:]
    while tail and count_tokens(tail) > overlap:
        tail = tail[1:]
    cut = tail.find(" ")
    return tail[cut + 1:] if 0 <= cut < len(tail) // 2 else tail


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
            for part in _split_block(Block(text, block.heading_path, block.kind), limit, cfg.overlap_tokens):
                pieces.append(_Piece(part, block.heading_path, count_tokens(part), block.kind))

    chunks: list[tuple[str, tuple[str, ...]]] = []
    cur: list[_Piece] = []
    cur_tokens = 0
    min_at_heading = limit // 3

    def flush() -> None:
        nonlocal cur, cur_tokens
        if cur:
            chunks.append(("\n\n".join(p.text for p in cur), cur[0].heading_path))
        last = cur[-1] if cur else None
        cur, cur_tokens = [], 0
        if last is not None and cfg.overlap_tokens and last.kind == "text":
            tail = _tail(last.text, cfg.overlap_tokens)
            if tail.strip() and tail != last.text:
                t = count_tokens(tail)
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
        chunks.append(("\n\n".join(p.text for p in cur), cur[0].heading_path))

    out: list[Chunk] = []
    for text, path in chunks:
        n = count_tokens(text)
        if n > cfg.hard_max_tokens:  # joins pushed it over the model limit: split hard
            for part in _window(text, cfg.hard_max_tokens, 0):
                out.append(Chunk(part, path, count_tokens(part), len(out)))
        else:
            out.append(Chunk(text, path, n, len(out)))
    return out
