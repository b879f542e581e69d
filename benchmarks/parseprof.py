"""In-process cost of the parse stage's work per file (read, parse, chunk, count tokens, build rows).

py-spy cannot follow the parser pool's forkserver workers, so the worker side of the parse stage
is measured here: ``parse_file`` (exactly what a worker runs) on a deterministic, stratified
share of the corpus in this process, first timed per format, then again under cProfile.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def _select(items: list[Any], share: float) -> list[Any]:
    """Every k-th file of each format (sorted by path), so every format is represented."""
    by_fmt: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        by_fmt[os.path.splitext(item.rel_path)[1]].append(item)
    step = max(1, round(1 / max(share, 1e-6)))
    out: list[Any] = []
    for _, group in sorted(by_fmt.items()):
        group.sort(key=lambda i: i.rel_path)
        out.extend(group[::step] or group[:1])
    return out


def profile_parse(manifest_path: Path, share: float = 0.1, top: int = 20) -> dict[str, Any]:
    from doc_migration.config import Settings
    from doc_migration.manifest import discover, load_manifest
    from doc_migration.pipeline import parse as parse_mod

    manifest = load_manifest(manifest_path)
    settings = Settings.from_env(manifest_path)
    items = _select(list(discover(manifest)), share)
    jobs = [parse_mod.make_job(settings, manifest, i.source_name, i.rel_path, i.doc_type, i.fmt, i.refusal)
            for i in items]
    per_fmt: dict[str, dict[str, float]] = defaultdict(lambda: {"files": 0, "bytes": 0, "seconds": 0.0, "chunks": 0})
    # Warm up the imports and the tokenizer so the first format does not pay for them.
    for job in jobs[:3]:
        parse_mod.parse_file(job)
    for job, item in zip(jobs, items, strict=True):
        ext = os.path.splitext(item.rel_path)[1].lstrip(".")
        started = time.perf_counter()
        result = parse_mod.parse_file(job)
        f = per_fmt[ext]
        f["seconds"] += time.perf_counter() - started
        f["files"] += 1
        f["bytes"] += item.size
        f["chunks"] += len(result.rows)
    profiler = cProfile.Profile()
    profiler.enable()
    for job in jobs:
        parse_mod.parse_file(job)
    profiler.disable()
    total_s = sum(f["seconds"] for f in per_fmt.values())
    total_b = sum(f["bytes"] for f in per_fmt.values())
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename
        for marker in ("site-packages/", "doc_migration/"):
            i = filename.find(marker)
            if i >= 0:
                short = filename[i + (len(marker) if marker == "site-packages/" else 0):]
                break
        entries.append((f"{func} ({short}:{line})", calls, tottime, cumtime))
    by_self = sorted(entries, key=lambda e: -e[2])[:top]
    by_cum = [e for e in sorted(entries, key=lambda e: -e[3]) if "profile_parse" not in e[0]][:top]
    return {
        "share": share,
        "files": len(jobs),
        "mb": round(total_b / 1e6, 2),
        "seconds": round(total_s, 2),
        "mb_per_s_one_core": round(total_b / 1e6 / total_s, 2) if total_s else None,
        "per_format": {k: {**v, "seconds": round(v["seconds"], 2),
                           "mb_per_s": round(v["bytes"] / 1e6 / v["seconds"], 2) if v["seconds"] else None,
                           "share_of_time": round(v["seconds"] / total_s, 3) if total_s else None}
                       for k, v in sorted(per_fmt.items(), key=lambda kv: -kv[1]["seconds"])},
        "profiled_seconds": round(sum(e[2] for e in entries), 2),
        "top_self": [(n, c, round(t, 2)) for n, c, t, _ in by_self],
        "top_cumulative": [(n, c, round(t, 2)) for n, c, _, t in by_cum],
    }
