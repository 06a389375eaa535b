"""Chats and messages as the store reads them back (``acode_sync.store``).

A module of their own: a command that only writes (``acode chat add``, run
for every message) does not build these classes (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Entity:
    """What chats and messages share: identity, privacy and sync bookkeeping."""

    id: str
    privacy: str
    version: int
    sync_status: str
    created_at: str
    updated_at: str
    deleted_at: str | None


@dataclass(frozen=True)
class Chat(_Entity):
    title: str
    message_count: int = 0


@dataclass(frozen=True)
class Message(_Entity):
    chat_id: str
    role: str
    content: str
