"""A tiny progress channel from the stages to whoever is watching (the CLI's bar or log lines)."""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressSink = Callable[[str, int, int, str], None]
_sinks: list[ProgressSink] = []


def add_sink(sink: ProgressSink) -> None:
    _sinks.append(sink)


def remove_sink(sink: ProgressSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def report(stage: str, done: int, total: int, unit: str = "partitions") -> None:
    for sink in list(_sinks):
        sink(stage, done, total, unit)


class Tally:
    """One ``report(stage, done, total, unit)`` stream summed over work that runs concurrently (several
    partitions in threads), so a watcher keyed by (stage, unit) sees one coherent count, not interleaved
    per-partition counts. ``total`` grows as partitions start."""

    def __init__(self, stage: str, unit: str) -> None:
        self.stage, self.unit = stage, unit
        self.done = self.total = 0
        self._lock = threading.Lock()

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
            done, total = self.done, self.total
        report(self.stage, done, total, self.unit)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            done, total = self.done, self.total
        report(self.stage, done, total, self.unit)
