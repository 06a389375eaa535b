"""Reading the local outbox: the queue a user sees."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from acode_sync import text
from acode_sync.errors import INVALID_PAYLOAD

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


def check_items(
    conn: sqlite3.Connection, rows: Sequence[OutboxRow], item_bytes_max: int
) -> dict[int, str]:
    """What is wrong with each row that cannot be uploaded as it is, by seq.

    The triggers build payloads from whatever a client wrote, the ``sqlite3``
    shell included, and a payload can be edited by hand: so before a row leaves,
    its id, its JSON, every text value in it, its size, and (for a message) its
    chat are checked here. The reason names the column and says why, with the
    ACODE-SYNC-005 code; the caller isolates the row and everything else flows.
    """
    reasons: dict[int, str] = {}
    chats_needed: dict[int, str] = {}
    for row in rows:
        why, chat_id = _check_one(row, item_bytes_max)
        if why is not None:
            reasons[row.seq] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
        elif chat_id is not None:
            chats_needed[row.seq] = chat_id
    if chats_needed:
        present = {
            str(found)
            for (found,) in conn.execute(
                "SELECT id FROM chats WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(set(chats_needed.values()))),),
            )
        }
        for seq, chat_id in chats_needed.items():
            if chat_id not in present:
                reasons[seq] = (
                    f"{INVALID_PAYLOAD}: invalid payload: chat_id: no chat "
                    f"{text.printable(chat_id)!r} in this workspace"
                )
    return reasons


def _check_one(row: OutboxRow, item_bytes_max: int) -> tuple[str | None, str | None]:
    """(why the row is unfit or None, the chat id a message needs or None)."""
    bad_id = text.problem(row.entity_id)
    if bad_id:
        return f"id: {bad_id}", None
    size = len(row.payload.encode("utf-8", "surrogatepass"))
    if size > item_bytes_max:
        return (
            f"payload: {size:,} bytes, above upload.item_bytes_max ({item_bytes_max:,}); "
            "raise it in .agent/config.yml, then 'acode sync retry'",
            None,
        )
    try:
        payload = json.loads(row.payload)
    except ValueError as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        return f"payload: not valid JSON ({detail})", None
    if not isinstance(payload, dict):
        return "payload: not a JSON object", None
    for column, value in _strings(payload):
        why = text.problem(value)
        if why:
            return f"{text.printable(column)}: {why}", None
    if payload.get("id") != row.entity_id:
        return (
            f"id: the payload's id {text.printable(str(payload.get('id')))!r} "
            f"differs from the item's {row.entity_id!r}",
            None,
        )
    if row.entity_type == "message" and row.op == "upsert":
        chat_id = payload.get("chat_id")
        if not isinstance(chat_id, str):
            return "chat_id: missing", None
        return None, chat_id
    return None, None


def _strings(value: Any, column: str = "payload") -> list[tuple[str, str]]:
    """Every string in a parsed payload (keys too), with the column it sits in."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        found.append((column, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.append((column, key))
            found.extend(_strings(item, key))
    elif isinstance(value, list):
        for item in value:
            found.extend(_strings(item, column))
    return found
