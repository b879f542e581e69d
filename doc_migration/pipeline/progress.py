"""A tiny progress channel from the stages to whoever is watching (the CLI's bar or log lines)."""

from __future__ import annotations

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
