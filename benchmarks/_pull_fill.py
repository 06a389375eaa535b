"""The server a pull benchmark reads: a "writer" device's chat and N messages,
inserted straight into the server as the device role, and the reader's set-up."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from harness import CONTENT
from ulid import ULID

from acode_sync.clock import iso, utcnow
from acode_sync.config import SyncConfig, parse_config
from acode_sync.engine import connect_remote
from acode_sync.workspace import write

WRITER_ID = "bench-writer"
STALE_WRITER_ID = "bench-other-device"  # sends the stale batches of (3)
READER_ID = "bench-reader"
FILL_CHUNK = 1000

MESSAGE_COLUMNS = (
    "id, chat_id, role, content, privacy, version, sync_status, created_at, updated_at, deleted_at"
)
# The Puller's own statement for a page (download.py), to fill inboxes by hand.
INBOX_INSERT = (
    "INSERT OR IGNORE INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, op, "
    "version, origin_device, changed_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SERVER_FILL = (
    "INSERT INTO acode_sync.messages (id, chat_id, role, content, privacy, created_at, "
    "updated_at, version, changed_at, origin_device, idempotency_key, batch_id) "
    "SELECT u.id, %s, u.role, u.content, 'FULL', u.t::timestamptz, u.t::timestamptz, 1, "
    "u.t::timestamptz, %s, u.key, %s "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "AS u(id, role, content, t, key)"
)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Fill:
    """What the writer put on the server (times are the local format: UTC, ms, Z)."""

    chat: Row  # the local chats row: id, title, privacy, version, status, created, updated, deleted
    messages: list[Row]  # local messages rows, MESSAGE_COLUMNS order
    seconds: float
    last_seq: int


def reader_config(page_size: int) -> SyncConfig:
    return parse_config(
        {"sync": {"device_id": READER_ID, "download": {"page_size": page_size}}},
        "benchmarks/pull.py",
    )


def fill_inbox(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    with write(conn):
        conn.executemany(INBOX_INSERT, rows)


def fill_server(device_url: str, rows: int) -> Fill:
    """The writer's chat and ``rows`` messages, 1,000 per statement, as the device."""
    base = utcnow() - dt.timedelta(hours=2)
    chat_time = iso(base)
    chat_id = str(ULID())
    messages: list[Row] = []
    start = time.perf_counter()
    with connect_remote(device_url) as conn:
        conn.execute(
            "INSERT INTO acode_sync.chats (id, title, privacy, created_at, updated_at, "
            "version, changed_at, origin_device, idempotency_key, batch_id) "
            "VALUES (%s, 'benchmark pull', 'FULL', %s, %s, 1, %s, %s, %s, %s)",
            (chat_id, chat_time, chat_time, chat_time, WRITER_ID, str(ULID()), str(ULID())),
        )
        for first in range(0, rows, FILL_CHUNK):
            chunk = range(first, min(rows, first + FILL_CHUNK))
            ids = [str(ULID()) for _ in chunk]
            roles = ["user" if i % 2 == 0 else "assistant" for i in chunk]
            contents = [f"{CONTENT} (#{i})" for i in chunk]
            times = [iso(base + dt.timedelta(milliseconds=i + 1)) for i in chunk]
            keys = [str(ULID()) for _ in chunk]
            conn.execute(
                SERVER_FILL,
                (chat_id, WRITER_ID, str(ULID()), ids, roles, contents, times, keys),
            )
            messages += [
                (m, chat_id, r, c, "FULL", 1, "Synced", t, t, None)
                for m, r, c, t in zip(ids, roles, contents, times, strict=True)
            ]
    seconds = time.perf_counter() - start
    chat: Row = (chat_id, "benchmark pull", "FULL", 1, "Synced", chat_time, chat_time, None)
    return Fill(chat=chat, messages=messages, seconds=seconds, last_seq=rows + 1)


def settle_server(db_url: str) -> None:
    """After the fill: VACUUM ANALYZE (what autovacuum would do soon) and CHECKPOINT."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE acode_sync.chats, acode_sync.messages, acode_sync.changes")
        conn.execute("CHECKPOINT")


def check_server(db_url: str, rows: int) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM acode_sync.messages), "
            "(SELECT count(*) FROM acode_sync.chats), "
            "(SELECT count(*) FROM acode_sync.changes), "
            "(SELECT count(DISTINCT idempotency_key) FROM acode_sync.changes), "
            "(SELECT max(seq) FROM acode_sync.changes), "
            "(SELECT count(*) FROM acode_sync.changes WHERE origin_device <> %s)",
            (WRITER_ID,),
        ).fetchone()
    want = (rows, 1, rows + 1, rows + 1, rows + 1, 0)
    if row != want:
        raise AssertionError(f"server after the fill: {row}, want {want}")
