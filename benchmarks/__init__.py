"""Benchmark of the migration: a deterministic corpus generator and a runner that measures
``doc-migrate`` end to end (``python -m benchmarks``; see docs/benchmarks.md)."""
