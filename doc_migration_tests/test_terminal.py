"""The progress display of `doc-migrate full`, driven with a fake clock: what a person sees on a terminal
(carriage returns and line clears applied) and what a log collector gets."""

from __future__ import annotations

import io
import logging
import re
import threading

from doc_migration.terminal import ProgressDisplay, format_duration, format_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def screen(written: str) -> list[str]:
    """The lines a terminal shows after ``written``: ``\\r`` returns to column 0, ``ESC[K`` clears to the end."""
    lines = [""]
    col = 0
    i = 0
    while i < len(written):
        if written.startswith("\x1b[K", i):
            lines[-1] = lines[-1][:col]
            i += 3
            continue
        ch = written[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1]
            lines[-1] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return lines


def _display(tty: bool) -> tuple[ProgressDisplay, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return ProgressDisplay(out, tty=tty, clock=clock), out, clock


def test_a_shorter_redraw_leaves_no_stale_characters() -> None:
    display, out, clock = _display(tty=True)
    display("embed", 0, 1000, "chunks")
    clock.now += 5
    display("embed", 10, 1000, "chunks")  # a long ETA: the widest line
    clock.now += 500
    display("embed", 999, 1000, "chunks")
    last = screen(out.getvalue())[-1]
    assert last.endswith(display._line("embed", clock.now)), last  # exactly the newest text, nothing after it
    assert "ETA" in last and not re.search(r"ETA \S+s\d", last), last


def test_an_instant_stage_shows_no_absurd_rate() -> None:
    display, out, clock = _display(tty=False)
    display("scan", 14, 14, "partitions")  # done at its first report, a microsecond after start
    text = out.getvalue()
    assert "/s" not in text, text
    assert text.startswith("progress: scan  14/14 partitions 100.0%"), text


def test_rate_and_stage_eta_after_a_second() -> None:
    display, out, clock = _display(tty=False)
    display("parse", 0, 100, "files")
    clock.now += 10
    display("parse", 50, 100, "files")
    last = out.getvalue().strip().splitlines()[-1]
    assert "5.0/s" in last and "ETA 10s" in last, last


def test_overall_eta_across_stages_decreases() -> None:
    display, out, clock = _display(tty=False)
    display.start("doc-migrate full: 4 partitions")
    display("scan", 4, 4, "partitions")
    etas = []
    for done in (1, 2, 3):
        clock.now += 10
        display("parse", done, 4, "partitions")
        fraction, left = display.overall(clock.now)
        assert left is not None
        etas.append(left)
    assert etas[-1] < etas[0] and all(e > 0 for e in etas), etas
    assert "overall" in out.getvalue().splitlines()[-1]


def test_log_lines_appear_above_the_bar() -> None:
    display, out, clock = _display(tty=True)
    display("load", 1, 4, "partitions")
    logger = logging.getLogger("doc_migration_tests.terminal")
    logger.propagate = False
    handler = display.log_handler()
    logger.addHandler(handler)
    try:
        logger.warning("quarantined guide.md: empty file")
    finally:
        logger.removeHandler(handler)
    shown = screen(out.getvalue())
    assert shown[-2] == "WARNING doc_migration_tests.terminal: quarantined guide.md: empty file", shown
    assert shown[-1].startswith("[") and "load  1/4 partitions" in shown[-1], shown  # the bar is redrawn below


def test_logs_get_plain_throttled_lines() -> None:
    display, out, clock = _display(tty=False)
    for done in range(0, 100):
        clock.now += 0.5
        display("embed", done, 100, "chunks")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.strip().splitlines()
    assert 4 <= len(lines) <= 6, lines  # 50 s at one line per 10 s
    display("embed", 4, 4, "partitions")  # the stage's end is always written
    assert out.getvalue().strip().splitlines()[-1].startswith("progress: embed")


def test_first_line_at_once_and_close_ends_the_bar() -> None:
    display, out, clock = _display(tty=True)
    display.start("doc-migrate full: 14 partition(s)")
    assert out.getvalue() == "doc-migrate full: 14 partition(s)\n"
    display("parse", 3, 13, "files")
    display.close()
    assert out.getvalue().endswith("\n")


def test_formats() -> None:
    assert [format_duration(s) for s in (0, 45, 185, 3720)] == ["0s", "45s", "3m05s", "1h02m"]
    assert [format_rate(r) for r in (12.34, 1234, 2.5e6)] == ["12.3/s", "1.2k/s", "2.5M/s"]


def test_reports_from_many_threads() -> None:
    display, out, clock = _display(tty=True)

    def work(n: int) -> None:
        for i in range(200):
            display("parse", i, 200, "files")
            if i % 50 == 0:
                display.write_line(f"thread {n} at {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    display.close()
    lines = [line for line in screen(out.getvalue()) if line.startswith("thread")]
    assert len(lines) == 16 and all(re.fullmatch(r"thread \d at \d+", line) for line in lines), lines
