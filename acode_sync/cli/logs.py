"""Logging for the command line: one handler on standard error, and the bar.

Loaded only when something may log (``acode_sync.cli._common.apply_logging``):
``acode chat add`` at the default level never imports :mod:`logging`.

A log line and the progress bar share standard error: while a bar is drawn
(:data:`bar`), the handler wipes the bar's line, writes the log line, and
draws the bar again under it, so neither overwrites the other.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from typing import Protocol

LEVELS = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.DEBUG}
FORMAT = "acode-sync: %(levelname)s: %(message)s"


class Bar(Protocol):
    def hidden(self) -> AbstractContextManager[None]:
        """Wipe the bar for the time of the block, and draw it again after."""


# The bar drawn on standard error now, if any (acode_sync.cli.progress sets it).
bar: Bar | None = None


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to whatever ``sys.stderr`` is when a record is emitted (a test's
    runner swaps it per invocation), on a line of its own beside the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        if bar is None:
            super().emit(record)
            return
        with bar.hidden():
            super().emit(record)


def configure(verbosity: int) -> None:
    """The package's log level for ``verbosity`` (-1 quiet, 0 default, 1
    verbose), with the handler installed once per process."""
    root = logging.getLogger("acode_sync")
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        handler = StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(LEVELS[verbosity])
