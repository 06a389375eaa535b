"""The scene a push benchmark plays in: the device, its local backlog written
through the capture triggers, and the checks every phase makes of what the
server and the local file hold afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from harness import CONTENT, COPY_TABLE, DEVICE_ROLE, fresh_local
from ulid import ULID

from acode_sync.config import SyncConfig, parse_config
from acode_sync.store import new_chat
from acode_sync.upload import PushReport
from acode_sync.workspace import write

DEVICE_ID = "bench-device"
LATENCY_BATCH = 50  # messages in the one-batch measurement (a)
DRAIN_BATCHES = (50, 1000)  # batch sizes of the drains (b)
BYTES_MAX = {50: 1_048_576, 1000: 16 * 1_048_576}
INSERT_MESSAGE = "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, ?, ?)"


def sync_config(batch_size: int, batch_bytes_max: int) -> SyncConfig:
    return parse_config(
        {
            "sync": {
                "device_id": DEVICE_ID,
                "upload": {"batch_size": batch_size, "batch_bytes_max": batch_bytes_max},
            }
        },
        "benchmarks/push.py",
    )


def server_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM acode_sync.messages), "
            "(SELECT count(*) FROM acode_sync.chats), "
            "(SELECT count(*) FROM acode_sync.changes), "
            "(SELECT count(DISTINCT idempotency_key) FROM acode_sync.changes), "
            "(SELECT count(*) FROM acode_sync.conflicts), "
            f"(SELECT count(*) FROM {COPY_TABLE})"
        ).fetchone()
    assert row is not None
    keys = ("messages", "chats", "changes", "distinct_keys", "conflicts", "copied")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def open_local(path: Path) -> tuple[sqlite3.Connection, str]:
    """A fresh migrated workspace database with one chat."""
    conn = fresh_local(path)
    return conn, new_chat(conn, "benchmark backlog")


def write_messages(conn: sqlite3.Connection, chat_id: str, count: int) -> list[str]:
    """``count`` messages in one local transaction, through the capture triggers."""
    ids = [str(ULID()) for _ in range(count)]
    with write(conn):
        conn.executemany(
            INSERT_MESSAGE,
            (
                (message_id, chat_id, "user" if i % 2 == 0 else "assistant", CONTENT)
                for i, message_id in enumerate(ids)
            ),
        )
    return ids


def copy_source(
    conn: sqlite3.Connection, ids: Sequence[str] | None = None
) -> list[tuple[Any, ...]]:
    """The local messages (all, or ``ids``) as COPY rows of the baseline table."""
    query = (
        "SELECT m.id, m.chat_id, m.role, m.content, m.privacy, m.created_at, m.updated_at, "
        "m.deleted_at, o.idempotency_key, o.changed_at FROM messages m "
        "JOIN sync_outbox o ON o.entity_type = 'message' AND o.entity_id = m.id"
    )
    if ids is None:
        found = conn.execute(query + " ORDER BY o.seq").fetchall()
    else:
        found = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            found += conn.execute(query + f" WHERE m.id IN ({marks})", chunk).fetchall()
    # COPY_COLUMNS order: owner, entity columns, version 1, changed_at, device, key, batch.
    return [(DEVICE_ROLE, *r[:8], 1, r[9], DEVICE_ID, r[8], None) for r in found]


def check_local_all_synced(conn: sqlite3.Connection, rows: int) -> None:
    statuses = dict(conn.execute("SELECT status, count(*) FROM sync_outbox GROUP BY status"))
    if statuses != {"Synced": rows + 1}:
        raise AssertionError(f"local outbox: {statuses}, want {{'Synced': {rows + 1}}}")
    entities = conn.execute(
        "SELECT sync_status, version, count(*) FROM "
        "(SELECT sync_status, version FROM chats UNION ALL SELECT sync_status, version "
        "FROM messages) GROUP BY sync_status, version"
    ).fetchall()
    if [tuple(e) for e in entities] != [("Synced", 1, rows + 1)]:
        raise AssertionError(f"local entities: {[tuple(e) for e in entities]}, want all Synced v1")


def check_report(report: PushReport, want_applied: int, what: str) -> None:
    problems = (report.rejected, report.failed, report.conflicts, report.withheld)
    if report.applied != want_applied or report.duplicates or any(problems) or report.errors:
        raise AssertionError(f"{what}: unexpected push report {report}")
