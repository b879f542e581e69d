"""Graceful stop: after SIGTERM/SIGINT the partition in progress finishes (commits or rolls back)
and nothing new starts."""

from __future__ import annotations

import threading

_stop = threading.Event()


class Interrupted(Exception):
    """Raised between partitions once a stop was requested."""


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def check() -> None:
    if _stop.is_set():
        raise Interrupted("stop requested (SIGTERM/SIGINT): the partitions done so far are committed")


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking at once on a stop request (a batch wait can last hours); True if stopped."""
    return _stop.wait(seconds)
