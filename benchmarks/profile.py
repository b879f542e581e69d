"""CPU profile of a run from py-spy's raw (collapsed-stack) output, grouped by process and stage.

``py-spy record --subprocesses --format raw`` writes one line per distinct stack:
``process 123:"cmdline";frame (file:line);...;frame (file:line) COUNT``. Only on-CPU samples are
recorded (idle threads, e.g. waiting for PostgreSQL, are left out), so the seconds here are CPU
seconds of Python code; database time is in the statement profile of the database sampler.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ASSET_FUNCTIONS = {
    "source_manifest": "scan", "parsed_docs": "parse", "embeddings": "embed", "loaded_rows": "load",
    "validation_report": "checks", "rows_match_ledger": "checks", "embeddings_well_formed": "checks",
    "partition_not_rolled_back": "checks",
}
# Outermost frames of a complete stack; py-spy --nonblocking sometimes returns a stack cut short.
ROOT_FRAMES = ("<module>", "_run_module_as_main", "Thread._bootstrap", "_bootstrap", "main (", "_run_code")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_py_spy() -> str | None:
    """py-spy on PATH, beside this interpreter, or in /tmp/pyspy-venv (a throwaway venv for it)."""
    import sys

    for candidate in (shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy"),
                      "/tmp/pyspy-venv/bin/py-spy"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _short_file(path: str) -> str:
    for marker in ("site-packages/", "doc_migration/", "lib/python3"):
        i = path.find(marker)
        if i >= 0:
            rest = path[i + len(marker):] if marker != "doc_migration/" else path[i:]
            return rest.split("/", 1)[1] if marker == "lib/python3" and "/" in rest else rest
    return path.rsplit("/", 1)[-1]


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['func']} ({_short_file(m['file'])})"


def process_kind(frame: str) -> str:
    if "multiprocessing" in frame and ("forkserver" in frame or "spawn" in frame):
        return "parse workers"
    if "resource_tracker" in frame:
        return "other"
    return "main"


def parse_raw(path: Path, rate: int, top: int = 15) -> dict[str, Any]:
    """Seconds per group (``main:<stage>`` or ``parse workers``), with top self and inclusive functions."""
    self_time: dict[str, Counter[str]] = defaultdict(Counter)
    incl_time: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        kind = "main"
        # py-spy nests a child's stack under its parent's "process ..." frame: the last one is the sampled process.
        while frames and frames[0].startswith("process "):
            kind = process_kind(frames[0])
            frames = frames[1:]
        if kind == "other" or not frames:
            continue
        names = [frame_name(f) for f in frames]
        if kind == "main":
            stage = "startup, Dagster and CLI (outside the assets)"
            if not names[0].startswith(ROOT_FRAMES):
                stage = "truncated stacks (stage unknown)"
            for name in names:
                func = name.split(" (", 1)[0]
                if func in ASSET_FUNCTIONS:
                    stage = ASSET_FUNCTIONS[func]
                    break
                if "dagster_defs/checks.py" in name:  # every asset check, whatever its name
                    stage = "checks"
                    break
            group = f"main process: {stage}"
        else:
            group = kind
        totals[group] += count
        self_time[group][names[-1]] += count
        for name in dict.fromkeys(names):
            incl_time[group][name] += count
    groups: dict[str, Any] = {}
    for group, samples in totals.most_common():
        groups[group] = {
            "samples": samples,
            "seconds": round(samples / rate, 1),
            "self": [(n, round(c / rate, 1)) for n, c in self_time[group].most_common(top)],
            "inclusive": [(n, round(c / rate, 1)) for n, c in incl_time[group].most_common(top + 25)
                          if not n.startswith(("<module>", "_run_code", "run_path", "_bootstrap"))][:top],
        }
    return {"rate": rate, "total_seconds": round(sum(totals.values()) / rate, 1), "groups": groups}
