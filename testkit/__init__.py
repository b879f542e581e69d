"""Test support that is not part of the product (not in the wheel or the image): the local
OpenAI-compatible embedding server the tests and the benchmark run against, a TPM probe, and a
PostgreSQL the nemesis test may kill -9 (``crashable_pg``).

It lives at the repository root, beside ``doc_migration``: run it from there
(``python -m testkit.embedding_server``) or give subprocesses :func:`with_repo_on_path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def with_repo_on_path(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the repository root first on PYTHONPATH, so ``python -m testkit...`` and
    ``-m benchmarks`` work from any working directory (the wheel does not install them)."""
    parts = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(parts)}
