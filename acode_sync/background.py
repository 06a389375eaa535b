"""The engine's thread: the loop a host embeds (``SyncEngine.start``) and
``acode-sync run`` drives.

:class:`Supervisor` is one cycle's policy: it never lets an expected failure
end the loop. Offline is a state (one log line, the queue untouched); a remote
that answers and refuses us (a :class:`SetupError`) is tried again only every
``retry.max_delay_seconds``; a paused workspace moves nothing.

:class:`EngineThread` is the thread. Every ``upload.poll_interval_seconds`` it
runs a cycle (a pull in it every ``download.poll_interval_seconds``), one
batch per cycle so that :meth:`EngineThread.stop` waits for at most one batch
in flight (a backlog is drained by cycles back to back). With
``follow.enabled`` it also checks, cheaply and often (without it, the head
check below still runs, once per upload poll, so that another device's change
waits for an upload poll rather than the slower download poll):

- the local file: ``PRAGMA data_version`` on its own connection every
  ``follow.local_check_seconds`` (it changes when any other connection, in any
  process, commits), then ``max(seq)`` of the outbox: a new row is pushed now;
- the server: every ``follow.head_check_seconds`` one index probe of the head
  of this owner's change log (the primary key (owner_id, seq) of
  ``acode_sync.changes``, which row-level security already scopes to the
  device's role), on one autocommit connection without prepared statements, so
  PgBouncer in transaction mode works. A pull runs only when the head moved.

Nothing stays on the server between statements: no LISTEN, no session state.
The host's requests (``sync_now``, ``stop``, a wake after ``pause``/``resume``)
reach the thread through a condition variable.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from acode_sync.clock import Clock
from acode_sync.config import SyncConfig
from acode_sync.errors import AcodeSyncError, ConnectionFailed, SetupError, SyncTimeout
from acode_sync.events import Event, Tracker
from acode_sync.outbox import max_seq as outbox_max_seq
from acode_sync.report import CycleReport
from acode_sync.state import note_error
from acode_sync.workspace import Workspace, data_version

log = logging.getLogger(__name__)

# One batch per cycle: stop() waits for one batch in flight, never a backlog.
BATCHES_PER_CYCLE = 1
HEAD_SQL = (
    "SELECT seq FROM acode_sync.changes WHERE owner_id = current_user::text "
    "ORDER BY seq DESC LIMIT 1"
)

Listener = Callable[[Event], None]


class Cycles(Protocol):
    """What the thread needs of a SyncEngine (engine.py imports this module)."""

    workspace: Workspace
    config: SyncConfig
    clock: Clock
    connect: Callable[[str], psycopg.Connection[Any]]

    def remote_url(self) -> str: ...

    def sync_once(
        self, *, ignore_backoff: bool = ..., max_batches: int | None = ..., pull: bool = ...
    ) -> CycleReport: ...


class Supervisor:
    """One cycle that never lets an expected failure end the loop."""

    def __init__(
        self,
        engine: Cycles,
        *,
        interval: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.interval = engine.config.upload.poll_interval_seconds if interval is None else interval
        self.clock = clock or engine.clock
        self.cycles = 0
        self.offline = False
        self.paused = False
        self._refused: str | None = None  # the set-up error of this episode, if any
        self._retry_at: datetime | None = None
        self._last_pull: datetime | None = None

    @property
    def quiet(self) -> bool:
        """Offline, refused or paused: the fast checks rest, the poll goes on."""
        return self.offline or self.paused or self._refused is not None

    def wait(self) -> float:
        if self._retry_at is None:
            return self.interval
        return max(self.interval, (self._retry_at - self.clock()).total_seconds())

    def cycle(
        self,
        *,
        force_pull: bool = False,
        ignore_backoff: bool = False,
        max_batches: int | None = None,
        reraise: bool = False,
    ) -> CycleReport | None:
        """One cycle; None when it failed (logged, recorded). ``reraise``
        (``sync_now``) raises the coded error after recording it."""
        now = self.clock()
        if not reraise and self._retry_at is not None and now < self._retry_at:
            return None  # refused: the next attempt is at the backoff cap
        self.cycles += 1
        cadence = self.engine.config.download.poll_interval_seconds
        pull = (
            force_pull
            or self._last_pull is None
            or (now - self._last_pull).total_seconds() >= cadence
        )
        try:
            report = self.engine.sync_once(
                pull=pull, ignore_backoff=ignore_backoff, max_batches=max_batches
            )
        except ConnectionFailed as exc:
            self.count("offline")
            self._end_refusal()
            if not self.offline:
                log.warning("%s; changes queue locally, retrying every %gs", exc, self.interval)
            else:
                log.debug("still offline: %s", exc)
            self.offline = True
            if reraise:
                raise
            return None
        except SetupError as exc:
            self.count("setup")
            self._refuse(exc, now)
            if reraise:
                raise
            return None
        except (AcodeSyncError, psycopg.Error, sqlite3.OperationalError) as exc:
            # A lock held by a long `now`, a busy database, a server without our
            # schema: record it for `status`, and try again next time.
            self.count("error")
            self._end_refusal()
            log.warning("cycle failed: %s", exc)
            self._note(str(exc))
            if reraise:
                raise
            return None
        if pull and not report.paused and not report.pull_failed:
            self._last_pull = now
        if self.offline:
            log.warning("remote reachable again")
            self.offline = False
        if self._refused is not None:
            log.warning("the remote accepts us again")
            self._end_refusal()
        if report.paused != self.paused:
            log.warning("sync %s", "paused: changes queue locally" if report.paused else "resumed")
            self.paused = report.paused
        self.count("paused" if report.paused else "incomplete" if report.incomplete else "ok")
        for error in report.push.errors:
            log.warning("%s", error)
        if report.push.uploaded:
            log.info("uploaded %d item(s)", report.push.uploaded)
        return report

    def count(self, outcome: str) -> None:
        """A cycle's outcome (the run command counts them for its metrics)."""

    def _refuse(self, exc: SetupError, now: datetime) -> None:
        cap = self.engine.config.retry.max_delay_seconds
        if str(exc) != self._refused:
            log.error("%s. Sync waits for this; trying again every %gs.", exc, cap)
        else:
            log.debug("still refused: %s", exc)
        self._refused = str(exc)
        self._retry_at = now + timedelta(seconds=cap)
        self.offline = False  # it answered: whatever comes next is news

    def _end_refusal(self) -> None:
        self._refused = None
        self._retry_at = None

    def _note(self, message: str) -> None:
        try:
            conn = self.engine.workspace.connect()
            try:
                note_error(conn, message, None, self.clock)
            finally:
                conn.close()
        except (AcodeSyncError, sqlite3.Error) as exc:
            log.debug("could not record the error: %s", exc)


@dataclass
class _Request:
    """A host's ``sync_now``, served on the engine's thread."""

    done: threading.Event = field(default_factory=threading.Event)
    report: CycleReport | None = None
    error: BaseException | None = None


class EngineThread:
    """The engine's background thread (see the module's docstring)."""

    def __init__(self, supervisor: Supervisor, listeners: list[Listener]) -> None:
        self.supervisor = supervisor
        self.engine = supervisor.engine
        self.listeners = listeners
        self._cond = threading.Condition()
        self._stopping = False
        self._woken = False
        self._requests: deque[_Request] = deque()
        name = f"acode-sync {self.engine.workspace.root}"
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._pg: psycopg.Connection[Any] | None = None
        self._head: int | None = None

    # -- the host's side (any thread) ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None) -> bool:
        """Ask the thread to leave after the batch in flight; True when it has."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """Run a cycle now (after pause/resume: the mode changes at once)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def sync_now(self, timeout: float | None) -> CycleReport:
        request = _Request()
        with self._cond:
            if self._stopping or not self._thread.is_alive():
                raise SyncTimeout("the engine is stopped; nothing was synced")
            self._requests.append(request)
            self._cond.notify_all()
        if not request.done.wait(timeout):
            raise SyncTimeout(f"sync_now: no result after {timeout:g}s; the cycle goes on")
        if request.error is not None:
            raise request.error
        assert request.report is not None
        return request.report

    # -- the engine's thread --------------------------------------------------------

    def _main(self) -> None:
        local = self.engine.workspace.connect()
        try:
            self._loop(local)
        except BaseException:
            log.exception("the engine's thread failed")
            raise
        finally:
            local.close()
            self._close_pg()
            with self._cond:
                self._stopping = True
                pending, self._requests = list(self._requests), deque()
            for request in pending:
                request.error = SyncTimeout("the engine stopped before this sync ran")
                request.done.set()

    def _loop(self, local: sqlite3.Connection) -> None:
        follow = self.engine.config.follow
        # Without write-following the head is still probed, once per upload poll:
        # another device's change waits for that poll, not the download poll.
        head_every = follow.head_check_seconds if follow.enabled else self.supervisor.interval
        tracker = Tracker(local, self.engine.config)
        version = data_version(local)
        outbox = outbox_max_seq(local)
        next_cycle = time.monotonic()  # the first cycle now, the first head check after it
        next_head = next_cycle + head_every
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(next_cycle, next_head) - now)
            if follow.enabled:
                timeout = min(timeout, follow.local_check_seconds)
            with self._cond:
                if not (self._stopping or self._requests or self._woken):
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                request = self._requests.popleft() if self._requests else None
                due, self._woken = self._woken, False
            if request is not None:
                outbox = outbox_max_seq(local)
                self._serve(request, tracker)
                continue
            now = time.monotonic()
            due = due or now >= next_cycle
            pull = False
            if not self.supervisor.quiet:
                if follow.enabled:
                    seen = data_version(local)
                    if seen != version:
                        version = seen
                        due = due or outbox_max_seq(local) > outbox
                if now >= next_head:
                    next_head = now + head_every
                    pull = self._head_moved()
            elif now >= next_head:
                next_head = now + head_every
            if not (due or pull):
                continue
            outbox = outbox_max_seq(local)
            report = self._run(tracker, force_pull=pull)
            more = report is not None and report.push.batches >= BATCHES_PER_CYCLE
            next_cycle = time.monotonic() + (0.0 if more else self.supervisor.wait())

    def _run(self, tracker: Tracker, **how: Any) -> CycleReport | None:
        tracker.before()
        try:
            return self.supervisor.cycle(max_batches=BATCHES_PER_CYCLE, **how)
        finally:
            self._emit([*tracker.after(), *tracker.health(self.supervisor.clock())])

    def _serve(self, request: _Request, tracker: Tracker) -> None:
        try:
            request.report = self._run(tracker, force_pull=True, ignore_backoff=True, reraise=True)
        except BaseException as exc:  # handed to the caller, who raises it
            request.error = exc
        finally:
            request.done.set()

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:  # a host's bug must not stop sync
                    log.exception("an event listener failed on %r", event)

    def _head_moved(self) -> bool:
        """One index probe of the head of the change log; True when it moved."""
        try:
            if self._pg is None or self._pg.closed:
                self._pg = self.engine.connect(self.engine.remote_url())
            row = self._pg.execute(HEAD_SQL).fetchone()
        except (AcodeSyncError, psycopg.Error) as exc:
            log.debug("head check failed: %s", exc)
            self._close_pg()
            return False
        head = int(row[0]) if row else 0
        moved = self._head is not None and head != self._head
        self._head = head
        return moved

    def _close_pg(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(psycopg.Error):
                self._pg.close()
            self._pg = None
