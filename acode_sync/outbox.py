"""The local outbox as a queue: what is owed to the server, and in what order.

The three figures every command shows are defined here once, as SQL
predicates over ``sync_outbox``; ``status``, ``status --json``, ``queue``,
``queue --json``, ``metrics`` and ``retry`` all count and label rows through
them, so what one command calls Failed is what another counts as Failed:

``pending``  (:data:`PENDING`)
    rows that go with the next cycle.
``waiting``  (:data:`WAITING`)
    rows that failed for a transient reason and go again by themselves once
    their backoff is over (or, when it was the link that failed, as soon as a
    cycle reaches the server again).
``failed``   (:data:`FAILED`)
    rows that will not go by themselves: rejected by the server, or out of
    attempts. Only ``acode sync retry`` puts them back.

Synced, Superseded and Conflict rows are history, not queue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from acode_sync.clock import parse_iso
from acode_sync.errors import CONNECTION_FAILED
from acode_sync.queries import query

PENDING = "status = 'Pending'"
WAITING = "(status = 'Failed' AND next_retry_at IS NOT NULL)"
FAILED = "(status = 'Failed' AND next_retry_at IS NULL)"
# Leading with the IN (...) term lets SQLite use the partial index of open rows.
OPEN = "status IN ('Pending', 'Failed')"


class OutboxRow(NamedTuple):
    seq: int
    idempotency_key: str
    entity_type: str
    entity_id: str
    op: str
    base_version: int
    payload: str
    status: str
    retry_count: int
    next_retry_at: str | None
    last_error: str | None
    changed_at: str
    created_at: str
    synced_at: str | None

    @property
    def state(self) -> str:
        """``pending``, ``waiting`` or ``failed`` (the module's definitions);
        ``done`` for history rows."""
        if self.status == "Pending":
            return "pending"
        if self.status == "Failed":
            return "waiting" if self.next_retry_at is not None else "failed"
        return "done"

    @property
    def link_failure(self) -> bool:
        """It failed only because the link broke (not the server, not the data)."""
        return self.state == "waiting" and (self.last_error or "").startswith(CONNECTION_FAILED)


class QueueCounts(NamedTuple):
    pending: int = 0
    waiting: int = 0
    failed: int = 0

    @property
    def depth(self) -> int:
        """Everything owed to the server."""
        return self.pending + self.waiting + self.failed


def has_open(conn: sqlite3.Connection, entity: tuple[str, str] | None = None) -> bool:
    """Whether any row is still to go (Pending or Failed); of ``entity``
    (type, id) only, when given. Through the partial indexes of open rows."""
    if entity is None:
        found = conn.execute(f"SELECT 1 FROM sync_outbox WHERE {OPEN} LIMIT 1")
    else:
        found = conn.execute(
            f"SELECT 1 FROM sync_outbox WHERE {OPEN} AND entity_type = ? AND entity_id = ? LIMIT 1",
            entity,
        )
    return found.fetchone() is not None


def max_seq(conn: sqlite3.Connection) -> int:
    """The newest outbox row's seq (0: none): a new row is above it."""
    return int(conn.execute("SELECT max(seq) FROM sync_outbox").fetchone()[0] or 0)


def counts(conn: sqlite3.Connection) -> QueueCounts:
    """The three figures: index ranges only (see :func:`summary`)."""
    return summary(conn, details=False).counts


def status_label(row: OutboxRow, now: datetime) -> str:
    """The queue table's Status word for ``row``: Pending, Waiting (...), Failed."""
    state = row.state
    if state == "pending":
        return "Pending"
    if state == "failed":
        return "Failed"
    if state == "waiting" and row.next_retry_at is not None:
        seconds = (parse_iso(row.next_retry_at) - now).total_seconds()
        return f"Waiting (retry in {seconds:.0f}s)" if seconds >= 1 else "Waiting (retry due)"
    return row.status


def queue(
    conn: sqlite3.Connection, *, errors_only: bool = False, limit: int | None = None
) -> list[OutboxRow]:
    """Open outbox rows in send order, the first ``limit`` (None: all); with
    ``errors_only``, only those with an error."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM sync_outbox WHERE {OPEN} "
        "AND (? = 0 OR last_error IS NOT NULL) ORDER BY seq LIMIT ?",
        (int(errors_only), -1 if limit is None else limit),
    ).fetchall()
    return [OutboxRow(*row) for row in rows]


class QueueSummary(NamedTuple):
    """The queue at a glance, without reading it into Python: the counts by
    state and entity type, the oldest open row's age, the next retry."""

    counts: QueueCounts
    by_type: dict[str, dict[str, int]]  # state -> entity_type -> rows
    with_errors: int
    oldest_created_at: str | None
    next_retry_at: str | None


ENTITY_TYPES = ("chat", "message")
# The counts never grow with the queue (local migration 0010): how many rows
# and how many chat rows are open is the tally's figure for the rows up to its
# mark (kept by triggers) plus ranges of sync_outbox_open and
# sync_outbox_open_chats after the mark; waiting and failed rows are ranges of
# sync_outbox_failed. Pending chats and pending messages are what is left. All
# in one statement (one snapshot). The two indexes of 0010 are keyed by an
# expression only these queries name, so no other query of the outbox is
# planned onto them; each query repeats its index's condition so that SQLite
# sees the partial index serves it.
_KEY = "(status || ':' || entity_type)"
_FAILED = "status = 'Failed'"
_CHATS = f"entity_type = 'chat' AND {OPEN} AND {_KEY} IN ('Pending:chat', 'Failed:chat')"
_STATE_RANGE = {
    "waiting": " AND next_retry_at IS NOT NULL",
    "failed": " AND next_retry_at IS NULL",
}
_FAILED_GROUPS = [(state, kind) for state in _STATE_RANGE for kind in ENTITY_TYPES]
_TALLY = "coalesce((SELECT {} FROM sync_queue_tally WHERE id = 1), 0)"
_TALLY_COLUMNS = ("upto_seq", "open_rows", "open_chats")


def _counts_sql(tally: bool) -> str:
    """The counts in one statement; without the tally (a read-only workspace
    made before local migration 0010) every open row is counted."""
    mark, rows, chats = (_TALLY.format(name) if tally else "0" for name in _TALLY_COLUMNS)
    return (
        f"SELECT {rows} + (SELECT count(*) FROM sync_outbox WHERE {OPEN} AND seq > {mark}), "
        f"{chats} + (SELECT count(*) FROM sync_outbox WHERE {_CHATS} AND seq > {mark}), "
        + ", ".join(
            f"(SELECT count(*) FROM sync_outbox WHERE {_FAILED} AND {_KEY} = 'Failed:{kind}'"
            f"{_STATE_RANGE[state]})"
            for state, kind in _FAILED_GROUPS
        )
    )


_COUNTS = _counts_sql(tally=True)
_COUNTS_UNTALLIED = _counts_sql(tally=False)
_NEXT_RETRY = "SELECT " + ", ".join(
    f"(SELECT min(next_retry_at) FROM sync_outbox WHERE {_FAILED} "
    f"AND {_KEY} = 'Failed:{kind}' AND next_retry_at IS NOT NULL)"
    for kind in ENTITY_TYPES
)
# A range of sync_outbox_open_errors (local migration 0009): no row is read.
_ERRORS = (
    f"SELECT count(*) FROM sync_outbox WHERE {OPEN} AND last_error IS NOT NULL AND status = :status"
)
# Rows after the tally's mark before a reader moves the mark: counting them
# costs about 6 ms per 100,000.
FOLD_AT = 10_000
# Seqs taken in per write transaction of a fold: a few ms of counting.
FOLD_CHUNK = 50_000


def fold(conn: sqlite3.Connection, *, at_least: int = FOLD_AT, chunk: int = FOLD_CHUNK) -> bool:
    """Move the queue tally's mark to the newest outbox row when at least
    ``at_least`` rows lie after it, ``chunk`` seqs per write transaction, each
    only if the write lock is free at once (a reader never waits for a writer:
    what lies after the mark is counted anyway). Not inside the caller's
    transaction. Never an error: the tally is an optimisation. True when the
    mark moved."""
    if conn.in_transaction:
        return False
    try:
        if conn.execute(query("queue_tally_gap")).fetchone()[0] < at_least:
            return False
    except sqlite3.OperationalError:
        return False  # no tally: a read-only workspace made before migration 0010
    moved = False
    (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        while True:
            conn.execute("BEGIN IMMEDIATE")
            step = conn.execute(query("fold_queue_tally"), {"chunk": chunk}).rowcount
            conn.execute("COMMIT")
            if step == 0:
                return moved
            moved = True
    except sqlite3.Error:
        # Another writer has the lock, or the file is read-only: next time.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return moved
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def summary(
    conn: sqlite3.Connection, *, details: bool = True, pending_errors: bool = False
) -> QueueSummary:
    """The counts by state and type, then (``details``) the next retry, the
    oldest open row and how many have an error (Failed rows; ``pending_errors``:
    re-queued Pending ones too): index ranges and seeks, no row reaches Python.
    Many rows captured since the last call move the tally's mark first."""
    fold(conn)
    try:
        row = conn.execute(_COUNTS).fetchone()
    except sqlite3.OperationalError:
        row = conn.execute(_COUNTS_UNTALLIED).fetchone()  # no tally (see _counts_sql)
    total, chats, *counted = (int(value) for value in row)
    found = dict(zip(_FAILED_GROUPS, counted, strict=True))
    failed_chats = found[("waiting", "chat")] + found[("failed", "chat")]
    found[("pending", "chat")] = chats - failed_chats
    found[("pending", "message")] = total - chats - sum(counted) + failed_chats
    states = ("pending", "waiting", "failed")
    by_type: dict[str, dict[str, int]] = {state: {} for state in states}
    for (state, kind), rows in found.items():
        if rows:
            by_type[state][kind] = rows
    figures = QueueCounts(*(sum(by_type[state].values()) for state in states))
    if not details:
        return QueueSummary(figures, by_type, 0, None, None)
    soonest = [stamp for stamp in conn.execute(_NEXT_RETRY).fetchone() if stamp is not None]
    oldest = conn.execute(
        f"SELECT created_at FROM sync_outbox WHERE {OPEN} ORDER BY seq LIMIT 1"
    ).fetchone()
    # Failed rows carry their error; a Pending row has one only when retry
    # re-queued it, until its outcome is known: only a caller that lists
    # errors counts those.
    errors = conn.execute(_ERRORS, {"status": "Failed"}).fetchone()[0]
    if pending_errors:
        errors += conn.execute(_ERRORS, {"status": "Pending"}).fetchone()[0]
    return QueueSummary(
        figures,
        by_type,
        int(errors),
        oldest[0] if oldest else None,
        min(soonest) if soonest else None,
    )


COLUMNS = ", ".join(OutboxRow._fields)


def acknowledge(
    conn: sqlite3.Connection, acked: Sequence[tuple[int, str, str, int, int]], now: str
) -> None:
    """Mark (seq, entity_type, entity_id, base_version, server_version) rows
    the server acknowledged Synced, set-based, inside the caller's write
    transaction: their older rows are done, their later rows captured on the
    same base are rebased (a device never conflicts with itself), and their
    entities take the server's version."""
    # Some builds (Debian's) zero every page a delete frees and write it out:
    # the payload pages freed here would be written twice. FAST zeroes only
    # on pages written anyway; the free pages leave the file with the
    # cycle's pruning (acode_sync.retention.reclaim), and the payloads are
    # copies of what the workspace's tables hold anyway. Only here: other
    # deletes (a withdrawn message) keep the connection's setting.
    (previous,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = FAST")
    try:
        _acknowledge(conn, acked, now)
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(previous)}")


def _acknowledge(
    conn: sqlite3.Connection, acked: Sequence[tuple[int, str, str, int, int]], now: str
) -> None:
    conn.execute(query("create_acked"))
    conn.execute("DELETE FROM temp.sync_acked")
    conn.executemany("INSERT INTO temp.sync_acked VALUES (?, ?, ?, ?, ?)", acked)
    conn.execute(query("ack_synced"), {"now": now})
    if conn.execute(query("ack_open_left")).fetchone() is None:
        # The common case (an entity has one row in flight and nothing after
        # it): nothing to supersede or rebase, every entity is Synced.
        conn.execute(query("ack_chats_synced"))
        conn.execute(query("ack_messages_synced"))
        return
    for statement in (
        query("ack_supersede_older"),
        query("ack_rebase_later"),
        query("ack_chats"),
        query("ack_messages"),
    ):
        conn.execute(statement, {"now": now})
