"""The progress display of `doc-migrate full`, driven with a fake clock: what a person sees on a terminal
(carriage returns and line clears applied) and what a log collector gets."""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time

import pytest

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


def _display(tty: bool | None) -> tuple[ProgressDisplay, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return ProgressDisplay(out, tty=tty, clock=clock), out, clock


def test_a_shorter_redraw_leaves_no_stale_characters() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=True, clock=clock, weights={"embed": 1.0})
    display("embed", 0, 1000, "chunks")
    clock.now += 5
    display("embed", 30, 1000, "chunks")  # long ETAs ("2m42s" twice): the widest line
    wide = screen(out.getvalue())[-1]
    clock.now += 500
    display("embed", 999, 1000, "chunks")  # ETAs "0s": a shorter line over the wide one
    last = screen(out.getvalue())[-1]
    assert len(last) < len(wide), (wide, last)  # else this test proves nothing
    assert last == display._line("embed", clock.now), last  # exactly the newest text, nothing after it
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


class SlowStream(io.StringIO):
    """A stream whose writes give other threads a chance mid-write, as a real pipe or terminal may:
    without the display's lock, a bar and a log line would interleave."""

    def write(self, s: str) -> int:
        for i in range(0, len(s), 8):
            super().write(s[i:i + 8])
            time.sleep(0)
        return len(s)


def test_reports_from_many_threads() -> None:
    out, clock = SlowStream(), Clock()
    display = ProgressDisplay(out, tty=True, clock=clock)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                clock.now += 0.05  # redraws happen (racy on purpose: any order of times must do)
                display("parse", i, 100, "files")
                if i % 25 == 0:
                    display.write_line(f"thread {n} at {i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    display.close()
    assert not errors, errors
    shown = screen(out.getvalue())
    lines = [line for line in shown if line.startswith("thread")]
    assert len(lines) == 16 and all(re.fullmatch(r"thread \d at \d+", line) for line in lines), lines
    bars = [line for line in shown if line and not line.startswith("thread")]
    assert bars and all(re.fullmatch(r"\[[#.]{20}\] parse \d+/100 files .*", line) for line in bars), bars


def test_rate_waits_for_a_second_and_two_reports() -> None:
    display, out, clock = _display(tty=False)
    display.interval = 0  # a line for every report
    display("embed", 0, 100, "chunks")
    clock.now += 0.5
    display("embed", 50, 100, "chunks")  # 100/s over half a second: too soon to say
    clock.now += 0.5
    display("embed", 60, 100, "chunks")
    lines = out.getvalue().splitlines()
    assert "/s" not in lines[0] and "/s" not in lines[1], lines
    assert "60.0/s" in lines[2], lines


def test_no_absurd_rate_for_a_burst_at_the_start() -> None:
    display, out, clock = _display(tty=True)
    display("load", 0, 5000, "chunks")
    clock.now += 1e-6
    display("load", 4000, 5000, "chunks")  # 4e9/s if divided by a microsecond
    clock.now += 2e-6
    display("load", 5000, 5000, "chunks")
    display.close()
    rates = [float(m) for m in re.findall(r"(\d+(?:\.\d+)?)[kM]?/s", out.getvalue())]
    assert rates == [], out.getvalue()


def test_overall_eta_matches_a_steady_pace() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=False, clock=clock, weights={"parse": 1.0})
    display("parse", 0, 10, "partitions")
    for done in range(1, 10):
        clock.now += 10
        display("parse", done, 10, "partitions")
        fraction, left = display.overall(clock.now)
        assert abs(fraction - done / 10) < 1e-9
        assert left is not None and abs(left - 10 * (10 - done)) < 1e-6, (done, left)
    assert "overall  90% ETA 10s" in out.getvalue().splitlines()[-1], out.getvalue()


def test_a_partitions_files_are_not_the_stage() -> None:
    """Tally totals cover only the partitions started: 90 of the first partition's 100 files is not 90 %."""
    display, out, clock = _display(tty=False)
    display("scan", 14, 14, "partitions")
    display("parse", 90, 100, "files")
    assert display.stage_fraction("parse") <= 1 / 14
    display("parse", 13, 14, "partitions")
    display("parse", 1390, 1400, "files")
    assert 13 / 14 <= display.stage_fraction("parse") < 1
    assert "(13/14 partitions)" in display._line("parse", clock.now)


def test_each_dagster_run_starts_a_new_round() -> None:
    """Several key ranges are several runs, each scan → load: the second must not show 100 % at once."""
    display, out, clock = _display(tty=False)
    for stage in ("scan", "parse", "embed", "load"):
        clock.now += 5
        display(stage, 2, 2, "partitions")
    assert display.overall(clock.now)[0] == 1.0
    clock.now += 5
    display("scan", 3, 3, "partitions")
    clock.now += 5
    display("parse", 1, 3, "partitions")
    fraction, left = display.overall(clock.now)
    assert fraction < 0.3 and left is not None and left > 0, (fraction, left)


def test_late_reports_from_threads_do_not_go_backwards() -> None:
    display, out, clock = _display(tty=False)
    display.interval = 0
    display("parse", 5, 10, "files")
    display("parse", 4, 10, "files")  # a thread that left Tally's lock earlier arrives later
    assert out.getvalue().splitlines()[-1].startswith("progress: parse 5/10 files"), out.getvalue()


def test_tty_stage_change_keeps_the_previous_stage_line() -> None:
    display, out, clock = _display(tty=True)
    display("embed", 0, 50, "chunks")
    clock.now += 0.01
    display("embed", 50, 50, "chunks")  # throttled: not drawn yet; embed reports no partitions
    clock.now += 0.01
    display("load", 0, 2, "partitions")
    shown = screen(out.getvalue())
    assert "embed 50/50 chunks" in shown[-2], shown
    assert "load  0/2 partitions" in shown[-1], shown
    clock.now += 0.01
    display("load", 2, 2, "partitions")  # a finished stage is always drawn and ends its line
    assert out.getvalue().endswith("\n") and "load  2/2 partitions" in screen(out.getvalue())[-2]


def test_close_draws_the_latest_state() -> None:
    display, out, clock = _display(tty=True)
    display("parse", 0, 10, "files")
    clock.now += 0.01
    display("parse", 7, 10, "files")  # throttled
    display.close()
    shown = screen(out.getvalue())
    assert shown[-1] == "" and "parse 7/10 files" in shown[-2], shown


def test_logs_keep_the_latest_state_at_a_stage_change_and_close() -> None:
    display, out, clock = _display(tty=None)  # StringIO is no TTY
    display("embed", 0, 100, "chunks")
    clock.now += 1
    display("embed", 100, 100, "chunks")  # within the interval: no line yet
    display("load", 0, 3, "partitions")
    clock.now += 1
    display("load", 1, 3, "partitions")
    display.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1:3] for line in lines] == [
        ["embed", "0/100"], ["embed", "100/100"], ["load", "0/3"], ["load", "1/3"]], lines
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_bar_wider_than_the_terminal_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapped bar would leave its first row behind at each redraw."""

    class Tty(io.StringIO):
        def fileno(self) -> int:
            return 2

    monkeypatch.setattr("doc_migration.terminal.os.get_terminal_size", lambda fd: os.terminal_size((40, 24)))
    out, clock = Tty(), Clock()
    display = ProgressDisplay(out, tty=True, clock=clock)
    for done in range(0, 1000, 100):
        clock.now += 1
        display("embed", done, 1000, "chunks")
    display.close()
    assert all(len(line) < 40 for line in screen(out.getvalue())), screen(out.getvalue())


def test_log_handler_level_and_errors_in_messages() -> None:
    display, out, clock = _display(tty=True)
    handler = display.log_handler()
    assert isinstance(handler, logging.Handler)
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "quiet", None, None)
    warning = logging.LogRecord("x", logging.WARNING, __file__, 1, "loud %s", ("now",), None)
    for record in (info, warning):
        if record.levelno >= handler.level:
            handler.handle(record)
    assert out.getvalue() == "WARNING x: loud now\n"


def test_weights_are_configurable() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=False, clock=clock, weights={"embed": 3.0, "load": 1.0})
    display("embed", 4, 4, "partitions")
    assert display.overall(clock.now)[0] == 0.75


def test_format_edges() -> None:
    assert [format_duration(s) for s in (-3, 59.6, 3599.5, float("inf"), float("nan"))] == [
        "0s", "1m00s", "1h00m", "?", "?"]
    assert [format_rate(r) for r in (0, 0.05, 999.96, 999_960, float("inf"), -1)] == [
        "0.0/s", "3.0/min", "1.0k/s", "1.0M/s", "?/s", "?/s"]


def test_tty_redraws_about_ten_times_a_second_and_always_the_end() -> None:
    display, out, clock = _display(tty=True)
    for done in range(100):  # 100 reports in one second
        clock.now += 0.01
        display("parse", done, 100, "files")
    assert 8 <= out.getvalue().count("\r") <= 12, out.getvalue().count("\r")
    display("parse", 4, 4, "partitions")  # at once after the last redraw: drawn anyway, line ended
    shown = screen(out.getvalue())
    assert shown[-1] == "" and "(4/4 partitions) 100.0%" in shown[-2], shown
