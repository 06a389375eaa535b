"""The engine's persisted controls and last failure, in ``sync_state``.

The pause flag lives in the workspace database, not in a process: ``acode
sync pause`` in a shell, :meth:`SyncEngine.pause` in a host and a running
``acode-sync run`` all read and write the same row, so each honours the others.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from acode_sync.clock import Clock, iso
from acode_sync.errors import LINK
from acode_sync.link import note_down
from acode_sync.workspace import write


def is_paused(conn: Any) -> bool:
    row = conn.execute("SELECT paused FROM sync_state WHERE id = 1").fetchone()
    return bool(row and row[0])


def set_paused(conn: sqlite3.Connection, paused: bool) -> None:
    """Persist the pause flag; a paused engine uploads and downloads nothing."""
    with write(conn):
        conn.execute("UPDATE sync_state SET paused = ? WHERE id = 1", (int(paused),))


def note_error(conn: Any, message: str, kind: str | None, clock: Clock) -> None:
    """Record the last failure and its kind (LINK, SETUP, or None: anything else);
    a link failure also marks the link down (acode_sync.link)."""
    now = iso(clock())
    with write(conn):
        conn.execute(
            "UPDATE sync_state SET last_error = ?, last_error_at = ? WHERE id = 1",
            (message, now),
        )
        set_kind(conn, kind)
        if kind == LINK:
            note_down(conn, now)


def set_kind(conn: Any, kind: str | None) -> None:
    conn.execute("UPDATE sync_last_error SET kind = ? WHERE id = 1", (kind,))
