"""cl100k_base token counting, offline (``bpe-openai`` bundles the ranks; tiktoken would download).

The tokenizer refuses single inputs over about a million characters, so long texts are counted
in pieces cut at line boundaries; the sum differs from one-shot counting by at most a token per cut.
"""

from __future__ import annotations

from functools import cache
from typing import Any

PIECE_CHARS = 200_000


@cache
def _tokenizer() -> Any:
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding("cl100k_base")


def _pieces(text: str) -> list[str]:
    if len(text) <= PIECE_CHARS:
        return [text]
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + PIECE_CHARS)
        if end < len(text):
            cut = text.rfind("\n", start + PIECE_CHARS // 2, end)
            end = cut + 1 if cut > 0 else end
        out.append(text[start:end])
        start = end
    return out


def count_tokens(text: str) -> int:
    tok = _tokenizer()
    return sum(tok.count(p) for p in _pieces(text))


def encode(text: str) -> list[int]:
    tok = _tokenizer()
    ids: list[int] = []
    for piece in _pieces(text):
        ids.extend(tok.encode(piece))
    return ids


def decode(ids: list[int]) -> str:
    return str(_tokenizer().decode(ids))


def truncate_to_tokens(text: str, limit: int) -> str:
    ids = encode(text)
    return text if len(ids) <= limit else decode(ids[:limit])
