"""A cycle run from the command line: the progress bar, and Ctrl-C.

The bar goes to standard error, and only when that is a terminal: cron and
pipes get the summary alone. It is redrawn at most :data:`REDRAW_SECONDS`
apart, on one line, and wiped before the summary is printed. A log line (-v)
wipes it first and draws it again under itself (``acode_sync.cli.logs``).

Ctrl-C asks the cycle to stop between batches: the batch in flight finishes
(the engine hears "stop" from the bar's ``advance``, after the batch was
marked), and the command says what was done and what remains, exit 1. A
second Ctrl-C stops at once: the local transaction in flight rolls back, and
a batch the server had already committed is answered as duplicates next time.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import click

from acode_sync.cli import formatting, logs
from acode_sync.errors import SyncIncomplete
from acode_sync.progress import DOWNLOAD, UPLOAD

if TYPE_CHECKING:
    from acode_sync.engine import CycleReport, SyncEngine

log = logging.getLogger(__name__)

REDRAW_SECONDS = 0.1
BAR_WIDTH = 24
LABEL = {UPLOAD: "↑ Uploading", DOWNLOAD: "↓ Downloading"}


class StopRequested(BaseException):
    """Raised between batches after Ctrl-C. Not an Exception: no handler of an
    ordinary failure may take it for one."""


class CycleProgress:
    """The engine's :class:`acode_sync.progress.Progress`: counts what is done,
    draws a bar when ``stream`` is a terminal, and stops the cycle between
    batches once Ctrl-C was pressed."""

    def __init__(
        self,
        stream: TextIO | None,
        *,
        on_start: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.on_start = on_start  # once, when the cycle has the lock and the server
        self.started_cycle = False
        self.clock = clock
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.phase: str | None = None
        self.stop_requested = False
        self._drawn_at = 0.0
        self._drawn = False

    # -- the engine's side ---------------------------------------------------

    def total(self, phase: str, count: int) -> None:
        if not self.started_cycle:
            self.started_cycle = True
            if self.on_start is not None:
                self.on_start()
        self.totals[phase] = count
        log.debug("%s: %d to do", phase, count)
        self.done.setdefault(phase, 0)
        self.started[phase] = self.clock()
        self.phase = phase
        if count:
            self.draw(force=True)

    def advance(self, phase: str, count: int) -> None:
        self.done[phase] = self.done.get(phase, 0) + count
        log.debug("%s: %d/%d done", phase, self.done[phase], self.totals.get(phase, 0))
        self.phase = phase
        self.draw()
        if self.stop_requested:
            raise StopRequested()

    # -- the terminal --------------------------------------------------------

    def line(self, now: float) -> str:
        """``↑ Uploading  [#####.......]  1200/40000  3.1k/s  ETA 12s``"""
        phase = self.phase or UPLOAD
        done = self.done.get(phase, 0)
        total = max(self.totals.get(phase, 0), done)
        share = done / total if total else 1.0
        filled = int(share * BAR_WIDTH)
        elapsed = max(now - self.started.get(phase, now), 1e-9)
        rate = done / elapsed
        eta = f"ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else "ETA -"
        return (
            f"{LABEL[phase]}  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]  "
            f"{done}/{total}  {_rate(rate)}  {eta}"
        )

    def draw(self, *, force: bool = False) -> None:
        if self.stream is None:
            return
        now = self.clock()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        self.stream.write("\r\x1b[K" + self.line(now))
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Wipe the bar's line, so the next text starts on a clean line."""
        if self.stream is not None and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """The bar wiped for the time of the block, drawn again after it: a log
        line (acode_sync.cli.logs) gets a line of its own, the bar stays under it."""
        drawn = self._drawn
        self.clear()
        try:
            yield
        finally:
            if drawn:
                self.draw(force=True)


def _rate(per_second: float) -> str:
    if per_second >= 1000:
        return f"{per_second / 1000:.1f}k/s"
    return f"{per_second:.0f}/s"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def bar_stream(*, quiet: bool) -> TextIO | None:
    """Standard error when it is a terminal and the user did not ask for quiet."""
    if quiet:
        return None
    stream = sys.stderr
    try:
        return stream if stream.isatty() else None
    except (AttributeError, ValueError):
        return None


def run_cycle(
    engine: SyncEngine,
    conn: Any,
    *,
    ignore_backoff: bool,
    quiet: bool,
    on_start: Callable[[], None] | None = None,
) -> tuple[CycleReport, bool]:
    """One cycle with the bar (when standard error is a terminal) and Ctrl-C
    between batches; an interrupted cycle is reported and ends in exit 1.
    Returns the report and whether the cycle started (``on_start`` was called:
    it had the lock and the server; not when paused, offline or busy)."""
    progress = CycleProgress(bar_stream(quiet=quiet), on_start=on_start)

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if progress.stop_requested:
            raise KeyboardInterrupt
        progress.stop_requested = True
        progress.clear()
        click.echo("Stopping after the batch in flight (Ctrl-C again to stop at once)...", err=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    if progress.stream is not None:
        logs.bar = progress  # log lines go above the bar, not into it
    try:
        report = engine.sync_once(ignore_backoff=ignore_backoff, progress=progress)
        return report, progress.started_cycle
    except StopRequested:
        progress.clear()
        _interrupted(progress, conn, finished=True)
        raise SyncIncomplete("interrupted") from None
    except KeyboardInterrupt:
        progress.clear()
        _interrupted(progress, conn, finished=False)
        raise SyncIncomplete("interrupted") from None
    finally:
        logs.bar = None
        signal.signal(signal.SIGINT, previous)
        progress.clear()


def _interrupted(progress: CycleProgress, conn: Any, *, finished: bool) -> None:
    """What an interrupted cycle did, and what is left, on standard error."""
    from acode_sync.outbox import counts

    up = progress.done.get(UPLOAD, 0)
    down = progress.done.get(DOWNLOAD, 0)
    left = counts(conn)
    flight = (
        "the batch in flight finished"
        if finished
        else "the batch in flight was rolled back locally; it goes again next time"
    )
    lines = [
        f"Interrupted ({flight}).",
        f"  ↑ Uploaded: {formatting.plural(up, 'item')}; "
        f"{formatting.plural(left.depth, 'item')} remain in the queue",
    ]
    if DOWNLOAD in progress.totals:
        remaining = max(0, progress.totals[DOWNLOAD] - down)
        lines.append(
            f"  ↓ Downloaded: {formatting.plural(down, 'change')}; "
            f"about {remaining} remain on the server"
        )
    lines.append("Run 'acode sync now' to go on.")
    for line in lines:
        click.echo(line, err=True)
