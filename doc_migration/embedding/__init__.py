"""Embedders: an offline deterministic one (default) and an OpenAI-compatible client."""
