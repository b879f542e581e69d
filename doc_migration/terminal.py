"""What `doc-migrate full` shows while it works: a progress bar on a terminal, plain periodic lines in
logs (Kubernetes, pipes), log lines above the bar, and an overall ETA across the stages.

Reports arrive as ``progress.report(stage, done, total, unit)`` from worker threads; a stage may report
several units (parse: files and partitions). The bar shows a stage's finest unit; a stage is finished
when its ``partitions`` count reaches its total. A fine unit's total covers only the partitions started
so far (``progress.Tally`` grows it), so a stage's fraction is bounded by its partition count: 90 % of
the files of the first partition is not 90 % of the stage.

One `doc-migrate full` may execute several Dagster runs (one per contiguous key range), each going
scan → parse → embed → load again: an earlier stage reporting after a later one starts a new round,
and the overall percentage and ETA are those of the current run.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

STAGES = ("scan", "parse", "embed", "load")
DEFAULT_WEIGHTS = {"scan": 0.05, "parse": 0.45, "embed": 0.35, "load": 0.15}
UNIT_ORDER = {"chunks": 0, "files": 1, "partitions": 2}  # finest first
CLEAR = "\r\x1b[K"  # back to column 0, then erase to the end of the line: no stale characters
MIN_RATE_SECONDS = 1.0  # a rate over less time than this is noise (an instant stage: "144000000.0/s")
MIN_RATE_REPORTS = 2
MIN_OVERALL_FRACTION = 0.02  # an ETA extrapolated from under 2 % of the work swings wildly
REDRAW_SECONDS = 0.1  # ~10 redraws a second: smooth to the eye, cheap for a slow terminal


def format_duration(seconds: float) -> str:
    """45s, 3m05s, 1h02m: an ETA is read at a glance, so no more than two units."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_rate(per_second: float) -> str:
    """12.3/s, 1.2k/s, 2.5M/s, 3.0/min: three significant figures at most, whatever the scale."""
    if not math.isfinite(per_second) or per_second < 0:
        return "?/s"
    if round(per_second, 1) >= 999_950:
        return f"{per_second / 1e6:.1f}M/s"
    if round(per_second, 1) >= 999.95:
        return f"{per_second / 1e3:.1f}k/s"
    if 0 < per_second < 0.1:
        return f"{per_second * 60:.1f}/min"  # slow work (one large partition a minute) is not "0.0/s"
    return f"{per_second:.1f}/s"


@dataclass
class _Count:
    """The latest (done, total) of one (stage, unit), and since when it has been counted."""

    done: int
    total: int
    first_at: float
    reports: int = 1


class DisplayLogHandler(logging.Handler):
    """Log records as lines above the bar (``ProgressDisplay.write_line``): a warning written straight
    to the stream would land in the middle of the bar and be overwritten by its next redraw."""

    def __init__(self, display: ProgressDisplay, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.display = display
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.write_line(self.format(record))
        except Exception:
            self.handleError(record)


class ProgressDisplay:
    """A progress sink (``progress.add_sink(display)``) and the writer of the lines shown beside it.

    Thread-safe: every write to the stream happens under one lock, so a bar and a log line never
    interleave mid-line."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 10.0, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, weights: dict[str, float] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.interval = interval
        self.clock = clock
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.started: float | None = None  # the round's first report: start-up (database, Dagster) is not work
        self._lock = threading.RLock()
        self._counts: dict[tuple[str, str], _Count] = {}
        self._finished: set[str] = set()
        self._bar = ""  # what is on the terminal's last line now ("" when the cursor is on a fresh line)
        self._bar_stage: str | None = None
        self._drawn_at = float("-inf")
        self._logged_at: dict[str, float] = {}
        self._unlogged: str | None = None  # non-TTY: the stage whose newest state no line has shown yet

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
        """A handler for ``logging`` that writes through :meth:`write_line` (above the bar)."""
        return DisplayLogHandler(self, level)

    def close(self) -> None:
        """End an open bar line in its latest state (a throttled redraw is not lost), so what follows
        starts on a fresh line; in logs, the last unwritten state gets its line (an interrupted run)."""
        with self._lock:
            now = self.clock()
            if self.tty and self._bar and self._bar_stage is not None:
                self.stream.write(CLEAR + self._fit(self._line(self._bar_stage, now)) + "\n")
            elif self.tty and self._bar:
                self.stream.write("\n")
            self._flush_unlogged(now)
            self.stream.flush()
            self._bar, self._bar_stage = "", None

    # ------------------------------------------------------------------ progress
    def __call__(self, stage: str, done: int, total: int, unit: str) -> None:
        """One report; drawn (TTY, throttled) or logged (otherwise, every ``interval`` per stage)."""
        with self._lock:
            now = self.clock()
            if self._starts_new_round(stage, done, total, unit):
                self._new_round()
            if self.started is None:
                self.started = now
            key = (stage, unit)
            count = self._counts.get(key)
            if count is None:
                self._counts[key] = count = _Count(done, total, now)
            else:
                # Tally reports leave its lock before reaching us: a thread may bring an older count late.
                count.done, count.total = max(count.done, done), max(count.total, total)
                count.reports += 1
            was_finished = stage in self._finished
            finished = not was_finished and unit == "partitions" and count.total > 0 and count.done >= count.total
            if finished:
                self._finished.add(stage)
            elif was_finished:
                return  # its final line is out; a straggler of a finished stage changes nothing shown
            if self.tty:
                self._draw(stage, now, finished)
                return
            if self._unlogged != stage:
                self._flush_unlogged(now)  # the previous stage ends with its newest state, not a stale one
            if finished or now - self._logged_at.get(stage, float("-inf")) >= self.interval:
                self._logged_at[stage] = now
                self._unlogged = None
                self.stream.write(f"progress: {self._line(stage, now)}\n")
                self.stream.flush()
            else:
                self._unlogged = stage

    def _flush_unlogged(self, now: float) -> None:
        """Non-TTY: the line a stage's newest state did not get because of the interval."""
        if self._unlogged is not None and not self.tty:
            stage, self._unlogged = self._unlogged, None
            self._logged_at[stage] = now
            self.stream.write(f"progress: {self._line(stage, now)}\n")

    def _starts_new_round(self, stage: str, done: int, total: int, unit: str) -> bool:
        """True when this report belongs to the next Dagster run: an earlier stage after a later one,
        or a finished stage counting its partitions from below their total again."""
        if stage in self._finished and unit == "partitions" and done < total:
            return True
        if stage not in STAGES:
            return False
        order = STAGES.index(stage)
        return any(s in STAGES and STAGES.index(s) > order for s, _ in self._counts)

    def _new_round(self) -> None:
        """Forget the previous run's counts; its open bar or unwritten state is finished off first."""
        now = self.clock()
        if self.tty and self._bar_stage is not None:
            self.stream.write(CLEAR + self._fit(self._line(self._bar_stage, now)) + "\n")
        self._flush_unlogged(now)
        self._counts.clear()
        self._finished.clear()
        self._logged_at.clear()
        self._bar, self._bar_stage = "", None
        self._drawn_at = float("-inf")
        self.started = None

    def _draw(self, stage: str, now: float, finished: bool) -> None:
        """Redraw the bar at most every ``REDRAW_SECONDS``; a stage's end is always drawn and ends its line."""
        if self._bar_stage is not None and self._bar_stage != stage:
            # Another stage is starting: the previous one keeps its line, in its latest state.
            self.stream.write(CLEAR + self._fit(self._line(self._bar_stage, now)) + "\n")
            self._bar, self._bar_stage = "", None
            self._drawn_at = float("-inf")
        if not finished and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        text = self._fit(self._line(stage, now))
        self.stream.write(CLEAR + text)
        if finished:
            self.stream.write("\n")
            self._bar, self._bar_stage = "", None
        else:
            self._bar, self._bar_stage = text, stage
        self.stream.flush()

    def _fit(self, text: str) -> str:
        """The bar cut to the terminal's width: a wrapped bar leaves its first row behind at each redraw
        (``\\r`` and ``ESC[K`` act on the cursor's row only)."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return text
        if columns < 40:  # a pty without a size (script, some CI runners) reports 0: do not cut
            return text
        return text if len(text) < columns else text[:columns - 2] + "…"

    # ------------------------------------------------------------------ estimates
    def _shown(self, stage: str) -> tuple[str, _Count] | None:
        """The count the bar shows: the finest unit still running (the one that moves)."""
        units = [(u, c) for (s, u), c in self._counts.items() if s == stage and c.total > 0]
        if not units:
            return None
        unfinished = [(u, c) for u, c in units if c.done < c.total]
        pool = unfinished or units
        return min(pool, key=lambda uc: UNIT_ORDER.get(uc[0], 9))

    def _partitions(self, stage: str) -> tuple[int, int] | None:
        """(done, total) partitions of ``stage``; before its first partition ends, the run's total from
        the scan (every stage of a run goes over the partitions the scan listed)."""
        own = self._counts.get((stage, "partitions"))
        if own is not None and own.total > 0:
            return own.done, own.total
        scan = self._counts.get(("scan", "partitions"))
        if scan is not None and scan.total > 0:
            return 0, scan.total
        return None

    def stage_fraction(self, stage: str) -> float:
        """How much of ``stage`` is done, in [0, 1]: partitions done, plus the fine unit's progress
        through at least the one partition in flight (its total covers only the started partitions)."""
        if stage in self._finished:
            return 1.0
        parts = self._partitions(stage)
        fine = [(u, c) for (s, u), c in self._counts.items() if s == stage and u != "partitions" and c.total > 0]
        if not fine:
            return min(1.0, parts[0] / parts[1]) if parts else 0.0
        _, c = min(fine, key=lambda uc: UNIT_ORDER.get(uc[0], 9))
        within = min(1.0, c.done / c.total)
        if parts is None:
            return within
        done, total = parts
        return min(1.0, max(done / total, within * (done + 1) / total))

    def overall(self, now: float) -> tuple[float, float | None]:
        """(fraction of the whole run done, seconds left or None while unknown): elapsed time scaled by
        the weighted fraction still to do."""
        total = sum(self.weights.get(s, 0.0) for s in STAGES) or 1.0
        done = sum(self.weights.get(s, 0.0) * self.stage_fraction(s) for s in STAGES) / total
        elapsed = now - (self.started if self.started is not None else now)
        if done <= MIN_OVERALL_FRACTION or elapsed < MIN_RATE_SECONDS:
            return done, None
        return done, elapsed * (1 - done) / done

    def _line(self, stage: str, now: float) -> str:
        """``parse 120/800 files (3/14 partitions) 15.0% 12.3/s ETA 55s | overall 20% ETA 4m10s``."""
        shown = self._shown(stage)
        parts = [f"{stage:<5}"]
        if shown is not None:
            unit, c = shown
            fraction = self.stage_fraction(stage)
            parts.append(f"{c.done}/{c.total} {unit}")
            partitions = self._counts.get((stage, "partitions"))
            if unit != "partitions" and partitions is not None and partitions.total > 0:
                parts.append(f"({partitions.done}/{partitions.total} partitions)")
            parts.append(f"{100 * fraction:5.1f}%")
            elapsed = now - c.first_at
            if elapsed >= MIN_RATE_SECONDS and c.reports >= MIN_RATE_REPORTS and c.done > 0:
                parts.append(format_rate(c.done / elapsed))
                since = now - min(x.first_at for (s, _), x in self._counts.items() if s == stage)
                if 0 < fraction < 1:
                    parts.append(f"ETA {format_duration(since * (1 - fraction) / fraction)}")
        fraction, left = self.overall(now)
        parts.append(f"| overall {100 * fraction:3.0f}%" + (f" ETA {format_duration(left)}" if left is not None else ""))
        text = " ".join(parts)
        if self.tty:
            filled = int(20 * fraction)
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {text}"
        return text
