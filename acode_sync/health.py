"""Health monitoring (FR-058..061): the figures behind ``status`` and ``metrics``.

Everything is read from the local database, so ``status`` answers instantly
and offline, and the figures survive restarts. One function,
:func:`figures`, computes them; ``status``, ``status --json``, ``metrics``
and the ``run`` loop's scrape endpoint all show that one result, so they can
never disagree.

Definitions (the outbox row is the unit everywhere). ``pending``, ``waiting``
and ``failed`` are :mod:`acode_sync.outbox`'s, the same the ``queue`` table
labels its rows with:

``pending``
    rows that go with the next cycle (status ``Pending``).
``waiting``
    rows that will retry by themselves: ``Failed`` with ``next_retry_at`` set.
``failed``
    rows that will not go by themselves: ``Failed`` without ``next_retry_at``
    (rejected by the server, or out of attempts); only ``retry`` re-queues them.
``lag_seconds``
    sync lag: the age of the oldest pending or waiting row (0 when none). Rows failed for
    good are left out: they are counted by ``failed``, and would otherwise pin the
    lag at an ever-growing value that says nothing about the queue that moves.
``failure_rate``
    the share of recently attempted items that are failing: ``F / (F + S)``,
    where F counts rows in status ``Failed`` now (each attempted at least once)
    and S counts rows synced within :data:`FAILURE_WINDOW`; 0.0 when neither.
    The local tables keep no log of attempts, so this is a rate of items, not of
    attempts: a row that failed three times counts once.
``mode``
    ``paused`` when sync is paused (or disabled in the config); ``error`` when
    the last recorded failure is of kind ``setup`` (the remote answers but
    refuses us: password, database, role, grants, schema, or an unusable URL)
    at or after the last contact with the server; ``offline`` when no remote is
    configured, or when the link has failed since the last contact (see
    :mod:`acode_sync.link`); else ``online``. The kind is recorded with the
    failure (``sync_last_error``), not read back out of the message.
``last_contact_at``
    the last time the server answered (a connection, a batch, a page), even in
    a cycle that lost its link afterwards: ``status``'s Last Sync.
``healthy``
    False when any of: ``failed > 0``; a remote is configured, sync is not
    paused and the lag exceeds :data:`MAX_LAG_SECONDS`; the engine has been
    offline (with a remote configured) for more than :data:`MAX_OFFLINE_SECONDS`
    since its last successful contact (never having had one counts as too long);
    the mode is ``error`` (at once: waiting does not fix it).
    Pausing is a choice, not a fault, so a paused queue's lag does not count;
    conflicts are resolved automatically and do not count either.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from acode_sync import outbox
from acode_sync.clock import iso, parse_iso
from acode_sync.config import SyncConfig
from acode_sync.errors import SETUP
from acode_sync.link import read as read_link
from acode_sync.outbox import OPEN, PENDING, WAITING
from acode_sync.queries import query

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector
else:
    # prometheus_client (about 100 ms) loads only where metrics are made:
    # `status` reads the figures and never needs it. The registry takes any
    # object with collect() and describe().
    Collector = object

log = logging.getLogger(__name__)

MAX_LAG_SECONDS = 300.0
MAX_OFFLINE_SECONDS = 600.0
FAILURE_WINDOW = timedelta(hours=24)
MODES = ("online", "offline", "paused", "error")

JSON_KEYS = (
    "mode",
    "paused",
    "pending",
    "waiting",
    "failed",
    "conflicts",
    "last_push_at",
    "last_pull_at",
    "lag_seconds",
    "synced_today",
    "downloaded_today",
    "failure_rate",
    "healthy",
)

# What will go by itself, the queue whose age is the lag.
_MOVING = f"({PENDING} OR {WAITING})"


class Health(NamedTuple):
    mode: str
    paused: bool
    pending: int
    waiting: int
    failed: int
    conflicts: int
    last_push_at: str | None
    last_pull_at: str | None
    lag_seconds: float
    synced_today: int
    downloaded_today: int
    failure_rate: float
    healthy: bool
    last_contact_at: str | None = None
    # Why it is not healthy, one phrase each (empty when healthy).
    problems: tuple[str, ...] = ()
    # The last failure when the mode is error or offline (for the status block).
    reason: str | None = None

    @property
    def last_sync_at(self) -> str | None:
        """The last contact with the server (``status``'s Last Sync)."""
        return self.last_contact_at

    def as_json(self) -> dict[str, Any]:
        """Exactly the Contract's ``status --json`` keys."""
        return {
            "mode": self.mode,
            "paused": self.paused,
            "pending": self.pending,
            "waiting": self.waiting,
            "failed": self.failed,
            "conflicts": self.conflicts,
            "last_push_at": self.last_push_at,
            "last_pull_at": self.last_pull_at,
            "lag_seconds": round(self.lag_seconds, 3),
            "synced_today": self.synced_today,
            "downloaded_today": self.downloaded_today,
            "failure_rate": round(self.failure_rate, 4),
            "healthy": self.healthy,
        }


def _count(conn: sqlite3.Connection, query: str, *params: Any) -> int:
    return int(conn.execute(query, params).fetchone()[0])


def _age(now: datetime, stamp: str | None) -> float | None:
    return None if stamp is None else max(0.0, (now - parse_iso(stamp)).total_seconds())


def figures(conn: sqlite3.Connection, now: datetime, config: SyncConfig) -> Health:
    """Compute every health figure from the local database as of ``now``."""
    state = conn.execute(query("health_state")).fetchone()
    paused = bool(state["paused"]) or not config.enabled
    last_push_at, last_pull_at = state["last_push_at"], state["last_pull_at"]
    queue = outbox.counts(conn)
    link = read_link(conn)

    conflicts = _count(conn, "SELECT count(*) FROM sync_conflicts WHERE acknowledged_at IS NULL")
    # Rows are appended (seq) as they are made (created_at): the first moving
    # row in send order is the oldest, one seek of sync_outbox_open.
    oldest = conn.execute(
        f"SELECT created_at FROM sync_outbox WHERE {OPEN} AND {_MOVING} ORDER BY seq LIMIT 1"
    ).fetchone()
    lag = _age(now, oldest[0] if oldest else None) or 0.0

    today = now.astimezone(UTC).date()
    midnight = iso(datetime.combine(today, time(0), tzinfo=UTC))
    # Both from one range of sync_outbox_synced (local migration 0009).
    window = iso(now - FAILURE_WINDOW)
    recent, synced_today = (
        int(value)
        for value in conn.execute(
            "SELECT coalesce(sum(synced_at >= :window), 0), "
            "coalesce(sum(synced_at >= :midnight), 0) FROM sync_outbox "
            "WHERE status = 'Synced' AND synced_at >= min(:window, :midnight)",
            {"window": window, "midnight": midnight},
        ).fetchone()
    )
    downloaded_today = _count(
        conn,
        "SELECT count(*) FROM sync_inbox WHERE status IN ('Applied', 'Conflict') "
        "AND applied_at >= ?",
        midnight,
    )
    failing = queue.waiting + queue.failed
    failure_rate = failing / (failing + recent) if failing + recent else 0.0

    remote = bool(config.remote_url)
    contact = link.last_contact_at
    error, error_at = state["last_error"], state["last_error_at"]
    current = bool(error and error_at and (contact is None or error_at >= contact))
    kind = state["kind"] if current else None
    failed = queue.failed
    if paused:
        mode = "paused"
    elif remote and kind == SETUP:
        mode = "error"
    elif not remote or link.down:
        mode = "offline"
    else:
        mode = "online"

    problems: list[str] = []
    if failed:
        problems.append(f"{failed} item(s) failed for good; see 'acode sync queue --errors'")
    if remote and not paused and lag > MAX_LAG_SECONDS:
        problems.append(f"sync lag {lag:.0f}s exceeds {MAX_LAG_SECONDS:.0f}s")
    if mode == "error":
        problems.append(f"sync cannot run until this is fixed: {error}")
    if remote and mode == "offline":
        offline_for = _age(now, contact)
        if offline_for is None or offline_for > MAX_OFFLINE_SECONDS:
            since = "never reached" if contact is None else f"unreachable for {offline_for:.0f}s"
            problems.append(f"remote {since} ({link.last_error})")

    return Health(
        mode=mode,
        paused=paused,
        pending=queue.pending,
        waiting=queue.waiting,
        failed=failed,
        conflicts=conflicts,
        last_push_at=last_push_at,
        last_pull_at=last_pull_at,
        lag_seconds=lag,
        synced_today=synced_today,
        downloaded_today=downloaded_today,
        failure_rate=failure_rate,
        healthy=not problems,
        last_contact_at=contact,
        problems=tuple(problems),
        reason=error if mode in ("error", "offline") and kind else None,
    )


# -- Prometheus ---------------------------------------------------------------


def _timestamp(stamp: str | None) -> float:
    # Prometheus convention for "never": 0 (the epoch), not a missing series.
    return parse_iso(stamp).timestamp() if stamp else 0.0


_GAUGES: tuple[tuple[str, str, Callable[[Health], float]], ...] = (
    ("acode_sync_lag_seconds", "Age of the oldest pending outbox row.", lambda h: h.lag_seconds),
    ("acode_sync_conflicts", "Unacknowledged conflicts.", lambda h: h.conflicts),
    (
        "acode_sync_last_push_timestamp_seconds",
        "Unix time of the last push (0: never).",
        lambda h: _timestamp(h.last_push_at),
    ),
    (
        "acode_sync_last_contact_timestamp_seconds",
        "Unix time the server last answered (0: never).",
        lambda h: _timestamp(h.last_contact_at),
    ),
    (
        "acode_sync_last_pull_timestamp_seconds",
        "Unix time of the last pull (0: never).",
        lambda h: _timestamp(h.last_pull_at),
    ),
    ("acode_sync_synced_today", "Outbox rows synced since UTC midnight.", lambda h: h.synced_today),
    (
        "acode_sync_downloaded_today",
        "Inbox rows applied since UTC midnight.",
        lambda h: h.downloaded_today,
    ),
    (
        "acode_sync_failure_ratio",
        "Failing items / recently attempted items (see acode_sync.health).",
        lambda h: h.failure_rate,
    ),
    ("acode_sync_paused", "1 when sync is paused.", lambda h: float(h.paused)),
    ("acode_sync_healthy", "1 when sync is healthy (status --check).", lambda h: float(h.healthy)),
)


def _families(health: Health | None) -> list[Metric]:
    """The gauges; without ``health`` only their descriptions (no database read)."""
    from prometheus_client.core import GaugeMetricFamily

    depth = GaugeMetricFamily(
        "acode_sync_queue_depth", "Outbox rows still owed to the server.", labels=["status"]
    )
    mode = GaugeMetricFamily("acode_sync_mode", "1 for the current mode.", labels=["mode"])
    families: list[Metric] = [depth, mode]
    if health is not None:
        depth.add_metric(["pending"], health.pending)
        depth.add_metric(["waiting"], health.waiting)
        depth.add_metric(["failed"], health.failed)
        for name in MODES:
            mode.add_metric([name], float(health.mode == name))
    for name, doc, value in _GAUGES:
        family = GaugeMetricFamily(name, doc)
        if health is not None:
            family.add_metric([], value(health))
        families.append(family)
    return families


class HealthCollector(Collector):
    """Reads fresh figures on every scrape through ``read``."""

    def __init__(self, read: Callable[[], Health]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        return _families(self.read())

    def describe(self) -> Iterable[Metric]:
        # Registering calls describe(): it must not touch the database.
        return _families(None)


def build_registry(read: Callable[[], Health]) -> CollectorRegistry:
    """A private registry (never the process-global one) holding the health gauges."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(read))
    return registry


def metrics_text(health: Health) -> str:
    """The Prometheus text exposition of ``health``."""
    from prometheus_client import generate_latest

    return generate_latest(build_registry(lambda: health)).decode("utf-8")
