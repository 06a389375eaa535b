"""Retention prunes synced history, and the workspace file gives the space back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from acode_sync import store
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
