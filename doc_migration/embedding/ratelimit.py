"""Client-side requests-per-minute / tokens-per-minute budget shared by all embedding workers.

Why: OpenAI answers an over-budget request with 429 and a retry delay; a client that only reacts
to 429s alternates bursts and stalls and wastes a large share of its quota. This limiter keeps a
rolling-window log of what was sent and makes :meth:`RateLimiter.acquire` block until the next
request fits, so a migration can run at ~95 % of its TPM cap without provoking 429s.

Accounting is deliberately conservative so that the client never over-spends against a server
that enforces a strict rolling window (and therefore also against OpenAI's continuously refilling
bucket, which admits everything a rolling window admits):

* a request counts from the moment it is admitted (it may reach the server at any time after);
* once answered, it keeps counting until ``window_seconds`` after its *completion* (the server
  stamped it somewhere between send and completion, so it expires there no later than that);
* a 429 / 4xx answer releases its budget (the server did not count it); 5xx and network errors
  keep it (the server may have counted it).

The limiter adapts to the ``x-ratelimit-*`` headers of every response: ``limit-*`` teaches it
the account's caps when none are configured (or lowers configured ones), and a ``remaining-*``
lower than its own view reveals usage by other processes sharing the key, which is reserved
until the matching ``reset-*`` delay has passed.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from .batching import MAX_TOKENS_PER_INPUT

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header (``"6m0s"``, ``"1s"``, ``"20ms"``, ``"1h2m3.5s"``, or a
    bare number of seconds); ``None`` when absent or unparseable."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Delay requested by ``retry-after-ms`` (preferred, finer) or ``retry-after`` (seconds or an
    HTTP date); ``None`` when the response names no delay."""
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = _header(headers, name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


@dataclass
class Reservation:
    """Budget held by one request between :meth:`RateLimiter.acquire` and :meth:`RateLimiter.release`."""

    id: int
    tokens: int
    admitted_at: float


class RateLimiter:
    """Thread-safe rolling-window RPM/TPM budget; see the module docstring for the rules.

    ``rpm``/``tpm`` are the configured caps (``None`` = learn them from response headers only).
    ``headroom`` is the share of a cap the client aims to use (a margin for token-count skew).
    ``max_request_share`` bounds one request to that share of the TPM cap, so the window refills
    smoothly instead of waiting for one huge request to expire.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        window_seconds: float = 60.0,
        headroom: float = 0.97,
        max_request_share: float = 0.125,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        if not 0 < max_request_share <= 1:
            raise ValueError("max_request_share must be in (0, 1]")
        self.window_seconds = float(window_seconds)
        self.headroom = float(headroom)
        self.max_request_share = float(max_request_share)
        self._clock = clock
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._cfg_rpm: int | None = None
        self._cfg_tpm: int | None = None
        self.configure(rpm=rpm, tpm=tpm)
        self._hdr_rpm: int | None = None
        self._hdr_tpm: int | None = None
        self._inflight: dict[int, Reservation] = {}
        self._inflight_tokens = 0
        self._done: deque[tuple[float, int]] = deque()  # (completed_at, tokens), completion order
        self._done_tokens = 0
        self._ext_tokens = (0, 0.0)  # (tokens used by others, expires_at)
        self._ext_requests = (0, 0.0)
        self._pause_until = 0.0
        self.waited_seconds = 0.0
        self.admitted = 0

    # ------------------------------------------------------------------ configuration
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RateLimiter:
        """Build from a mapping such as a manifest's ``embedding.rate_limit`` section.

        Keys: ``rpm``, ``tpm``, ``window_seconds``, ``headroom``, ``max_request_share``; unknown
        keys are refused so a typo does not silently disable the limit.
        """
        allowed = {"rpm", "tpm", "window_seconds", "headroom", "max_request_share"}
        unknown = set(config) - allowed
        if unknown:
            raise ValueError(f"unknown rate-limit settings: {sorted(unknown)} (allowed: {sorted(allowed)})")
        def num(key: str, default: float) -> float:
            value = config.get(key)
            return default if value is None else float(value)

        rpm, tpm = config.get("rpm"), config.get("tpm")
        return cls(
            rpm=int(rpm) if rpm is not None else None,
            tpm=int(tpm) if tpm is not None else None,
            window_seconds=num("window_seconds", 60.0),
            headroom=num("headroom", 0.97),
            max_request_share=num("max_request_share", 0.125),
        )

    def configure(self, rpm: int | None = None, tpm: int | None = None) -> None:
        """Set configured caps (``None`` leaves that cap unchanged)."""
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        with self._cond:
            if rpm is not None:
                self._cfg_rpm = int(rpm)
            if tpm is not None:
                self._cfg_tpm = int(tpm)
            self._cond.notify_all()

    @staticmethod
    def _min(a: int | None, b: int | None) -> int | None:
        if a is None:
            return b
        if b is None:
            return a
        return min(a, b)

    @property
    def tpm(self) -> int | None:
        """The cap in force: configured and header-learned, whichever is lower."""
        with self._cond:
            return self._min(self._cfg_tpm, self._hdr_tpm)

    @property
    def rpm(self) -> int | None:
        with self._cond:
            return self._min(self._cfg_rpm, self._hdr_rpm)

    def _budget_tokens(self) -> float | None:
        cap = self._min(self._cfg_tpm, self._hdr_tpm)
        return None if cap is None else cap * self.headroom

    def _budget_requests(self) -> float | None:
        cap = self._min(self._cfg_rpm, self._hdr_rpm)
        return None if cap is None else max(1.0, math.floor(cap * self.headroom))

    def max_request_tokens(self) -> int | None:
        """Largest request worth sending under the current TPM cap (``None`` when unknown)."""
        with self._cond:
            budget = self._budget_tokens()
        if budget is None:
            return None
        share = int(budget * self.max_request_share)
        return max(1, min(int(budget), max(share, MAX_TOKENS_PER_INPUT)))

    # ------------------------------------------------------------------ admission
    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        while self._done and self._done[0][0] <= horizon:
            _, tokens = self._done.popleft()
            self._done_tokens -= tokens
        if self._ext_tokens[0] and self._ext_tokens[1] <= now:
            self._ext_tokens = (0, 0.0)
        if self._ext_requests[0] and self._ext_requests[1] <= now:
            self._ext_requests = (0, 0.0)

    def _wait_for(
        self, need: float, budget: float, used: float, done: list[tuple[float, float]], now: float
    ) -> float | None:
        """Seconds until ``need`` more fits under ``budget``; ``None`` = only a release can help."""
        if used + need <= budget or used == 0:
            return 0.0  # fits, or it is alone and oversized: let it go rather than starve
        excess = used + need - budget
        freed = 0.0
        for expires_at, amount in sorted(done):
            freed += amount
            if freed >= excess:
                return max(0.0, expires_at - now)
        return None

    def _wait_time(self, tokens: int, now: float) -> float | None:
        waits: list[float | None] = [max(0.0, self._pause_until - now)]
        budget = self._budget_tokens()
        if budget is not None:
            ext, ext_at = self._ext_tokens
            used = self._inflight_tokens + self._done_tokens + ext
            done = [(t + self.window_seconds, float(n)) for t, n in self._done]
            if ext:
                done.append((ext_at, float(ext)))
            waits.append(self._wait_for(float(tokens), budget, float(used), done, now))
        rbudget = self._budget_requests()
        if rbudget is not None:
            ext_r, ext_r_at = self._ext_requests
            used_r = len(self._inflight) + len(self._done) + ext_r
            done_r = [(t + self.window_seconds, 1.0) for t, _ in self._done]
            if ext_r:
                done_r.append((ext_r_at, float(ext_r)))
            waits.append(self._wait_for(1.0, rbudget, float(used_r), done_r, now))
        if any(w is None for w in waits):
            return None
        return max(w for w in waits if w is not None)

    def try_acquire(self, tokens: int) -> tuple[Reservation | None, float | None]:
        """Admit now if the request fits: ``(reservation, 0.0)``; else ``(None, seconds to wait)``
        where ``None`` seconds means "until an in-flight request is released"."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            wait = self._wait_time(tokens, now)
            if wait is not None and wait <= 0:
                res = Reservation(next(self._ids), int(tokens), now)
                self._inflight[res.id] = res
                self._inflight_tokens += res.tokens
                self.admitted += 1
                return res, 0.0
            return None, wait

    def acquire(
        self,
        tokens: int,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Reservation:
        """Block until a request of ``tokens`` fits in both budgets, then reserve it.

        Raises ``TimeoutError`` after ``timeout`` seconds, and ``InterruptedError`` as soon as
        ``cancel`` is set (checked at least every 0.25 s) so a failed batch stops its siblings.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise InterruptedError("rate-limit wait cancelled")
                res, wait = self.try_acquire(tokens)
                if res is not None:
                    self.waited_seconds += time.monotonic() - start
                    return res
                step = 1.0 if wait is None else wait
                if cancel is not None:
                    step = min(step, 0.25)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no rate-limit budget for {tokens} tokens within {timeout} s")
                    step = min(step, left)
                self._cond.wait(max(step, 0.001))

    def release(self, reservation: Reservation, *, consumed: bool = True) -> None:
        """End a request. ``consumed=False`` when the server certainly did not count it (a 429
        or a 4xx answer); otherwise it keeps counting for a window from now."""
        with self._cond:
            res = self._inflight.pop(reservation.id, None)
            if res is None:
                return
            self._inflight_tokens -= res.tokens
            if consumed:
                now = self._clock()
                self._done.append((now, res.tokens))
                self._done_tokens += res.tokens
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a 429 whose answer carries no ``x-ratelimit`` state)."""
        if seconds <= 0:
            return
        with self._cond:
            self._pause_until = max(self._pause_until, self._clock() + seconds)

    # ------------------------------------------------------------------ adaptation
    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Learn caps and other processes' usage from a response's ``x-ratelimit-*`` headers.

        Call it while the request's reservation is still held (the server counted that request,
        so it must be in the local view when comparing with ``remaining``).
        """
        limit_t = _int_header(headers, "x-ratelimit-limit-tokens")
        limit_r = _int_header(headers, "x-ratelimit-limit-requests")
        rem_t = _int_header(headers, "x-ratelimit-remaining-tokens")
        rem_r = _int_header(headers, "x-ratelimit-remaining-requests")
        reset_t = parse_duration(_header(headers, "x-ratelimit-reset-tokens"))
        reset_r = parse_duration(_header(headers, "x-ratelimit-reset-requests"))
        if limit_t is None and limit_r is None and rem_t is None and rem_r is None:
            return
        with self._cond:
            now = self._clock()
            self._expire(now)
            if limit_t is not None and limit_t > 0:
                self._hdr_tpm = limit_t
            if limit_r is not None and limit_r > 0:
                self._hdr_rpm = limit_r
            cap_t = self._min(self._cfg_tpm, self._hdr_tpm) if limit_t is None else limit_t
            if rem_t is not None and cap_t is not None:
                mine = self._inflight_tokens + self._done_tokens
                others = max(0, cap_t - mine - rem_t)
                expires = now + (reset_t if reset_t is not None else self.window_seconds)
                self._ext_tokens = (others, expires) if others else (0, 0.0)
            cap_r = self._min(self._cfg_rpm, self._hdr_rpm) if limit_r is None else limit_r
            if rem_r is not None and cap_r is not None:
                mine_r = len(self._inflight) + len(self._done)
                others_r = max(0, cap_r - mine_r - rem_r)
                expires = now + (reset_r if reset_r is not None else self.window_seconds)
                self._ext_requests = (others_r, expires) if others_r else (0, 0.0)
            self._cond.notify_all()

    def snapshot(self) -> dict[str, Any]:
        """Current view, for logs and tests."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            return {
                "rpm": self._min(self._cfg_rpm, self._hdr_rpm),
                "tpm": self._min(self._cfg_tpm, self._hdr_tpm),
                "configured_rpm": self._cfg_rpm,
                "configured_tpm": self._cfg_tpm,
                "header_rpm": self._hdr_rpm,
                "header_tpm": self._hdr_tpm,
                "inflight_requests": len(self._inflight),
                "inflight_tokens": self._inflight_tokens,
                "window_requests": len(self._done),
                "window_tokens": self._done_tokens,
                "external_tokens": self._ext_tokens[0],
                "external_requests": self._ext_requests[0],
                "paused_for": max(0.0, self._pause_until - now),
                "admitted": self.admitted,
                "waited_seconds": self.waited_seconds,
            }
