"""Retention prunes synced history, and the workspace file gives the space back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from acode_sync import retention, store
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import FakeClock, make_device


def test_the_file_shrinks_after_pruning(tmp_path: Path, pg: PgDatabase) -> None:
    clock = FakeClock()
    alice = make_device(tmp_path, "alice", pg.device_url("alice"), **{"upload.batch_size": 1000})
    alice.clock = clock
    conn = alice.db()
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    chat = store.new_chat(conn, "t")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((f"m{i:05d}", chat, "x" * 1500) for i in range(3000)),
        )
    alice.sync()

    def file_bytes() -> int:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return alice.workspace.db_path.stat().st_size

    synced = file_bytes()
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 3001
    clock.now += timedelta(days=8)  # past the 7-day retention default
    alice.sync()
    assert conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sync_inbox").fetchone()[0] == 0
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert file_bytes() < synced
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3000
    conn.close()


def test_reclaim_hands_back_every_free_page_and_counts_them(db: sqlite3.Connection) -> None:
    with write(db):
        db.execute("CREATE TABLE ballast (body TEXT)")
        db.executemany("INSERT INTO ballast VALUES (?)", (("x" * 3000,) for _ in range(2000)))
    with write(db):
        db.execute("DELETE FROM ballast WHERE rowid % 2 = 0")
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    assert free > 1000
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    # Each statement frees as many pages as it asks for, not one (sqlite3's
    # execute() steps a pragma without columns once).
    assert retention.reclaim(db) == free
    assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert db.execute("PRAGMA page_count").fetchone()[0] <= pages - free  # pointer-map pages too
    assert not db.in_transaction


def test_pruning_searches_outside_the_write_lock(
    bare_db: sqlite3.Connection, tmp_path: Path
) -> None:
    """The search for old history scans the whole table where little is old
    (a new device after a big pull): another writer must not wait for it.
    Each statement that tests the age of a row finds the lock free when it
    starts, except the delete of what was found (its seqs are given)."""
    old, recent = "2026-01-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z"
    bare_db.executemany(
        "INSERT INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, version, "
        "changed_at, status, applied_at) VALUES (?, ?, 'message', ?, 1, ?, 'Applied', ?)",
        (
            (seq, f"k{seq}", f"m{seq}", old, old if seq % 10 == 0 else recent)
            for seq in range(1, 5001)
        ),
    )
    other = sqlite3.connect(tmp_path / "bare.db", isolation_level=None, timeout=0)
    searches: list[bool] = []

    def on_statement(statement: str) -> None:
        if "applied_at <" not in statement or "json_each" in statement:
            return
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            searches.append(False)  # the write lock is held
        else:
            other.execute("ROLLBACK")
            searches.append(True)

    bare_db.set_trace_callback(on_statement)
    pruned = retention.prune(bare_db, datetime(2026, 3, 1, tzinfo=UTC))
    bare_db.set_trace_callback(None)
    other.close()
    assert pruned.inbox == 500
    assert searches and all(searches)
    assert bare_db.execute("SELECT count(*) FROM sync_inbox").fetchone()[0] == 4500
