"""cl100k_base token counting and truncation (chunking, batching, rate limits), fully offline.

Why this exists: the embeddings API limits are expressed in cl100k_base tokens (8191 per input,
300,000 per request, and the account's tokens-per-minute budget), so batching and rate limiting
must count exactly what the server counts. ``bpe_openai`` bundles the ranks (tiktoken would
download them at run time, which this project cannot do).

``bpe_openai`` refuses one input of about a million characters and more than 200,000 tokens, so
long texts are encoded in pieces of at most :data:`PIECE_CHARS` characters, cut at a newline or a
space when one is near. A cut at whitespace is (almost always) a pre-tokeniser boundary too, so
the piecewise count equals the one-shot count; at worst it differs by a token per cut. Embedding
inputs are chunked far below the piece size, so their counts are exact.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from bpe_openai import Encoding
    from bpe_openai._bindings import PyTokenizer

ENCODING_NAME = "cl100k_base"
# 40,000 characters stay under the wrapper's 200,000-token chunk limit even for text made only of
# 4-byte UTF-8 characters (a token is at least one byte), and far under its 1M-character refusal.
PIECE_CHARS = 40_000

_lock = threading.Lock()
_encoding: Encoding | None = None
_counter: PyTokenizer | None = None


def get_encoding() -> Encoding:
    """The process-wide cl100k_base encoder (loading it takes ~50 ms; it is thread-safe)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                import bpe_openai

                _encoding = bpe_openai.get_encoding(ENCODING_NAME)
    return _encoding


def _count_backend() -> PyTokenizer:
    """The Rust tokenizer's ``count`` (no token list is built): ~3x faster for short texts,
    which matters when every input of every request is counted."""
    global _counter
    if _counter is None:
        with _lock:
            if _counter is None:
                _counter = _load_bindings().tokenizer_for_encoding(ENCODING_NAME)
    return _counter


def _load_bindings() -> Any:
    """The ``bpe_openai._bindings`` extension module, without running ``bpe_openai/__init__``.

    Why: that ``__init__`` eagerly decodes the ranks of three encodings in Python (~1 s of CPU,
    paid again by every parser worker process) although the Rust tokenizer embeds its own.
    The module is registered under its real name, so a later ``import bpe_openai`` (for
    :func:`get_encoding`) reuses it instead of initialising the extension twice.
    """
    import importlib.machinery
    import importlib.util
    import sys

    name = "bpe_openai._bindings"
    if name in sys.modules:
        return sys.modules[name]
    try:
        package = importlib.util.find_spec("bpe_openai")  # locates the package, runs nothing
        locations = list(package.submodule_search_locations or []) if package else []
        spec = importlib.machinery.PathFinder.find_spec(name, locations)
        if spec is None or spec.loader is None:
            raise ImportError(name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:
        from bpe_openai import _bindings

        return _bindings
    sys.modules[name] = module
    return module


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """Cut ``text`` into pieces of at most ``size`` characters, preferably before whitespace."""
    if len(text) <= size:
        yield text
        return
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            floor = start + size // 2
            cut = text.rfind("\n", floor, end)
            if cut <= start:
                cut = text.rfind(" ", floor, end)
            if cut > start:
                end = cut  # the newline/space opens the next piece, as the pre-tokeniser would
        yield text[start:end]
        start = end


def _encode_piece(piece: str) -> list[int]:
    """Encode one piece as ordinary text (special-token lookalikes such as ``<|endoftext|>`` in
    documentation are plain text to the embeddings API), halving it if the wrapper refuses it."""
    from bpe_openai import TokenLimitError

    try:
        return get_encoding().encode_ordinary(piece)
    except (TokenLimitError, ValueError):
        if len(piece) < 2:
            raise
        ids: list[int] = []
        for sub in _pieces(piece, max(1, len(piece) // 2)):
            ids.extend(_encode_piece(sub))
        return ids


def _count_piece(piece: str) -> int:
    try:
        return int(_count_backend().count(piece))
    except (UnicodeError, ValueError):  # lone surrogates: the wrapper sanitises them first
        return len(_encode_piece(piece))


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (any length)."""
    ids: list[int] = []
    for piece in _pieces(text):
        ids.extend(_encode_piece(piece))
    return ids


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text``; safe for texts of any length."""
    if len(text) <= PIECE_CHARS:  # the common case, without the generator: chunking counts every block
        return _count_piece(text) if text else 0
    return sum(_count_piece(piece) for piece in _pieces(text))


def _decode_suffix(ids: list[int]) -> str:
    """Text of the longest suffix of ``ids`` that decodes to whole characters (a cut can fall
    inside a multi-byte UTF-8 sequence; a character is at most 4 tokens)."""
    backend = _count_backend()
    for skip in range(min(4, len(ids))):
        try:
            return str(backend.decode(ids[skip:]))
        except ValueError:
            continue
    return ""


def _decode_prefix(ids: list[int]) -> str:
    """Text of the longest prefix of ``ids`` that decodes to whole characters."""
    backend = _count_backend()
    for drop in range(min(4, len(ids))):
        try:
            return str(backend.decode(ids[:len(ids) - drop]))
        except ValueError:
            continue
    return ""


def tail_within_tokens(text: str, n: int) -> str | None:
    """A suffix of ``text`` of about ``n`` tokens (at token granularity, whole characters), from
    one encoding of the text's end instead of a search that counts at every probe.

    Not re-counted: callers verify. ``None`` when the fast path cannot tell (text the Rust
    tokenizer refuses, e.g. lone surrogates), so callers fall back to counting.
    """
    if n <= 0 or not text:
        return ""
    span = max(64, n * 8)  # ~4 characters per token in prose, more in whitespace-heavy code
    backend = _count_backend()
    try:
        while True:
            window = text[-span:]
            ids = backend.encode(window)
            if len(ids) > n or len(window) == len(text):
                break
            span *= 4
    except (UnicodeError, ValueError):
        return None
    if len(ids) <= n:
        return text
    tail = _decode_suffix(ids[-n:])
    return window[len(window) - len(tail):] if tail else ""


def prefix_within_tokens(text: str, n: int) -> str | None:
    """A prefix of ``text`` of about ``n`` tokens from one encoding (see :func:`tail_within_tokens`;
    the same caveats apply)."""
    if n <= 0 or not text:
        return ""
    backend = _count_backend()
    ids: list[int] = []
    try:
        for piece in _pieces(text):
            ids.extend(backend.encode(piece))
            if len(ids) > n:
                break
    except (UnicodeError, ValueError):
        return None
    if len(ids) <= n:
        return text
    return text[:len(_decode_prefix(ids[:n]))]


def truncate_to_tokens(text: str, n: int) -> str:
    """The longest prefix of ``text`` (at token granularity) that has at most ``n`` tokens.

    A cut that falls inside a multi-byte character drops the partial character instead of
    producing U+FFFD, and the result is re-counted so callers can rely on
    ``count_tokens(result) <= n`` (re-tokenising a prefix can merge differently).
    """
    if n <= 0 or not text:
        return ""
    if len(text.encode("utf-8", "surrogatepass")) <= n:  # a token is at least one byte
        return text
    ids: list[int] = []
    for piece in _pieces(text):
        ids.extend(_encode_piece(piece))
        if len(ids) > n:
            break
    if len(ids) <= n:
        return text
    enc = get_encoding()
    keep = n
    while keep > 0:
        out = enc.decode_bytes(ids[:keep]).decode("utf-8", errors="ignore")
        if count_tokens(out) <= n:
            return out
        keep -= 1
    return ""
