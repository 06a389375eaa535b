"""Reading the local outbox: the queue a user sees."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Statuses still owed to the server. Synced and Superseded rows are history.
OPEN_STATUSES = ("Pending", "Failed")


@dataclass(frozen=True)
class OutboxRow:
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


def queue(conn: sqlite3.Connection, *, errors_only: bool = False) -> list[OutboxRow]:
    """Open outbox rows in send order; with ``errors_only``, only those with an error."""
    rows = conn.execute(
        "SELECT * FROM sync_outbox WHERE status IN ('Pending', 'Failed') "
        "AND (? = 0 OR last_error IS NOT NULL) ORDER BY seq",
        (int(errors_only),),
    ).fetchall()
    return [OutboxRow(**dict(row)) for row in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Outbox rows per status."""
    found = dict(conn.execute("SELECT status, count(*) FROM sync_outbox GROUP BY status"))
    return {
        status: found.get(status, 0)
        for status in ("Pending", "Failed", "Conflict", "Synced", "Superseded")
    }
