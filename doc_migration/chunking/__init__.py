"""Token-aware, structure-respecting chunking."""

from .chunker import Chunk, chunk_document

__all__ = ["Chunk", "chunk_document"]
