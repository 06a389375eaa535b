"""The server's ``push()`` alone, for benchmarks/now.py: the same outbox rows
sent as ``acode-sync now`` sends them, but with every batch's JSON made before
the clock starts and nothing done locally between the calls: the most a whole
``now`` could reach at that batch size."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import _push_backlog as backlog
import harness
from ulid import ULID

from acode_sync.engine import connect_remote
from acode_sync.outbox import COLUMNS, OutboxRow
from acode_sync.remote import push_batch
from acode_sync.rounds import wire_items


def timed_push_only(db_url: str, db: Path, batch_size: int) -> float:
    """The outbox's rows through ``acode_sync.push`` alone, ``batch_size`` per
    call, the JSON made before the clock starts; checked, then the server emptied."""
    conn = sqlite3.connect(db)
    try:
        cursor = conn.execute(
            f"SELECT {COLUMNS} FROM sync_outbox WHERE status = 'Pending' ORDER BY seq"
        )
        rows = [OutboxRow(*values) for values in cursor.fetchall()]
    finally:
        conn.close()
    wires = [
        wire_items([(row, row.payload) for row in rows[i : i + batch_size]])
        for i in range(0, len(rows), batch_size)
    ]
    harness.reset_server(db_url)
    with connect_remote(harness.with_params(db_url, user=harness.DEVICE_ROLE)) as pg:
        start = time.perf_counter()
        for wire in wires:
            results = push_batch(pg, str(ULID()), "bench-push-only", wire).results
            if any(result.outcome != "applied" for result in results):
                raise AssertionError(f"push() alone: {results[0]}")
        seconds = time.perf_counter() - start
    counts = backlog.server_counts(db_url)
    if (counts["messages"], counts["chats"], counts["conflicts"]) != (len(rows) - 1, 1, 0):
        raise AssertionError(f"push() alone: the server has {counts}")
    harness.reset_server(db_url)
    return seconds
