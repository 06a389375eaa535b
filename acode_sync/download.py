"""The download path: the cursor-based puller and the inbox apply (the
specification's InboxProcessor).

Applying a remote row always happens with the echo guard up (see
``workspace.applying_remote``), so it never comes back as an outbox row.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from acode_sync.clock import iso, parse_iso


def _time(value: Any) -> str | None:
    if value is None:
        return None
    return iso(parse_iso(str(value)))


def apply_entity(
    conn: sqlite3.Connection, entity_type: str, row: dict[str, Any], *, status: str = "Synced"
) -> None:
    """Make the local entity equal to the server's row (caller holds the guard).

    A withdrawn entity (privacy LOCAL_ONLY on the server) is removed here, the
    way its owner asked: a chat goes with its messages.
    """
    entity_id = str(row["id"])
    version = int(row["version"])
    if row.get("privacy") == "LOCAL_ONLY":
        if entity_type == "chat":
            conn.execute("DELETE FROM messages WHERE chat_id = ?", (entity_id,))
            conn.execute("DELETE FROM chats WHERE id = ?", (entity_id,))
        else:
            conn.execute("DELETE FROM messages WHERE id = ?", (entity_id,))
        return
    if entity_type == "chat":
        conn.execute(
            "INSERT INTO chats (id, title, privacy, version, sync_status, created_at, "
            "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET title = excluded.title, "
            "privacy = excluded.privacy, version = excluded.version, "
            "sync_status = excluded.sync_status, created_at = excluded.created_at, "
            "updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
            (
                entity_id,
                row.get("title") or "",
                row.get("privacy") or "FULL",
                version,
                status,
                _time(row.get("created_at")),
                _time(row.get("updated_at")),
                _time(row.get("deleted_at")),
            ),
        )
        return
    conn.execute(
        "INSERT INTO messages (id, chat_id, role, content, privacy, version, sync_status, "
        "created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET chat_id = excluded.chat_id, role = excluded.role, "
        "content = excluded.content, privacy = excluded.privacy, version = excluded.version, "
        "sync_status = excluded.sync_status, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
        (
            entity_id,
            row.get("chat_id"),
            row.get("role"),
            row.get("content") or "",
            row.get("privacy") or "FULL",
            version,
            status,
            _time(row.get("created_at")),
            _time(row.get("updated_at")),
            _time(row.get("deleted_at")),
        ),
    )
