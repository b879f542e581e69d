"""Embedding prices (USD per 1M input tokens) for cost plans and run summaries.

Override the configured model's price with ``DOC_MIGRATION_PRICE_PER_MTOK`` (e.g. a negotiated
rate). Tokens sent through the Batch API cost :data:`BATCH_DISCOUNT` of that price (half, at OpenAI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

BATCH_DISCOUNT = 0.5  # the Batch API bills half the synchronous price

DEFAULT_PRICES: dict[str, float] = {
    "text-embedding-3-large": 0.13,
    "text-embedding-3-small": 0.02,
    "text-embedding-ada-002": 0.10,
}


def price_table() -> dict[str, float]:
    table = dict(DEFAULT_PRICES)
    override = os.environ.get("DOC_MIGRATION_PRICE_PER_MTOK")
    model = os.environ.get("DOC_MIGRATION_EMBEDDING_MODEL", "text-embedding-3-large")
    if override:
        table[model] = float(override)
    return table


def estimate_cost(tokens: int, model: str, prices: Mapping[str, float] | None = None, *,
                  batch_tokens: int = 0) -> float:
    """USD for ``tokens`` input tokens of ``model``, ``batch_tokens`` of them sent through the Batch API
    (half price); models with no known price (a local Ollama model, a proxy alias) cost 0.0:
    self-hosted embeddings are not billed per token."""
    table = price_table()
    if prices:
        table.update(prices)
    price = float(table.get(model, 0.0))
    batch = min(max(0, batch_tokens), tokens)
    return ((tokens - batch) + batch * BATCH_DISCOUNT) / 1_000_000 * price
