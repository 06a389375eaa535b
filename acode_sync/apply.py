"""The one way a server row reaches the local store: under the echo guard,
never older than the local copy.

Two entry points, one set of rules:

* :func:`apply_inbox` applies the pulled page waiting in ``sync_inbox``, set
  based (a statement per kind for the whole page);
* :func:`apply_row` applies one row the conflict resolver picked as winner
  (the server's answer to a push, or a pulled change), and marks the entity
  ``Conflict``.

The rules: a withdrawn entity (privacy LOCAL_ONLY on the server, op
``withdraw``) is removed, a chat with its messages; anything else is upserted
only over an older local version (the winner of a conflict also over the same
version: this device's edits on it lost). A message whose chat is not here
stays out.

The echo guard is a column of the one-row ``sync_state`` that the capture
triggers test: raised inside the write transaction and lowered before COMMIT,
so no other writer ever sees it up, and an applied row never comes back as an
outbox row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from acode_sync.queries import query
from acode_sync.workspace import write

ENTITY_TABLE = {"chat": "chats", "message": "messages"}


@contextmanager
def echo_guard(conn: sqlite3.Connection) -> Iterator[None]:
    """The echo guard up for the block, inside the caller's write transaction.

    Re-entrant: an inner block leaves a guard it did not raise up. An error
    needs no lowering: the caller's transaction rolls back, guard included."""
    if conn.execute("SELECT applying FROM sync_state WHERE id = 1").fetchone()[0]:
        yield
        return
    conn.execute("UPDATE sync_state SET applying = 1 WHERE id = 1")
    yield
    conn.execute("UPDATE sync_state SET applying = 0 WHERE id = 1")


@contextmanager
def applying_remote(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction with the echo guard up: capture triggers stay silent."""
    with write(conn), echo_guard(conn):
        yield conn


def apply_inbox(
    conn: sqlite3.Connection, now: str, kinds: set[tuple[str, str]] | None = None
) -> tuple[int, int]:
    """Apply every ``Pending`` inbox row and mark it ``Applied`` (a message of a
    chat that is not here: ``Skipped``), inside the caller's transaction.
    Rows that needed a decision are marked already. ``kinds``: the (entity_type,
    op) pairs pending, when known (None: any); the statements of the others are
    not run. Returns (applied, skipped)."""

    def has(entity_type: str, op: str) -> bool:
        return kinds is None or (entity_type, op) in kinds

    skipped = 0
    with echo_guard(conn):
        if has("chat", "withdraw"):
            conn.execute(query("apply_withdrawn_chat_messages"))
        if has("message", "withdraw"):
            conn.execute(query("apply_withdrawn_messages"))
        if has("chat", "withdraw"):
            conn.execute(query("apply_withdrawn_chats"))
        if has("chat", "upsert"):
            conn.execute(query("apply_chats"))
        if has("message", "upsert"):
            # A message whose chat is not here (withdrawn, or LOCAL_ONLY on this
            # device) stays out: privacy decided elsewhere is not undone here.
            skipped = conn.execute(query("skip_orphan_messages"), {"now": now}).rowcount
            conn.execute(query("apply_messages"))
        conn.execute(query("create_inbox_done"))
        applied = conn.execute(query("inbox_done_take")).rowcount
        if applied:
            conn.execute("DELETE FROM sync_inbox WHERE status = 'Pending'")
            conn.execute(query("inbox_done_put"), {"now": now})
            conn.execute("DELETE FROM temp.sync_inbox_done")
    return int(applied), int(skipped)


def apply_row(
    conn: sqlite3.Connection,
    entity_type: str,
    entity_id: str,
    version: int,
    payload: dict[str, Any],
    *,
    status: str = "Conflict",
) -> None:
    """Make the local entity the server's row at ``version`` (the winner of a
    conflict), inside the caller's write transaction; ``payload`` is in the
    wire shape (times in UTC with milliseconds)."""
    with echo_guard(conn):
        if payload.get("privacy") == "LOCAL_ONLY":
            if entity_type == "chat":
                conn.execute("DELETE FROM messages WHERE chat_id = ?", (entity_id,))
            conn.execute(f"DELETE FROM {ENTITY_TABLE[entity_type]} WHERE id = ?", (entity_id,))
            return
        row = {
            "id": entity_id,
            "version": version,
            "status": status,
            "title": payload.get("title") or "",
            "chat_id": payload.get("chat_id"),
            "role": payload.get("role"),
            "content": payload.get("content") or "",
            "privacy": payload.get("privacy") or "FULL",
            "created_at": payload.get("created_at"),
            "updated_at": payload.get("updated_at"),
            "deleted_at": payload.get("deleted_at"),
        }
        if entity_type == "chat":
            conn.execute(query("apply_chat_row"), row)
        else:
            conn.execute(query("apply_message_row"), row)
