"""Retention: synced history goes, and the file gives the space back.

Synced (or superseded) outbox rows and applied (or skipped) inbox rows older
than the retention period are deleted; nothing Pending, Failed or Conflict is
ever pruned. Then, in a file with ``auto_vacuum = INCREMENTAL`` (every
workspace since local migration 0007), the freed pages are handed back to the
file system, so the file shrinks.

Both run in short slices, each its own write transaction: a prune of a
100,000-item drain must not hold SQLite's write lock for the time another
writer (the coding CLI) is willing to wait. A crash between slices leaves
less to do next time, nothing inconsistent.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from acode_sync.clock import iso
from acode_sync.pacing import Pacer
from acode_sync.queries import query
from acode_sync.workspace import is_busy, write

# Rows deleted per write transaction (a few ms each).
PRUNE_SLICE = 2000
# Pages (4 KiB) handed back by the first write transaction; the next ones as
# many as fit a paced slice (acode_sync.pacing).
VACUUM_SLICE = 500
INCREMENTAL = 2  # PRAGMA auto_vacuum


@dataclass(frozen=True)
class Pruned:
    outbox: int
    inbox: int
    pages_freed: int


def prune(conn: sqlite3.Connection, before: datetime) -> Pruned:
    """Delete history older than ``before``, then give the freed pages back.
    Not inside a transaction: every slice is its own."""
    cutoff = iso(before)
    outbox = _in_slices(conn, query("prune_outbox_find"), query("prune_outbox"), cutoff)
    inbox = _in_slices(conn, query("prune_inbox_find"), query("prune_inbox"), cutoff)
    return Pruned(outbox, inbox, reclaim(conn))


def _in_slices(conn: sqlite3.Connection, find: str, delete: str, cutoff: str) -> int:
    """Delete by ``delete`` what ``find`` finds, a slice at a time. The
    search is a read, outside the write lock: where nothing is old yet (a new
    device after its first pull of 100,000 changes) it scans the whole table,
    45 to 60 ms that another writer would otherwise wait for (issue 9)."""
    total = 0
    while True:
        found = [seq for (seq,) in conn.execute(find, {"before": cutoff, "slice": PRUNE_SLICE})]
        if not found:
            return total
        with write(conn):
            # The condition again: what the read found is deleted only if
            # it is still old history.
            seqs = {"before": cutoff, "seqs": json.dumps(found)}
            total += conn.execute(delete, seqs).rowcount
        if len(found) < PRUNE_SLICE:
            return total


def reclaim(conn: sqlite3.Connection) -> int:
    """Hand the free pages back to the file system (``auto_vacuum = INCREMENTAL``
    only; a file still waiting for migration 0007 keeps them). Pages freed."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        return 0
    with Pacer(conn, rows=VACUUM_SLICE) as pacer:
        return _reclaim(conn, pacer)


def _reclaim(conn: sqlite3.Connection, pacer: Pacer) -> int:
    freed = 0
    while True:
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if not free:
            return freed
        step = min(free, pacer.rows)
        started = pacer.before()
        # One statement, its own write transaction (autocommit). Through
        # executescript, which steps a statement to its end: execute() steps a
        # pragma that returns no column only once, and incremental_vacuum(N)
        # frees one page per step.
        try:
            conn.executescript(f"PRAGMA incremental_vacuum({step})")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return freed  # another writer held the file past the busy timeout: next time
        pacer.held(started, step)  # the hold with its COMMIT: one statement
        pacer.released()
        freed += step
        if free <= step:
            return freed
