"""Conversation data in the local store: chats and their messages.

Every write is one ``BEGIN IMMEDIATE`` transaction; the capture triggers put
the matching outbox row into the same transaction, so this module never
touches the outbox itself.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING

from acode_sync import text
from acode_sync.errors import UsageError
from acode_sync.privacy import LEVELS as PRIVACY_LEVELS
from acode_sync.queries import query
from acode_sync.workspace import write

if TYPE_CHECKING:
    from acode_sync.records import Chat, Message

ROLES = ("user", "assistant", "system", "tool")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_last_ms = 0
_last_random = 0


def new_id() -> str:
    """A ULID (48-bit ms time, 80 random bits, Crockford base32), as
    python-ulid's ``str(ULID())`` makes it, monotonic within the process (in
    the same millisecond the random part counts up, so a chat's messages keep
    their order), without its 50 ms import, which ``acode chat add`` would pay
    on every message."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms and _last_random < (1 << 80) - 1:
        ms, random_part = _last_ms, _last_random + 1
    else:
        random_part = int.from_bytes(os.urandom(10), "big")
    _last_ms, _last_random = ms, random_part
    value = ms << 80 | random_part
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _check_text(**values: str) -> None:
    """Refuse at entry what could never sync (a NUL, a byte that is not UTF-8):
    the sqlite3 shell can still store it, and then the upload isolates it."""
    for name, value in values.items():
        why = text.problem(value)
        if why:
            raise UsageError(f"{name}: {why}; nothing was written")


def _check_privacy(privacy: str) -> str:
    level = privacy.upper()
    if level not in PRIVACY_LEVELS:
        raise UsageError(f"privacy must be one of {', '.join(PRIVACY_LEVELS)}, got {privacy!r}")
    return level


def new_chat(conn: sqlite3.Connection, title: str, privacy: str = "FULL") -> str:
    _check_text(title=title)
    chat_id = new_id()
    with write(conn):
        conn.execute(
            "INSERT INTO chats (id, title, privacy) VALUES (?, ?, ?)",
            (chat_id, title, _check_privacy(privacy)),
        )
    return chat_id


def add_message(
    conn: sqlite3.Connection,
    chat_id: str,
    content: str,
    role: str = "user",
    privacy: str = "FULL",
) -> str:
    _check_text(chat_id=chat_id, content=content)
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    message_id = new_id()
    with write(conn):
        _require_chat(conn, chat_id)
        conn.execute(
            "INSERT INTO messages (id, chat_id, role, content, privacy) VALUES (?, ?, ?, ?, ?)",
            (message_id, chat_id, role, content, _check_privacy(privacy)),
        )
        conn.execute(f"UPDATE chats SET updated_at = {NOW} WHERE id = ?", (chat_id,))
    return message_id


def rename_chat(conn: sqlite3.Connection, chat_id: str, title: str) -> None:
    _check_text(chat_id=chat_id, title=title)
    with write(conn):
        _require_chat(conn, chat_id)
        conn.execute(
            f"UPDATE chats SET title = ?, updated_at = {NOW} WHERE id = ?", (title, chat_id)
        )


def delete(conn: sqlite3.Connection, entity_id: str) -> str:
    """Soft-delete a chat or a message; returns which it was."""
    _check_text(id=entity_id)
    with write(conn):
        table = _entity_table(conn, entity_id)
        conn.execute(
            f"UPDATE {table} SET deleted_at = {NOW}, updated_at = {NOW} "
            "WHERE id = ? AND deleted_at IS NULL",
            (entity_id,),
        )
    return "chat" if table == "chats" else "message"


def set_privacy(conn: sqlite3.Connection, entity_id: str, privacy: str) -> str:
    level = _check_privacy(privacy)
    _check_text(id=entity_id)
    with write(conn):
        table = _entity_table(conn, entity_id)
        conn.execute(
            f"UPDATE {table} SET privacy = ?, updated_at = {NOW} WHERE id = ?",
            (level, entity_id),
        )
    return "chat" if table == "chats" else "message"


def list_chats(conn: sqlite3.Connection, include_deleted: bool = False) -> list[Chat]:
    from acode_sync.records import Chat  # the read side: not loaded to write

    rows = conn.execute(query("list_chats"), {"include_deleted": include_deleted}).fetchall()
    return [Chat(**dict(row)) for row in rows]


def get_chat(conn: sqlite3.Connection, chat_id: str) -> tuple[Chat, list[Message]]:
    from acode_sync.records import Chat, Message

    _check_text(chat_id=chat_id)
    row = conn.execute(query("get_chat"), {"id": chat_id}).fetchone()
    if row is None:
        raise UsageError(f"no chat with id {chat_id}")
    messages = conn.execute(
        "SELECT * FROM messages WHERE chat_id = ? AND deleted_at IS NULL ORDER BY created_at, id",
        (chat_id,),
    ).fetchall()
    return Chat(**dict(row)), [Message(**dict(m)) for m in messages]


def _require_chat(conn: sqlite3.Connection, chat_id: str) -> None:
    if conn.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,)).fetchone() is None:
        raise UsageError(f"no chat with id {chat_id}")


def _entity_table(conn: sqlite3.Connection, entity_id: str) -> str:
    for table in ("chats", "messages"):
        if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (entity_id,)).fetchone():
            return table
    raise UsageError(f"no chat or message with id {entity_id}")
