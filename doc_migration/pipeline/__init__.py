"""The migration's stages, independent of Dagster: scan → parse/chunk → embed → load.

Dagster assets (and through them the CLI) call these functions; each stage keeps its output in the
pipeline's schema in PostgreSQL, so stages can run in different processes or pods.
"""
