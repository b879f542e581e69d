"""The shape every check returns, and helpers shared by the checks.

One shape for all checks so the report, the HTML page, the Dagster asset checks and the repair
planner read them the same way: ``passed``, ``severity``, a one-line actionable ``message``, the
``findings`` (capped) with their exact total, and the ``partitions`` a repair should reload.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..manifest import Manifest

ERROR, WARN = "ERROR", "WARN"


def check_result(name: str, *, passed: bool, severity: str, message: str, findings: list[dict[str, Any]],
                 cap: int, partitions: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Build a check's result; findings beyond ``cap`` are counted, not kept (per doc type too)."""
    by_type: dict[str, int] = {}
    for f in findings:
        dt = f.get("doc_type") or (doc_type_of(f["partition"]) if f.get("partition") else "")
        by_type[dt] = by_type.get(dt, 0) + 1
    return {
        "name": name,
        "passed": passed,
        "severity": severity,
        "message": message,
        "findings": findings[:cap],
        "total_findings": len(findings),
        "truncated": len(findings) > cap,
        "partitions": sorted(set(partitions or [])),
        "findings_by_doc_type": by_type,
        **extra,
    }


def timed(name: str, severity: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one check; a crash becomes a failed check with the error, never a crashed report."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # the report must still be written so the operator sees what broke
        result = check_result(name, passed=False, severity=severity, findings=[], cap=1,
                              message=f"{name} check could not run: {type(exc).__name__}: {str(exc)[:300]}; "
                                      "fix the cause and re-run `doc-migrate validate`")
        result["crashed"] = True
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}{'es' if word.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def doc_type_of(key: str) -> str:
    return key.rpartition("-")[0]


def source_roots(manifest: Manifest | None) -> dict[tuple[str, str], Path]:
    """(source_name, doc_type) → the folder its ``source_file`` paths are relative to."""
    out: dict[tuple[str, str], Path] = {}
    if manifest is None:
        return out
    for src in manifest.sources:
        if src.path is None:
            continue
        for doc_type in manifest.doc_types():
            if src.doc_type in (doc_type, "{folder}"):
                out.setdefault((src.source_name_for(doc_type), doc_type), src.path)
    return out


def sha256_file(path: Path) -> str | None:
    """Hex sha256 of a file's bytes, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def norm_path(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")
