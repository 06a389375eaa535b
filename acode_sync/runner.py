"""Operating the engine: the background processor (``run``) and the operator's
controls (pause/resume, retry of failed items).

The processor is the engine's own thread (``SyncEngine.start``, the loop and
its cycle policy in ``acode_sync.background``) plus what a daemon needs: the
rq-style signal handling below and the Prometheus endpoint. :class:`Runner`
is the cycle policy (a ``Supervisor``) that also counts outcomes for the
metrics; the thread runs it every ``upload.poll_interval_seconds`` (a test
passes a short interval, or calls :meth:`Runner.cycle` on a fake clock). Each
cycle pushes; it pulls too when the server's head moved or
``download.poll_interval_seconds`` have passed since the last good pull.

Offline is a state, not a crash: a cycle that cannot reach the remote changes
nothing locally (see ``upload``), logs one line, and the loop keeps polling;
the first good connection drains the queue.

A remote that answers and refuses us (a :class:`SetupError`: password,
database, role, grants, schema, URL) is not fixed by polling: the loop logs the
reason once, keeps running (an admin may fix the server while we wait), and
tries again only every ``retry.max_delay_seconds``, the backoff cap. It logs
again when the reason changes, or when it comes back after a good cycle.

Stopping follows rq's worker: the first SIGTERM/SIGINT lets the current cycle
finish and then exits 0; a second one exits at once with
``EXIT_SYNC_INCOMPLETE`` (local transactions roll back; a batch the server
committed but we did not mark is answered as duplicates next time).
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server

from acode_sync.background import Supervisor
from acode_sync.clock import Clock, iso
from acode_sync.engine import SyncEngine
from acode_sync.errors import (
    EXIT_SYNC_INCOMPLETE,
    UsageError,
)
from acode_sync.health import Health, build_registry, figures
from acode_sync.outbox import OutboxRow
from acode_sync.queries import query
from acode_sync.state import set_paused as set_paused
from acode_sync.workspace import write

log = logging.getLogger(__name__)

METRICS_ADDR = "127.0.0.1"


class Runner(Supervisor):
    """The background processor of one workspace: the engine's thread
    (``SyncEngine.start``) plus signal handling and the metrics endpoint."""

    def __init__(
        self,
        engine: SyncEngine,
        *,
        stop: threading.Event | None = None,
        interval: float | None = None,
        metrics_port: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(engine, interval=interval, clock=clock)
        self.sync_engine = engine
        self.stop = stop or threading.Event()
        self.metrics_port = metrics_port
        self.signals = 0
        self.metrics_url: str | None = None
        self._registry: CollectorRegistry | None = None
        self._outcomes: Counter | None = None

    # -- the loop --------------------------------------------------------------

    def run(self, announce: Callable[[str], None] = log.info) -> int:
        """Run the engine's thread until stopped; returns the exit code (0).
        ``announce`` gets the start-up lines (the CLI prints them, a library
        user may log them)."""
        self.engine.remote_url()  # a configuration error stops us before the loop
        _ = self.sync_engine.device_id
        server = self._start_metrics()
        announce(
            f"Running: polling every {self.interval:g}s. "
            "SIGTERM or Ctrl-C stops after the current cycle."
        )
        if self.metrics_url:
            announce(f"Metrics: {self.metrics_url}")
        try:
            self.sync_engine.start(supervisor=self)
            self.stop.wait()
            self.sync_engine.stop()
        finally:
            if server is not None:
                httpd, thread = server
                httpd.shutdown()
                httpd.server_close()
                thread.join()
        log.info("stopped after %d cycle(s)", self.cycles)
        return 0

    # -- stopping ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current cycle, then leave the loop."""
        self.stop.set()

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            raise SystemExit(EXIT_SYNC_INCOMPLETE)
        log.warning(
            "%s: stopping after the current cycle (send it again to stop now)",
            signal.Signals(signum).name,
        )
        # Event.set() takes the event's lock; a handler runs in the main thread,
        # which may hold that very lock inside Event.wait(). Set it from a thread.
        threading.Thread(target=self.request_stop, daemon=True).start()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop the rq way (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handle_signal)

    # -- metrics ----------------------------------------------------------------

    def read_figures(self) -> Health:
        conn = self.engine.workspace.connect()
        try:
            return figures(conn, self.clock(), self.engine.config)
        finally:
            conn.close()

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            self._registry = build_registry(self.read_figures)
            self._outcomes = Counter(
                "acode_sync_cycles",
                "Cycles of this run process by outcome.",
                ["outcome"],
                registry=self._registry,
            )
        return self._registry

    def count(self, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(outcome).inc()

    def _start_metrics(self) -> tuple[WSGIServer, threading.Thread] | None:
        if self.metrics_port is None:
            return None
        try:
            httpd, thread = start_http_server(
                self.metrics_port, addr=METRICS_ADDR, registry=self.registry
            )
        except OSError as exc:
            raise UsageError(
                f"--metrics-port {self.metrics_port}: cannot listen on {METRICS_ADDR}: "
                f"{exc.strerror or exc}"
            ) from None
        self.metrics_url = f"http://{METRICS_ADDR}:{httpd.server_port}/metrics"
        return httpd, thread


# -- the operator's controls ----------------------------------------------------


@dataclass(frozen=True)
class Requeued:
    """One entity whose failed rows ``retry`` put back in the queue."""

    entity_type: str
    entity_id: str
    seqs: tuple[int, ...]


def requeue_failed(conn: sqlite3.Connection, now: datetime, *, force: bool) -> list[Requeued]:
    """Put Failed rows back to Pending with a fresh attempt count.

    Without ``force``: rows failed for good (rejected, out of attempts) and rows
    whose backoff is over. With ``force``: every Failed row. ``last_error`` stays
    until the outcome is known.
    """
    with write(conn):
        rows = conn.execute(
            query("failed_to_requeue"), {"force": int(force), "now": iso(now)}
        ).fetchall()
        conn.executemany(query("requeue"), [{"seq": row["seq"]} for row in rows])
    grouped: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        grouped.setdefault((row["entity_type"], row["entity_id"]), []).append(row["seq"])
    return [Requeued(kind, ident, tuple(seqs)) for (kind, ident), seqs in grouped.items()]


def pending_entities(conn: sqlite3.Connection) -> list[Requeued]:
    """The entities with Pending rows, each with those rows' seqs (for ``retry``'s lines)."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for seq, kind, ident in conn.execute(
        "SELECT seq, entity_type, entity_id FROM sync_outbox WHERE status = 'Pending' ORDER BY seq"
    ):
        grouped.setdefault((kind, ident), []).append(seq)
    return [Requeued(kind, ident, tuple(seqs)) for (kind, ident), seqs in grouped.items()]


def outcome(conn: sqlite3.Connection, item: Requeued) -> OutboxRow:
    """The newest outbox row of a re-queued entity: it carries the entity's fate."""
    row = conn.execute(
        query("requeued_outcome"),
        {"entity_type": item.entity_type, "entity_id": item.entity_id, "from_seq": min(item.seqs)},
    ).fetchone()
    return OutboxRow(**dict(row))
