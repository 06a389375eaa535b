"""The local side of a benchmark: fresh workspace databases on the real disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from acode_sync.migrations import migrate_local
from acode_sync.workspace import connect, write

# A chat message of ordinary length (about 300 bytes).
CONTENT = (
    "Please move the token refresh out of the request handler into a background "
    "task, keep a five minute safety margin before expiry, and log (without the "
    "token itself) whenever a refresh fails. The existing tests for the handler "
    "should keep passing; add one for the margin. A short note in the changelog too."
)


def fresh_local(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A new workspace database on disk, migrated like any workspace."""
    if path.exists():
        raise FileExistsError(f"{path}: the benchmark wants a fresh database file")
    conn = connect(path, synchronous=synchronous)
    try:
        migrate_local(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def drop_capture_triggers(conn: sqlite3.Connection) -> None:
    """Every trigger goes: the same tables, indexes and keys, nothing captured
    (the baseline a captured write is held against)."""
    with write(conn):
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')


def floor_capture(conn: sqlite3.Connection) -> None:
    """The capture's floor: every trigger goes, and each message insert writes
    one constant row into ``sync_outbox`` (the same table, checks and indexes;
    no key, no JSON, no lookups) from a trigger of its own. What no capture
    trigger can undercut: the trigger firing and the outbox row itself."""
    drop_capture_triggers(conn)
    with write(conn):
        conn.execute(
            "CREATE TRIGGER bench_floor_capture AFTER INSERT ON messages BEGIN "
            "INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, base_version, "
            "payload, changed_at) VALUES ('k', 'message', 'e', 0, '{}', 'c'); END"
        )
