"""Benchmark of the migration: a deterministic corpus generator and a runner that measures
``doc-migrate`` end to end (``python -m doc_migration.bench``; see docs/benchmarks.md)."""
