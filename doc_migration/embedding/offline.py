"""The offline embedder: signed feature hashing of character n-grams, a whole batch at a time.

Text is lower-cased and every run of non-word characters becomes one space, so case and
punctuation do not matter; the features are the byte 4-grams of that normalised text (word pieces
and the joints between neighbouring words). It is lexical, not semantic: texts
sharing words get similar vectors, which is enough to exercise every stage (dimensions, norms, the
HNSW index, self-retrieval) with no network, no model download and no cost.

Why n-grams of bytes and not tokens: the whole batch is hashed with a handful of numpy passes
(~25 MB/s of text on one core, 6x the token-based v1), so the stand-in for the API never dominates a run; it is cheaper
to recompute than to store, which is why it is not cached (``cacheable = False``).
Deterministic across processes and machines (no Python ``hash()``), L2-normalised.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..config import OFFLINE_MODEL
from .base import EmbedStats

_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits of code * _MULT are well mixed
_SPACE = 0x20
N = 4  # n-gram length in bytes
# Bytes that belong to words: ASCII letters and digits, '_' and every byte of a non-ASCII character.
_WORD_BYTE = np.zeros(256, dtype=bool)
for _b in b"abcdefghijklmnopqrstuvwxyz0123456789_":
    _WORD_BYTE[_b] = True
_WORD_BYTE[0x80:] = True


def _normalised(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts as one byte array (non-word runs collapsed to one space) and, per byte, the index
    of the text it belongs to."""
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    # Every text is followed by one space, which belongs to it: a text's features never depend on
    # its neighbours in the batch.
    raw = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    owner = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    word = _WORD_BYTE[raw]
    data = np.where(word, raw, np.uint8(_SPACE))
    keep = word.copy()
    keep[1:] |= word[:-1]  # the first non-word byte after a word becomes its space
    return data[keep], owner[keep]


class OfflineEmbedder:
    model = OFFLINE_MODEL
    cacheable = False  # recomputing costs less than storing and reading back 12 kB per vector

    def __init__(self, dims: int = 3072) -> None:
        self.dims = dims
        self.stats = EmbedStats()

    def _features(self, data: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat (text, bucket) indexes and signs of every byte 4-gram inside one text."""
        if data.size < N:
            return np.empty(0, dtype=np.int64), np.empty(0)
        d = data.astype(np.uint64)
        code = (d[:-3] << np.uint64(24)) | (d[1:-2] << np.uint64(16)) | (d[2:-1] << np.uint64(8)) | d[3:]
        same = owner[:-3] == owner[3:]
        with np.errstate(over="ignore"):
            top = ((code[same] * _MULT) >> np.uint64(32)).astype(np.int64)
        flat = owner[:-3][same] * self.dims + (top & 0x7FFFFFFF) % self.dims
        sign = np.where(top & 0x80000000, -1.0, 1.0)
        return flat, sign

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        out = np.zeros((len(texts), self.dims), dtype=np.float64)
        if texts:
            data, owner = _normalised(texts)
            flat, sign = self._features(data, owner)
            out = np.bincount(flat, weights=sign,
                              minlength=len(texts) * self.dims).astype(np.float64, copy=False).reshape(len(texts), self.dims)
            norms = np.linalg.norm(out, axis=1)
            empty = norms == 0.0  # no features (too short, or all cancelled): a fixed unit vector
            out[empty, 0] = 1.0
            norms[empty] = 1.0
            out /= norms[:, None]
        self.stats.inputs += len(texts)
        self.stats.seconds += time.perf_counter() - start
        return out.astype(np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
