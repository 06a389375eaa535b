"""What an outbox item must be before it leaves: the upload path's checks.

The triggers build payloads from whatever a client wrote, the ``sqlite3`` shell
included, and a payload can be edited by hand. A row whose id or text is not
UTF-8, holds a NUL or a lone surrogate, whose key, id or payload is stored as a
BLOB, whose payload is not a JSON object of its own id, is larger than
``upload.item_bytes_max``, or (a message) whose chat is not in the workspace
would be refused by the server, or worse, sink its whole batch (or stop the
cycle). :func:`check_items` names the column and the reason; the caller
isolates that row (Failed, ACODE-SYNC-005) and everything else flows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from acode_sync import text
from acode_sync.errors import INVALID_PAYLOAD
from acode_sync.outbox import OutboxRow


def check_items(
    rows: Sequence[OutboxRow], unfit: dict[int, str], item_bytes_max: int
) -> dict[int, str]:
    """What is wrong with each row that cannot be uploaded as it is, by seq
    (``ACODE-SYNC-005: invalid payload: <column>: <why>``).

    Every row of a drain passes through here: the text is judged in Python only
    where a cheap scan finds something to judge; the JSON was judged by SQLite
    in the claim's own statement (``unfit``, by seq: the ``claim_due`` query),
    and counts only where the text and the size are fit.
    """
    reasons: dict[int, str] = {}
    for row in rows:
        why = _check_text_and_size(row, item_bytes_max) or unfit.get(row.seq)
        if why is not None:
            reasons[row.seq] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
    return reasons


_STORED_AS: dict[type, str] = {bytes: "a BLOB", type(None): "NULL"}


def _check_text_and_size(row: OutboxRow, item_bytes_max: int) -> str | None:
    """The row's id and payload text, and its size; None when fit."""
    # A client can store any value in any column (the sqlite3 shell, by hand):
    # what is not text can neither be judged as text nor sent.
    texts = (
        ("idempotency_key", row.idempotency_key),
        ("id", row.entity_id),
        ("payload", row.payload),
    )
    for column, value in texts:
        if not isinstance(value, str):
            return f"{column}: stored as {_STORED_AS.get(type(value), 'a number')}, not text"
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
