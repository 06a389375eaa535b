"""Claiming the rows of the next upload round: which open outbox rows may go
now, in queue order, each with what the send-time checks need of it (the
payload's JSON judged and the entity's privacy now, read by SQLite in the
same statement, so the uploader looks nothing up again)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from acode_sync.clock import iso
from acode_sync.outbox import OPEN, PENDING, OutboxRow
from acode_sync.queries import query

_SCAN_PAGE = 1000
_NEWEST = 2**63 - 1  # no row's seq is above it
_ROW = itemgetter(slice(0, len(OutboxRow._fields)))


class Claim(NamedTuple):
    rows: list[OutboxRow]
    # Every row from the start of the scan on was due (nothing held back): the
    # next claim may start after these rows while they are still in flight.
    clean: bool
    # What SQLite found wrong with a row's payload, by seq (only unfit rows;
    # the text and the size are judged in Python: acode_sync.validate).
    unfit: dict[int, str]
    # An upsert's entity's privacy now, by seq (only rows not FULL).
    levels: dict[int, str]


def claim_due(
    conn: sqlite3.Connection,
    now: datetime,
    limit: int,
    *,
    after: int = 0,
    upto: int | None = None,
    ignore_backoff: bool = False,
    release_link_failures: bool = False,
) -> Claim:
    """Up to ``limit`` rows that may go now, in seq order, from seq ``after`` on
    (0: the head of the queue; a later start only past a clean claim) up to
    seq ``upto`` (None: the newest), with what the send-time checks need of
    each (see :class:`Claim`).

    Due: Pending rows; waiting rows whose backoff is over (all of them with
    ``ignore_backoff``; with ``release_link_failures``, also those that failed
    only because the link broke: the caller has just reached the server).
    Failed-for-good rows are skipped: they wait for ``retry``.

    A row that is not due holds back only what depends on it, so the queue
    never stalls behind it: later rows of its entity (they would overtake it)
    and, for a chat, its messages. Everything else goes past it.
    """
    stamp = iso(now)

    def due(row: OutboxRow) -> bool:
        return (
            ignore_backoff
            or row.status == "Pending"
            or (row.next_retry_at or "") <= stamp
            or (release_link_failures and row.link_failure)
        )

    last = _NEWEST if upto is None else upto
    claim = _claim(conn, after, last, limit, None)
    if all(due(row) for row in claim.rows):
        return claim  # the common case: nothing is waiting at the head
    taken = _claim_around(conn, due, limit, after, last)
    if not taken:
        return Claim([], False, {}, {})
    seqs = [row.seq for row in taken]
    return _claim(conn, seqs[0] - 1, last, len(seqs), json.dumps(seqs))._replace(clean=False)


def _claim(conn: sqlite3.Connection, after: int, upto: int, limit: int, seqs: str | None) -> Claim:
    """The rows of the ``claim_due`` query and their facts. Read first as
    plain UTF-8, decoded in C: a drain pays the text factory's Python call on
    every value otherwise (11 per row). Only a row holding bytes that are not
    UTF-8 (or an encoded lone surrogate) makes the strict read fail; then the
    rows are read again through the connection's factory, which keeps such
    bytes (acode_sync.text): for any other text both reads give the same str."""
    params = {"after": after, "upto": upto, "limit": limit, "seqs": seqs}
    factory = conn.text_factory
    try:
        conn.text_factory = str
        fetched = _fetch(conn, params)
    except sqlite3.OperationalError as exc:
        if not str(exc).startswith(_UNDECODABLE):
            raise
        conn.text_factory = factory
        fetched = _fetch(conn, params)
    finally:
        conn.text_factory = factory
    rows = list(map(OutboxRow._make, map(_ROW, fetched)))
    unfit = {values[0]: values[-2] for values in fetched if values[-2] is not None}
    levels = {values[0]: values[-1] for values in fetched if values[-1] not in (None, "FULL")}
    return Claim(rows, True, unfit, levels)


_UNDECODABLE = "Could not decode to UTF-8"


def _fetch(conn: sqlite3.Connection, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
    cursor = conn.execute(query("claim_due"), params)
    # Plain tuples in field order: half the cost of sqlite3.Row -> dict -> kwargs.
    cursor.row_factory = None
    return cursor.fetchall()


def _claim_around(
    conn: sqlite3.Connection, due: Callable[[OutboxRow], bool], limit: int, after: int, upto: int
) -> list[OutboxRow]:
    """The slow path of :func:`claim_due`: walk the queue keeping the
    dependency rules, past the rows that are not due."""
    held: set[tuple[str, str]] = set()
    held_chats: set[str] = set()
    taken: list[OutboxRow] = []
    while len(taken) < limit:
        cursor = conn.execute(
            f"SELECT {', '.join('o.' + name for name in OutboxRow._fields)}, "
            "coalesce(m.chat_id, CASE WHEN json_valid(o.payload) "
            "THEN json_extract(o.payload, '$.chat_id') END) "
            "FROM sync_outbox o LEFT JOIN messages m "
            "ON o.entity_type = 'message' AND m.id = o.entity_id "
            f"WHERE o.{OPEN} AND (o.{PENDING} OR o.next_retry_at IS NOT NULL) "
            "AND o.seq > ? AND o.seq <= ? ORDER BY o.seq LIMIT ?",
            (after, upto, _SCAN_PAGE),
        )
        cursor.row_factory = None
        page = cursor.fetchall()
        for *values, chat_id in page:
            row = OutboxRow(*values)
            key = (row.entity_type, row.entity_id)
            blocked = key in held or (row.entity_type == "message" and chat_id in held_chats)
            if blocked or not due(row):
                held.add(key)
                if row.entity_type == "chat":
                    held_chats.add(row.entity_id)
                continue
            taken.append(row)
            if len(taken) == limit:
                break
        if len(page) < _SCAN_PAGE:
            break
        after = page[-1][0]
    return taken
