"""Graceful stop: after SIGTERM/SIGINT (or the loss of the run's lock session) the partition in
progress finishes (commits or rolls back) and nothing new starts."""

from __future__ import annotations

import threading

_stop = threading.Event()
SIGNALLED = "stop requested (SIGTERM/SIGINT): the partitions done so far are committed"
_reason = SIGNALLED


class Interrupted(Exception):
    """Raised between partitions once a stop was requested."""


def request_stop(reason: str = SIGNALLED) -> None:
    """``reason`` is what the partitions refused after the stop fail with (the first one wins)."""
    global _reason
    if not _stop.is_set():
        _reason = reason
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def check() -> None:
    if _stop.is_set():
        raise Interrupted(_reason)


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking at once on a stop request (a batch wait can last hours); True if stopped."""
    return _stop.wait(seconds)
