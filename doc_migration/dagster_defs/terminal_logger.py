"""The Dagster logger of `doc-migrate` runs: Dagster's messages as one line each, written above the
progress bar (through the CLI's display), stack traces only with ``--debug``.

The UI and `dagster job execute` keep Dagster's own console logger: a run whose config names no
logger gets Dagster's defaults, and only the CLI names this one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import dagster as dg

_write: Callable[[str], None] | None = None


def set_line_writer(write: Callable[[str], None] | None) -> None:
    """Where the lines go (the CLI's progress display); ``None``: stderr."""
    global _write
    _write = write


def _emit(text: str) -> None:
    if _write is not None:
        _write(text)
    else:
        print(text, file=sys.stderr, flush=True)


def emit_line(text: str) -> None:
    """A progress line on the CLI's display (stderr outside the CLI), whatever the log level."""
    _emit(text)


class _OneLine(logging.Handler):
    def __init__(self, level: int, debug: bool) -> None:
        super().__init__(level)
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if not self.debug:
                # Dagster's step failures carry the error and its stack trace after the first line; the
                # CLI prints each failure's cause itself at the end of the run.
                message = message.strip().splitlines()[0] if message.strip() else message
            _emit(f"dagster {record.levelname}: {message}")
        except Exception:  # a log line must never fail a run
            self.handleError(record)


@dg.logger(config_schema={"log_level": dg.Field(str, default_value="WARNING"),
                          "debug": dg.Field(bool, default_value=False)},
           description="One line per message, above doc-migrate's progress bar (stack traces with --debug).")
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = logging.getLevelName(str(init_context.logger_config["log_level"]).upper())
    logger = logging.getLogger("doc_migration.dagster_run")
    logger.propagate = False
    logger.setLevel(level if isinstance(level, int) else logging.WARNING)
    logger.handlers = [_OneLine(logger.level, bool(init_context.logger_config["debug"]))]
    return logger
