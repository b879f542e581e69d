"""The embedder contract shared by the offline embedder and the OpenAI-compatible client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class EmbedStats:
    """What an embedder spent; summed per partition and per run for cost accounting."""

    inputs: int = 0
    tokens: int = 0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, other: EmbedStats) -> None:
        self.inputs += other.inputs
        self.tokens += other.tokens
        self.requests += other.requests
        self.retries += other.retries
        self.cache_hits += other.cache_hits
        self.seconds += other.seconds
        self.errors.extend(other.errors)


class EmbeddingError(Exception):
    """A terminal embedding failure (bad input, quota, auth); never contains the API key."""


class Embedder(Protocol):
    """Turns texts into unit vectors of ``dims`` float32 values, in input order."""

    model: str
    dims: int
    stats: EmbedStats
    cacheable: bool  # False: vectors are recomputed at load time instead of stored in the cache

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dims), float32, rows in the order of ``texts``."""
        ...


def check_vectors(vectors: np.ndarray, n: int, dims: int) -> None:
    """An embedder's answer must be n finite vectors of the configured size before anything stores it."""
    if vectors.shape != (n, dims) or not np.all(np.isfinite(vectors)):
        raise RuntimeError(f"embedder returned {vectors.shape} for {n} inputs of {dims} dimensions")
