"""Embedding prices (USD per 1M input tokens) for cost plans and run summaries.

Override the configured model's price with ``DOC_MIGRATION_PRICE_PER_MTOK`` (e.g. a negotiated
rate, or 0.065 for the Batch API's half price).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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


def estimate_cost(tokens: int, model: str, prices: Mapping[str, float] | None = None) -> float:
    """USD for ``tokens`` input tokens of ``model``; models with no known price (a local Ollama
    model, a proxy alias) cost 0.0: self-hosted embeddings are not billed per token."""
    table = price_table()
    if prices:
        table.update(prices)
    return tokens / 1_000_000 * float(table.get(model, 0.0))
