"""Split a list of inputs into request-sized batches that the embeddings API accepts.

Why: one request carries at most 2048 inputs and 300,000 tokens, and one input at most 8191
tokens. Batches are contiguous index ranges so results can be written straight back into an
output array in input order, whatever order the concurrent requests finish in.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EmbeddingError

MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
MAX_TOKENS_PER_INPUT = 8191


class InputTooLongError(EmbeddingError, ValueError):
    """One input exceeds the per-input token limit: the caller must chunk it first."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        self.index = index
        self.tokens = tokens
        self.limit = limit
        super().__init__(
            f"input {index} has {tokens} tokens, more than the {limit} allowed per input; chunk it first"
        )


def plan_batches(
    token_counts: Sequence[int],
    max_inputs: int = MAX_INPUTS_PER_REQUEST,
    max_tokens: int = MAX_TOKENS_PER_REQUEST,
    max_input_tokens: int = MAX_TOKENS_PER_INPUT,
) -> list[range]:
    """Greedy, order-preserving packing of inputs into contiguous, never-empty ranges.

    Each range has at most ``max_inputs`` inputs and at most ``max_tokens`` tokens in total.
    Raises :class:`InputTooLongError` (an :class:`EmbeddingError` and a ``ValueError``) when one
    input alone exceeds ``max_input_tokens`` (or ``max_tokens``): it could never be sent.
    """
    if max_inputs < 1 or max_tokens < 1 or max_input_tokens < 1:
        raise ValueError("max_inputs, max_tokens and max_input_tokens must be positive")
    per_input = min(max_input_tokens, max_tokens)
    batches: list[range] = []
    start = 0
    total = 0
    for i, count in enumerate(token_counts):
        if count < 0:
            raise ValueError(f"token count of input {i} is negative ({count})")
        if count > per_input:
            raise InputTooLongError(i, count, per_input)
        if i > start and (i - start >= max_inputs or total + count > max_tokens):
            batches.append(range(start, i))
            start, total = i, 0
        total += count
    if len(token_counts) > start:
        batches.append(range(start, len(token_counts)))
    return batches
