"""Fail fast when the embedding endpoint is gone, instead of retrying every batch of every partition.

Without it a dead endpoint cost 8 retries x ~32 s per batch, one partition after another (about
16 minutes before the first failure showed), and the partitions embedded before the outage
waited behind it. The breaker counts *connection* failures (refused, reset, timed out) across all
requests of one (endpoint, model) in the process; any HTTP answer, even a 429 or a 500, shows the
endpoint is there and resets it. Once ``failures`` consecutive ones have spanned ``min_seconds``
it opens for the rest of the process: every request fails at once with the reason, the run loads
what was embedded and exits 5. A short blip (a few refused connections within seconds) does not
open it.
"""

from __future__ import annotations

import threading
import time

UNREACHABLE = "embedding endpoint unreachable"  # the CLI maps failures carrying this to exit 5


class ConnectionBreaker:
    def __init__(self, failures: int = 6, min_seconds: float = 30.0) -> None:
        """``failures`` < 1 disables the breaker."""
        self.failures = failures
        self.min_seconds = min_seconds
        self._lock = threading.Lock()
        self._count = 0
        self._first: float | None = None
        self._reason: str | None = None

    def record_failure(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None or self.failures < 1:
                return
            now = time.monotonic()
            if self._count == 0:
                self._first = now
            self._count += 1
            assert self._first is not None
            span = now - self._first
            if self._count >= self.failures and span >= self.min_seconds:
                self._reason = (f"{self._count} consecutive connection failures over {span:.0f} s, "
                                f"the last: {reason}")

    def record_answer(self) -> None:
        with self._lock:
            if self._reason is None:
                self._count, self._first = 0, None

    @property
    def open_reason(self) -> str | None:
        """Why the breaker is open (None: closed)."""
        return self._reason
