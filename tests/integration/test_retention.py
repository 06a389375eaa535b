"""Retention prunes synced history, and the workspace file gives the space back."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
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
