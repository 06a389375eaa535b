"""Privacy at send time: what of an entity may leave, as it is now.

The capture triggers decide privacy when a change is captured; the entity may
have become stricter since. So the mover asks again for the whole batch: a
message's level is the stricter of its own and its chat's. LOCAL_ONLY is
withheld (the caller supersedes the row), REDACTED goes without content.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from acode_sync.queries import query

if TYPE_CHECKING:
    # Only a type here: `acode chat add` reads LEVELS and needs no outbox.
    from acode_sync.outbox import OutboxRow

LEVELS = ("FULL", "REDACTED", "LOCAL_ONLY")
"""From the least strict to the strictest."""

_RANK = {level: rank for rank, level in enumerate(LEVELS)}


def levels_now(conn: sqlite3.Connection, rows: Sequence[OutboxRow]) -> dict[tuple[str, str], str]:
    """Each entity's privacy now, in two queries for the whole batch."""
    import json  # here: `acode chat add` reads LEVELS and sends nothing

    chats = json.dumps([r.entity_id for r in rows if r.entity_type == "chat"])
    messages = json.dumps([r.entity_id for r in rows if r.entity_type == "message"])
    levels = {
        ("chat", str(entity_id)): str(level)
        for entity_id, level in conn.execute(query("chat_privacy_levels"), {"ids": chats})
    }
    for entity_id, own, chat in conn.execute(query("message_privacy_levels"), {"ids": messages}):
        levels[("message", str(entity_id))] = str(max((own, chat), key=_RANK.__getitem__))
    return levels


def at_level(entity_type: str, payload: str, level: str) -> str:
    """``payload`` as it may travel at ``level`` (not LOCAL_ONLY: that is withheld)."""
    if level != "REDACTED":
        return payload
    import json

    data = json.loads(payload)
    if data.get("content") is None and data.get("privacy") == "REDACTED":
        return payload
    data["privacy"] = "REDACTED"
    if entity_type == "message":
        data["content"] = None
    return json.dumps(data)
