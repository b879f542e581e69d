"""The offline embedder: signed feature hashing of cl100k token unigrams and bigrams.

Text is reduced to lower-case words first, so case and punctuation do not matter.
It is lexical, not semantic: texts sharing words get similar vectors, which is enough to exercise
every stage (dimensions, norms, the HNSW index, self-retrieval) with no network, no model download
and no cost. Deterministic across processes and machines (no Python ``hash()``), L2-normalised.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import numpy as np

from ..config import OFFLINE_MODEL
from ..tokens import encode
from .base import EmbedStats

_WORD = re.compile(r"\w+")
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads token ids evenly over buckets and signs."""
    x = (x ^ (x >> np.uint64(30))) * _M2
    x = (x ^ (x >> np.uint64(27))) * _M1
    return x ^ (x >> np.uint64(31))


class OfflineEmbedder:
    model = OFFLINE_MODEL

    def __init__(self, dims: int = 3072) -> None:
        self.dims = dims
        self.stats = EmbedStats()

    def embed_one(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        ids = np.asarray(encode(" " + " ".join(words)) if words else [], dtype=np.uint64)
        if ids.size == 0:
            ids = np.asarray([len(text)], dtype=np.uint64)
        with np.errstate(over="ignore"):
            feats = ids * _M1
            weights = np.ones(ids.size)
            if ids.size > 1:
                feats = np.concatenate([feats, (ids[:-1] * np.uint64(1_000_003)) ^ (ids[1:] * _M2)])
                weights = np.concatenate([weights, np.full(ids.size - 1, 0.5)])
            h = _mix(feats)
        idx = (h % np.uint64(self.dims)).astype(np.int64)
        sign = np.where((h >> np.uint64(63)) == 0, 1.0, -1.0) * weights
        vec = np.bincount(idx, weights=sign, minlength=self.dims)
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # all features cancelled out: fall back to the first bucket
            vec[int(idx[0])] = 1.0
            norm = 1.0
        return (vec / norm).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed_one(text)
        self.stats.inputs += len(texts)
        self.stats.seconds += time.perf_counter() - start
        return out
