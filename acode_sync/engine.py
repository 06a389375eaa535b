"""The SyncEngine: one cycle (push, then pull and apply), the workspace lock,
and the embeddable engine around it (start/stop/sync_now/status/pause/resume,
its thread in ``acode_sync.background``; docs/API.md).

A cycle holds an exclusive lock on ``.agent/sync.lock`` so that a cron
``once``, a user's ``now`` and a running ``run`` never move the same rows at
the same time; the others wait for it (briefly, saying who holds it) instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import psycopg

from acode_sync import outbox, remote, retention
from acode_sync.background import EngineThread, Listener, Supervisor
from acode_sync.clock import Clock, iso, utcnow
from acode_sync.config import SyncConfig
from acode_sync.download import Puller, PullReport
from acode_sync.errors import (
    LINK,
    SETUP,
    ConnectionFailed,
    SetupError,
    SyncTimeout,
    UsageError,
    WorkspaceBusy,
)
from acode_sync.health import Health, figures
from acode_sync.link import note_contact, note_down
from acode_sync.progress import Progress
from acode_sync.queries import query
from acode_sync.report import CycleReport as CycleReport
from acode_sync.state import is_paused as is_paused
from acode_sync.state import note_error as note_error
from acode_sync.state import set_kind as _set_kind
from acode_sync.state import set_paused
from acode_sync.upload import Uploader
from acode_sync.workspace import Workspace, write

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 30.0
# Overrides LOCK_WAIT_SECONDS: a cron job may rather give up at once (0).
LOCK_WAIT_ENV = "ACODE_SYNC_LOCK_WAIT_SECONDS"

Connect = Callable[[str], psycopg.Connection[Any]]


def connect_remote(url: str) -> psycopg.Connection[Any]:
    # Autocommit: each push is one statement, its own transaction, one round
    # trip. No prepared statements, so it also runs behind PgBouncer.
    return remote.connect(url, autocommit=True, prepare_threshold=None)


class SyncEngine:
    def __init__(
        self,
        workspace: Workspace,
        config: SyncConfig | None = None,
        *,
        clock: Clock = utcnow,
        rand: Callable[[], float] = random.random,
        connect: Connect = connect_remote,
        on_wait: Callable[[str], None] = log.warning,
        on_event: Listener | None = None,
    ) -> None:
        self.workspace = workspace
        self.on_wait = on_wait
        self.config = config or workspace.config()
        self.clock = clock
        self.rand = rand
        self.connect = connect
        self._listeners: list[Listener] = [on_event] if on_event is not None else []
        self._thread: EngineThread | None = None
        self._guard = threading.Lock()

    # -- the embeddable engine (any thread may call these) ---------------------------

    def start(self, *, supervisor: Supervisor | None = None) -> None:
        """Start the engine's background thread and return at once (a no-op when
        it runs). ``supervisor``: the cycle policy (``acode-sync run`` passes its
        Runner, which counts cycles for its metrics)."""
        self.remote_url()  # a configuration error stops us here, not on the thread
        _ = self.device_id
        with self._guard:
            if self._thread is not None and self._thread.alive:
                return
            self._thread = EngineThread(supervisor or Supervisor(self), self._listeners)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Let the batch in flight finish (an interrupted one rolls back: the
        outbox rows stay Pending and are answered as duplicates next time), then
        join the thread. True when the thread is gone within ``timeout``."""
        with self._guard:
            thread, self._thread = self._thread, None
        return thread is None or thread.stop(timeout)

    def sync_now(self, timeout: float | None = None) -> CycleReport:
        """One full cycle (push, pull, apply; backoff ignored) on the engine's
        thread, and its report. Raises the cycle's coded error (ConnectionFailed,
        SetupError, ...), or SyncTimeout after ``timeout`` seconds. On an engine
        that is not started, the cycle runs on a thread of its own."""
        with self._guard:
            thread = self._thread
        if thread is not None and thread.alive:
            return thread.sync_now(timeout)
        return _off_thread(lambda: self.sync_once(ignore_backoff=True), timeout)

    def status(self) -> Health:
        """The figures of ``acode-sync status --json`` (``.as_json()`` is that document)."""
        conn = self.workspace.connect(readonly=True)
        try:
            return figures(conn, self.clock(), self.config)
        finally:
            conn.close()

    def pause(self) -> None:
        """Persist the pause flag (``acode sync pause``'s): nothing moves, in
        this process or any other, until :meth:`resume`."""
        self._set_paused(True)

    def resume(self) -> None:
        """Clear the pause flag; a started engine syncs at once."""
        self._set_paused(False)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on the engine's thread (acode_sync.events)."""
        self._listeners.append(listener)

    def _set_paused(self, paused: bool) -> None:
        conn = self.workspace.connect()
        try:
            set_paused(conn, paused)
        finally:
            conn.close()
        thread = self._thread
        if thread is not None:
            thread.wake()

    def __enter__(self) -> SyncEngine:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- one cycle -------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        if not self.config.device_id:
            raise UsageError(
                f"{self.workspace.config_path}: sync.device_id is not set; run 'acode-sync init'"
            )
        return self.config.device_id

    def remote_url(self) -> str:
        if not self.config.remote_url:
            raise UsageError(
                f"{self.workspace.config_path}: sync.remote.url is not set "
                "(or set ACODE_SYNC_REMOTE_URL)"
            )
        return self.config.remote_url

    def sync_once(
        self,
        *,
        ignore_backoff: bool = False,
        max_batches: int | None = None,
        pull: bool = True,
        progress: Progress | None = None,
    ) -> CycleReport:
        """One full cycle. Raises ConnectionFailed (queue untouched) when offline,
        SetupError when the remote refuses us; either is recorded for ``status``.
        ``progress`` hears of every batch and page (``acode_sync.progress``)."""
        conn = self.workspace.connect()
        try:
            if not self.config.enabled:
                return CycleReport(disabled=True)
            if is_paused(conn):
                return CycleReport(paused=True)
            url = self.remote_url()
            device = self.device_id
            with self.lock():
                try:
                    try:
                        report = self._cycle(
                            conn, url, device, ignore_backoff, max_batches, pull, progress
                        )
                    except ConnectionFailed as exc:
                        note_error(conn, str(exc), LINK, self.clock)
                        raise
                    except SetupError as exc:
                        exc.setting = self.config.remote_url_from
                        note_error(conn, str(exc), SETUP, self.clock)
                        raise
                    now = self.clock()
                    link = report.push.link_error
                    error = link or _first(report.push.errors)
                    with write(conn):
                        # A push that lost its link is not a sync: last_push_at stays.
                        conn.execute(
                            query("record_cycle"),
                            {"pushed": not report.push.failed, "now": iso(now), "error": error},
                        )
                        _set_kind(conn, LINK if link else None)
                        if link:
                            note_down(conn, iso(now))
                    retention.prune(conn, now - timedelta(days=self.config.retention.days))
                    return report
                finally:
                    # Online or not: what was captured since the last cycle goes
                    # into the queue tally, so `queue` and `status` do not count
                    # it (after the marking: what it settled is not counted in).
                    outbox.fold(conn)
        finally:
            conn.close()

    def _cycle(
        self,
        conn: Any,
        url: str,
        device: str,
        ignore_backoff: bool,
        max_batches: int | None,
        pull: bool,
        progress: Progress | None = None,
    ) -> CycleReport:
        with self.connect(url) as pg:
            with write(conn):
                note_contact(conn, iso(self.clock()))
            uploader = Uploader(
                conn,
                self.config,
                device,
                clock=self.clock,
                rand=self.rand,
                conflicts_dir=self.workspace.conflicts_dir,
            )
            report = CycleReport(
                push=uploader.push(
                    pg, ignore_backoff=ignore_backoff, max_batches=max_batches, progress=progress
                )
            )
            puller = Puller(
                conn,
                self.config,
                device,
                clock=self.clock,
                conflicts_dir=self.workspace.conflicts_dir,
            )
            if pull:
                report.pull = self._pull(puller, pg, report, progress)
        return report

    def _pull(
        self,
        puller: Puller,
        pg: psycopg.Connection[Any],
        report: CycleReport,
        progress: Progress | None = None,
    ) -> PullReport:
        """Pull after push; a link lost here leaves the cursor where it was."""
        try:
            return puller.pull(pg, progress=progress)
        except psycopg.OperationalError as exc:
            message = f"{ConnectionFailed.code}: pull interrupted: {exc}"
            report.push.errors.append(message)
            report.push.link_error = report.push.link_error or message
            report.pull_failed = True
            return PullReport()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``.agent/sync.lock`` (flock: the kernel drops it when the holder
        dies, so a killed process never leaves it behind). A process that has
        to wait says at once who holds it; after :data:`LOCK_WAIT_SECONDS` it
        gives up with :class:`WorkspaceBusy`."""
        path = self.workspace.agent_dir / "sync.lock"
        with path.open("a+") as handle:
            if not _try_lock(handle):
                holder = _holder(path)
                wait = lock_wait_seconds()
                self.on_wait(
                    f"Waiting up to {wait:g}s for the workspace lock {path}: held by {holder}."
                )
                deadline = time.monotonic() + wait
                while not _try_lock(handle):
                    if time.monotonic() > deadline:
                        raise WorkspaceBusy(
                            f"workspace busy: {_holder(path)} still holds {path} after "
                            f"{wait:g}s; nothing was synced, try again when it is done"
                        )
                    time.sleep(0.1)
            # Who holds it, for the next one to wait: pid, since, command line.
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n{iso(self.clock())}\n{_command_line()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def lock_wait_seconds() -> float:
    """How long to wait for the lock: :data:`LOCK_WAIT_ENV`, else the default."""
    value = os.environ.get(LOCK_WAIT_ENV)
    if not value:
        return LOCK_WAIT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{LOCK_WAIT_ENV}={value!r}: must be a number of seconds") from None
    if seconds < 0:
        raise UsageError(f"{LOCK_WAIT_ENV}={value!r}: must not be negative")
    return seconds


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    """``pid 123 (acode-sync run), since 2026-...`` from the lock file, as far as known."""
    try:
        pid, since, command = ([*path.read_text(encoding="utf-8").splitlines(), "", "", ""])[:3]
    except OSError:
        pid = since = command = ""
    if not pid:
        return "another acode-sync process"  # it has not written its name yet
    return f"pid {pid} ({command or 'unknown command'}), since {since or 'unknown'}"


def _command_line() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return shlex.join(argv)


def _off_thread(work: Callable[[], CycleReport], timeout: float | None) -> CycleReport:
    """Run ``work`` on a thread of its own; its result, or its error, or SyncTimeout."""
    box: list[CycleReport] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # handed to the caller, who raises it
            errors.append(exc)

    worker = threading.Thread(target=target, name="acode-sync sync_now", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SyncTimeout(f"sync_now: no result after {timeout:g}s; the cycle goes on")
    if errors:
        raise errors[0]
    return box[0]


def _first(errors: list[str]) -> str | None:
    return errors[0] if errors else None
