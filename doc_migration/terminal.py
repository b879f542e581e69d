"""What `doc-migrate full` shows while it works: a progress bar on a terminal, plain periodic lines in
logs (Kubernetes, pipes), log lines above the bar, and an overall ETA across the stages.

Reports arrive as ``progress.report(stage, done, total, unit)`` from worker threads; a stage may report
several units (parse: files and partitions). The bar shows a stage's finest unit; a stage is finished
when its ``partitions`` count reaches its total.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

STAGES = ("scan", "parse", "embed", "load")
DEFAULT_WEIGHTS = {"scan": 0.05, "parse": 0.45, "embed": 0.35, "load": 0.15}
UNIT_ORDER = {"chunks": 0, "files": 1, "partitions": 2}  # finest first
CLEAR = "\r\x1b[K"
MIN_RATE_SECONDS = 1.0  # a rate over less time than this is noise (an instant stage: "144000000.0/s")
REDRAW_SECONDS = 0.1


def format_duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m: an ETA is read at a glance."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.1f}M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f}k/s"
    return f"{per_second:.1f}/s"


@dataclass
class _Count:
    done: int
    total: int
    first_at: float
    reports: int = 1


class ProgressDisplay:
    """A progress sink (``progress.add_sink(display)``) and the writer of the lines shown beside it."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 10.0, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, weights: dict[str, float] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.interval = interval
        self.clock = clock
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.started: float | None = None  # the first report: start-up (database, Dagster) is not work
        self._lock = threading.RLock()
        self._counts: dict[tuple[str, str], _Count] = {}
        self._finished: set[str] = set()
        self._bar = ""  # what is on the terminal's last line now
        self._drawn_at = float("-inf")
        self._logged_at: dict[str, float] = {}

    # ------------------------------------------------------------------ lines
    def start(self, message: str) -> None:
        """The first line, printed at once (before the database and Dagster take their seconds)."""
        self.write_line(message)

    def write_line(self, text: str) -> None:
        """A line above the bar: the bar is cleared, the line written, the bar drawn again."""
        with self._lock:
            if self.tty and self._bar:
                self.stream.write(CLEAR + text + "\n" + self._bar)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def log_handler(self, level: int = logging.WARNING) -> logging.Handler:
        display = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    display.write_line(self.format(record))
                except Exception:
                    self.handleError(record)

        handler = _Handler(level)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        return handler

    def close(self) -> None:
        """End an open bar line, so what follows starts on a fresh line."""
        with self._lock:
            if self.tty and self._bar:
                self.stream.write("\n")
                self.stream.flush()
            self._bar = ""

    # ------------------------------------------------------------------ progress
    def __call__(self, stage: str, done: int, total: int, unit: str) -> None:
        now = self.clock()
        with self._lock:
            if self.started is None:
                self.started = now
            key = (stage, unit)
            count = self._counts.get(key)
            if count is None:
                self._counts[key] = count = _Count(done, total, now)
            else:
                count.done, count.total, count.reports = done, total, count.reports + 1
            finished = unit == "partitions" and total > 0 and done >= total
            if finished:
                self._finished.add(stage)
            text = self._line(stage, now)
            if self.tty:
                if finished or now - self._drawn_at >= REDRAW_SECONDS:
                    self._drawn_at = now
                    self._bar = text
                    self.stream.write(CLEAR + text)
                    if finished:
                        self.stream.write("\n")
                        self._bar = ""
                    self.stream.flush()
            elif finished or now - self._logged_at.get(stage, float("-inf")) >= self.interval:
                self._logged_at[stage] = now
                self.stream.write(f"progress: {text}\n")
                self.stream.flush()

    def _shown(self, stage: str) -> tuple[str, _Count] | None:
        units = [(u, c) for (s, u), c in self._counts.items() if s == stage and c.total > 0]
        if not units:
            return None
        unfinished = [(u, c) for u, c in units if c.done < c.total]
        pool = unfinished or units
        return min(pool, key=lambda uc: UNIT_ORDER.get(uc[0], 9))

    def stage_fraction(self, stage: str) -> float:
        if stage in self._finished:
            return 1.0
        shown = self._shown(stage)
        if shown is None:
            return 0.0
        return min(1.0, shown[1].done / shown[1].total)

    def overall(self, now: float) -> tuple[float, float | None]:
        """(fraction of the whole run done, seconds left or None while unknown)."""
        total = sum(self.weights.get(s, 0.0) for s in STAGES) or 1.0
        done = sum(self.weights.get(s, 0.0) * self.stage_fraction(s) for s in STAGES) / total
        elapsed = now - (self.started if self.started is not None else now)
        if done <= 0.02 or elapsed < MIN_RATE_SECONDS:
            return done, None
        return done, elapsed * (1 - done) / done

    def _line(self, stage: str, now: float) -> str:
        shown = self._shown(stage)
        parts = [f"{stage:<5}"]
        if shown is not None:
            unit, c = shown
            pct = 100.0 * min(c.done, c.total) / c.total
            parts.append(f"{c.done}/{c.total} {unit} {pct:5.1f}%")
            elapsed = now - c.first_at
            if elapsed >= MIN_RATE_SECONDS and c.reports >= 2 and c.done > 0:
                rate = c.done / elapsed
                parts.append(format_rate(rate))
                if c.done < c.total:
                    parts.append(f"ETA {format_duration((c.total - c.done) / rate)}")
        fraction, left = self.overall(now)
        parts.append(f"| overall {100 * fraction:3.0f}%" + (f" ETA {format_duration(left)}" if left is not None else ""))
        text = " ".join(parts)
        if self.tty:
            filled = int(20 * fraction)
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {text}"
        return text
