"""Short write locks for the bulk writes of a cycle: slices of about
:data:`HOLD_S`, and the lock left free after each long enough for a writer
that waited through it.

Why these numbers: another process that waits for SQLite's write lock with a
busy timeout (the coding CLI, Python's sqlite3) sleeps in SQLite's default
steps (:data:`BUSY_STEPS_MS`: 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms)
and takes the lock only when one of its retries finds it free; the sync
process does not queue behind it. A writer that arrived during a hold of h ms
is, at the release, in a sleep of at most step(h) ms (:func:`busy_step`), so
a free gap that long (and :data:`GAP_MARGIN_S` for a late wake-up) holds one
of its retries: it gets in after one hold and one gap. That is a gap of 7 ms
after a hold of 5 ms, 12 ms after one of 8 to 18 ms, 17 ms after one of 18 to
33 ms. A shorter gap lets its retries step past the free time, after which
they fall into the holds again and again while its steps grow (issue 9: gaps
of 12 ms at most, 5 after a short hold, gave waits of 80 to 235 ms behind
holds of 20 to 40 ms).
Back-to-back slices with no gap would starve it however short they are. The
gap is measured from the release, so a network wait between slices counts
towards it and costs nothing.

While another process writes, the WAL is also checkpointed after each slice.
Otherwise the automatic checkpoint runs inside the COMMIT that crosses 1,000
frames (after the lock is let go, but the hold is measured to the end of the
COMMIT): the gap after it would be longer than needed, and start only after
the checkpoint (issue 9: a new device's pull beside a writer took about 15%
longer so). The checkpoint runs on a thread of its own (:class:`Checkpointer`,
at a lower CPU priority), started at the gap's end as the next slice begins:
not in the gap, where the waiting writer commits, because its COMMIT's fsync
of the same WAL then waited for the checkpoint's I/O, 110-340 ms in a minute
of slow disk (issue 9, new devices pulling beside a writer: with the
checkpoint in the gap, the writer's max was over 100 ms in 4 pulls of 60 and
over 200 in 3; moved, over 100 in none of 35, for pulls 3% longer); not in
the caller's thread at the gap's end, which made the pull 20% slower.

Only while another process writes to the file (``PRAGMA data_version`` moved
in the last :data:`CONTENDED_S`, counted from the pacer's making, so a
writer that came during the round trip before the first slice counts) are
the gaps full; otherwise they are :data:`IDLE_GAP_S`, so a sync with nobody
else writing is not slowed by them, and a writer that shows up still finds
the lock free now and then, and once it has written the gaps widen.

A bulk write that leaves the lock free between its bursts by itself (the
marking of push results: the next batch is planned, reading only, between
two batches' markings) may run its slices back to back while uncontended, up
to :data:`MARK_RUN_S` of holding (``idle_run_s``): the burst then ends well
before a waiting writer's retry that much later, instead of being cut by
4 ms gaps its retries seldom hit.

The slice size adapts to the machine: each hold's duration sets the next
slice's rows (at least :data:`LEAST_ROWS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from acode_sync.workspace import data_version

HOLD_S = 0.015  # aimed-at write-lock hold per slice
# SQLite's default busy handler (sqliteDefaultBusyCallback): its sleeps between
# retries, in ms; 100 ms each after these.
BUSY_STEPS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
GAP_MARGIN_S = 0.002  # a waiter's retry a little late (its wake-up, a busy CPU)
IDLE_GAP_S = 0.004  # while no other process has written lately
MARK_RUN_S = 0.030  # back-to-back holds of a bursty write while uncontended
CONTENDED_S = 2.0  # how long a write by another process keeps the full gaps
FIRST_ROWS = 200  # rows of the first slice, before anything is measured
LEAST_ROWS = 25
CHECKPOINT_NICE = 10  # the checkpoint thread's CPU priority (Linux): the slices go first

log = logging.getLogger(__name__)


def busy_step(waited: float) -> float:
    """The sleep (s) that SQLite's busy handler is in after waiting ``waited``
    s: its next retry comes at most that long from now."""
    total = 0.0
    for step in BUSY_STEPS_MS:
        total += step / 1000
        if waited < total:
            return step / 1000
    return BUSY_STEPS_MS[-1] / 1000


@dataclass
class Pacer:
    """Slice sizes and the gaps between slices of one bulk write."""

    conn: sqlite3.Connection | None = None
    rows: int = FIRST_ROWS
    hold_s: float = HOLD_S
    # While uncontended, no gap until the lock has been held this long since
    # it was last free for IDLE_GAP_S (0: a gap after every slice).
    idle_run_s: float = 0.0
    _started: float = field(default=0.0, init=False)
    _released: float = field(default=0.0, init=False)
    _run_from: float = field(default=0.0, init=False)
    _gap: float = field(default=0.0, init=False)
    _version: int | None = field(default=None, init=False)
    _contended_until: float = field(default=0.0, init=False)
    _checkpoint_owed: bool = field(default=False, init=False)
    _checkpointer: Checkpointer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # What another process writes from here on counts, even before the
        # first slice: a writer that came during the network round trip before
        # it is waiting for the lock already, and would meet the short gaps.
        if self.conn is not None:
            self._version = data_version(self.conn)

    def before(self) -> float:
        """Wait until the lock has been free for the gap; the time it starts."""
        if self._contended():
            gap = self._gap
        elif time.perf_counter() - self._run_from < self.idle_run_s:
            gap = 0.0
        else:
            gap = min(self._gap, IDLE_GAP_S)
        rest = self._released + gap - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        if self._checkpoint_owed:
            self._checkpoint_owed = False
            self._start_checkpoint()
        started = self._started = time.perf_counter()
        if started - self._released >= IDLE_GAP_S:
            self._run_from = started  # the lock was free a while: a new run of holds
        return started

    def held(self, started: float, rows: int) -> None:
        """Inside the transaction, before COMMIT: the slice of ``rows`` has done
        its work since ``started``; size the next one. (Measured before
        COMMIT: an automatic WAL checkpoint in it is no work of the slice. A
        slice that is one autocommit statement, as ``retention.reclaim``'s,
        can only call it after, its COMMIT included.)"""
        work = max(time.perf_counter() - started, 1e-4)
        aimed = rows * self.hold_s / work
        # Halfway towards the aimed size: one slow slice does not cut the next
        # to nothing.
        self.rows = max(LEAST_ROWS, int((self.rows + aimed) / 2))

    def _contended(self) -> bool:
        """Whether another process wrote to the file lately (``data_version``
        moves only with other connections' commits); without a connection, always."""
        if self.conn is None:
            return True
        version = data_version(self.conn)
        now = time.perf_counter()
        if version != self._version:
            self._contended_until = now + CONTENDED_S
        self._version = version
        return now < self._contended_until

    def released(self) -> None:
        """After COMMIT: the gap starts now, as long as the busy step of a
        writer that has waited since the hold began; while another process
        writes, a checkpoint is owed, started when the gap ends (:meth:`before`)."""
        self._released = time.perf_counter()
        self._gap = busy_step(self._released - self._started) + GAP_MARGIN_S
        if self.conn is not None and self._released < self._contended_until:
            self._checkpoint_owed = True

    def close(self) -> None:
        """End the bulk write: wait for a checkpoint running, stop its thread.
        The pacer can go on after (a new thread is started when needed)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def __enter__(self) -> Pacer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start_checkpoint(self) -> None:
        if self._checkpointer is None:
            assert self.conn is not None  # owed only with a connection
            path = self.conn.execute("PRAGMA database_list").fetchone()[2]
            if not path:  # an in-memory database has no WAL
                return
            self._checkpointer = Checkpointer(path)
        self._checkpointer.start()


class Checkpointer:
    """PASSIVE checkpoints of one database file, one at a time, on a thread
    with a connection of its own. A PASSIVE checkpoint takes no lock a writer
    needs and waits for none: it copies what it can and returns."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Condition()
        self._running = False  # a checkpoint is asked for or running
        self._stopping = False
        self._thread = threading.Thread(
            target=self._loop, name="acode-sync-checkpoint", daemon=True
        )
        self._thread.start()

    def start(self) -> None:
        """Begin a checkpoint, unless one is running (it takes the new frames too)."""
        with self._wake:
            if not self._running:
                self._running = True
                self._wake.notify()

    def close(self) -> None:
        """Wait for a running checkpoint to end; stop the thread, close its connection."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _loop(self) -> None:
        if sys.platform.startswith("linux"):  # per thread there; per process elsewhere
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKPOINT_NICE)
        try:
            uri = f"{Path(self._path).as_uri()}?mode=rw"  # never makes a file
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.debug("background checkpoint of %s: %s", self._path, exc)
            return
        try:
            while True:
                with self._wake:
                    while not self._running and not self._stopping:
                        self._wake.wait()
                    if not self._running:
                        return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # SQLite's automatic checkpoint is left
                    log.debug("background checkpoint of %s: %s", self._path, exc)
                with self._wake:
                    self._running = False
                    self._wake.notify_all()
        finally:
            conn.close()
