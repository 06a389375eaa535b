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
    its id, every text value in it, its size, its JSON and (for a message) its
    chat are checked here. The reason names the column and says why, with the
    ACODE-SYNC-005 code; the caller isolates the row and everything else flows.
    Every row of a drain passes through here: the text is judged in Python only
    where a cheap scan finds something to judge, and the JSON in one statement
    for the batch, read by SQLite from the rows themselves.
    """
    reasons: dict[int, str] = {}
    for row in rows:
        why = _check_text_and_size(row, item_bytes_max)
        if why is not None:
            reasons[row.seq] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
    unjudged = [row.seq for row in rows if row.seq not in reasons]
    if unjudged:
        for seq, why in conn.execute(_CHECK_JSON, (json.dumps(unjudged),)):
            if why is not None:
                reasons[int(seq)] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
    return reasons


# One pass over the batch's rows in SQLite: the payload parses, is an object,
# carries the row's id, and a message's chat is in this workspace.
_CHECK_JSON = """
SELECT o.seq,
       CASE WHEN NOT json_valid(o.payload) THEN 'payload: not valid JSON'
            WHEN json_type(o.payload) <> 'object' THEN 'payload: not a JSON object'
            WHEN json_extract(o.payload, '$.id') IS NOT o.entity_id
                THEN 'id: the payload''s id ' || quote(json_extract(o.payload, '$.id'))
                     || ' differs from the item''s ' || quote(o.entity_id)
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND json_type(o.payload, '$.chat_id') IS NOT 'text'
                THEN 'chat_id: missing'
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND NOT EXISTS (SELECT 1 FROM chats c
                                 WHERE c.id = json_extract(o.payload, '$.chat_id'))
                THEN 'chat_id: no chat ' || quote(json_extract(o.payload, '$.chat_id'))
                     || ' in this workspace'
       END
FROM sync_outbox o
WHERE o.seq IN (SELECT value FROM json_each(?))
"""


def _check_text_and_size(row: OutboxRow, item_bytes_max: int) -> str | None:
    """The row's id and payload text, and its size; None when fit."""
    bad_id = text.problem(row.entity_id)
    if bad_id:
        return f"id: {bad_id}"
    payload = row.payload
    # A character is at most 4 bytes: only a long payload needs encoding to size.
    if len(payload) * 4 > item_bytes_max:
        size = len(payload.encode("utf-8", "surrogatepass"))
        if size > item_bytes_max:
            return (
                f"payload: {size:,} bytes, above upload.item_bytes_max ({item_bytes_max:,}); "
                "raise it in .agent/config.yml, then 'acode sync retry'"
            )
    if not _suspect(payload):
        return None
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if parsed is None:  # broken JSON: judge its raw text (SQL names the breakage)
        why = text.problem(payload)
        return f"payload: {why}" if why else None
    for column, value in _strings(parsed):
        why = text.problem(value)
        if why:
            return f"{text.printable(column)}: {why}"
    return None


def _suspect(payload: str) -> bool:
    """Whether the payload may hold a bad byte, a NUL or a lone surrogate, raw or
    as a JSON escape: C-speed scans; only a hit costs a parse."""
    if "\\u" in payload or "\x00" in payload:
        return True
    if payload.isascii():
        return False
    try:
        payload.encode("utf-8")  # a kept bad byte or a lone surrogate cannot encode
    except UnicodeEncodeError:
        return True
    return False


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
