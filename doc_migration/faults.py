"""Failpoints for crash tests. ``DOC_MIGRATION_CRASH_AT=<point>[:<n>]`` kills the process with SIGKILL
the n-th time (default 1st) it reaches ``<point>``; ``DOC_MIGRATION_PAUSE_AT=<point>:<seconds>`` sleeps
there (to deliver a signal mid-partition). Unset in production, where both are no-ops."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    pause = os.environ.get("DOC_MIGRATION_PAUSE_AT")
    if pause and pause.partition(":")[0] == name:
        time.sleep(float(pause.partition(":")[2] or 1))
    spec = os.environ.get("DOC_MIGRATION_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
