"""The link to the server: when it last answered, and since when it is down.

One row in ``sync_link`` (local migration 0003). A cycle notes contact when
its connection is made and after every batch or page the server answered,
so a cycle that uploaded 250 items and then lost its link still counts as
having reached the server: ``status``'s Last Sync and the offline timer of
``status --check`` read :attr:`Link.last_contact_at`, not the end of a
complete cycle. ``down_since`` is the first link failure after the last
contact; ``queue --errors`` shows it for items that wait on the link.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from acode_sync.errors import CONNECTION_FAILED


class Link(NamedTuple):
    last_contact_at: str | None
    down_since: str | None
    last_error: str | None
    last_error_at: str | None

    @property
    def down(self) -> bool:
        return self.down_since is not None


def note_contact(conn: sqlite3.Connection, now: str) -> None:
    """The server answered (inside the caller's write transaction)."""
    conn.execute("UPDATE sync_link SET last_contact_at = ?, down_since = NULL WHERE id = 1", (now,))


def note_down(conn: sqlite3.Connection, now: str) -> None:
    """The link failed (inside the caller's write transaction); keeps the first time."""
    conn.execute("UPDATE sync_link SET down_since = coalesce(down_since, ?) WHERE id = 1", (now,))


def read(conn: sqlite3.Connection) -> Link:
    state = conn.execute(
        "SELECT last_push_at, last_pull_at, last_error, last_error_at FROM sync_state WHERE id = 1"
    ).fetchone()
    push, pull, error, error_at = (state[i] for i in range(4))
    try:
        row = conn.execute(
            "SELECT last_contact_at, down_since FROM sync_link WHERE id = 1"
        ).fetchone()
    except sqlite3.OperationalError:
        row = None  # a read-only workspace of an earlier version: 0003 not applied yet
    if row is not None:
        return Link(row[0], row[1], error, error_at)
    # Before 0003: the nearest thing is the end of the last complete push or pull.
    contact = max((s for s in (push, pull) if s), default=None)
    link_failed = bool(error and str(error).startswith(CONNECTION_FAILED) and error_at)
    down = error_at if link_failed and (contact is None or error_at >= contact) else None
    return Link(contact, down, error, error_at)
