"""The queue tally (local migration 0010): the queue's counts stay those of the
rows themselves through captures, marking, retries, deletes and folds."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from acode_sync import outbox, store
from acode_sync.errors import ConnectionFailed
from acode_sync.migrations import migrate_local, shipped
from acode_sync.workspace import connect, connect_read_only, write
from tests.fix_sync import make_device

TRUTH = """
SELECT CASE WHEN status = 'Pending' THEN 'pending'
            WHEN next_retry_at IS NULL THEN 'failed' ELSE 'waiting' END,
       entity_type, count(*)
FROM sync_outbox WHERE status IN ('Pending', 'Failed') GROUP BY 1, 2
"""


def truth(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {"pending": {}, "waiting": {}, "failed": {}}
    for state, kind, rows in conn.execute(TRUTH):
        found[state][kind] = rows
    return found


def tally(conn: sqlite3.Connection) -> tuple[int, int]:
    """(the mark, the open rows at or below it)"""
    mark, rows = conn.execute("SELECT upto_seq, open_rows FROM sync_queue_tally").fetchone()
    return int(mark), int(rows)


def check(conn: sqlite3.Connection) -> None:
    summary = outbox.summary(conn)
    expected = truth(conn)
    assert summary.by_type == expected
    assert summary.counts.depth == sum(sum(kinds.values()) for kinds in expected.values())
    mark, top = conn.execute(
        "SELECT upto_seq, (SELECT coalesce(max(seq), 0) FROM sync_outbox) FROM sync_queue_tally"
    ).fetchone()
    assert mark <= top  # a new row always lands after the mark


def capture(conn: sqlite3.Connection, rng: random.Random, serial: list[int]) -> None:
    with write(conn):
        for _ in range(rng.randint(1, 30)):
            serial[0] += 1
            if rng.random() < 0.1:
                conn.execute("INSERT INTO chats (id, title) VALUES (?, 't')", (f"c{serial[0]}",))
            else:
                conn.execute(
                    "INSERT INTO messages (id, chat_id, role, content) "
                    "VALUES (?, 'c0', 'user', 'x')",
                    (f"m{serial[0]}",),
                )


CHANGES = [
    "UPDATE sync_outbox SET status = 'Synced', synced_at = 'now', payload = NULL "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status IN ('Pending', 'Failed') "
    "ORDER BY seq LIMIT :n)",
    "UPDATE sync_outbox SET status = 'Superseded', synced_at = 'now', payload = NULL "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status = 'Pending' "
    "ORDER BY random() LIMIT :n)",
    "UPDATE sync_outbox SET status = 'Failed', next_retry_at = '2999-01-01T00:00:00.000Z', "
    "last_error = 'e' WHERE seq IN (SELECT seq FROM sync_outbox WHERE status = 'Pending' "
    "ORDER BY random() LIMIT :n)",
    "UPDATE sync_outbox SET status = 'Failed', next_retry_at = NULL, last_error = 'e' "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status IN ('Pending', 'Failed') "
    "ORDER BY random() LIMIT :n)",
    "UPDATE sync_outbox SET status = 'Pending', next_retry_at = NULL "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status = 'Failed' "
    "ORDER BY random() LIMIT :n)",
    "UPDATE sync_outbox SET status = 'Conflict', synced_at = 'now' "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status IN ('Pending', 'Failed') "
    "ORDER BY random() LIMIT :n)",
    # a row put back in the queue from history (the push conflict the local side won)
    "UPDATE sync_outbox SET status = 'Pending', payload = '{}' "
    "WHERE seq IN (SELECT seq FROM sync_outbox WHERE status = 'Conflict' "
    "ORDER BY random() LIMIT :n)",
    # retention, and deletes of any row (by hand), the newest ones included
    "DELETE FROM sync_outbox WHERE seq IN (SELECT seq FROM sync_outbox "
    "WHERE status IN ('Synced', 'Superseded') ORDER BY seq LIMIT :n)",
    "DELETE FROM sync_outbox WHERE seq IN (SELECT seq FROM sync_outbox ORDER BY random() LIMIT :n)",
    "DELETE FROM sync_outbox WHERE seq IN (SELECT seq FROM sync_outbox ORDER BY seq DESC LIMIT :n)",
]


def test_the_counts_are_the_rows_through_every_kind_of_change(
    bare_db: sqlite3.Connection,
) -> None:
    rng = random.Random(10)
    serial = [0]
    with write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c0', 't')")
    seen: set[str | int] = set()
    for _ in range(400):
        roll = rng.random()
        if roll < 0.3:
            capture(bare_db, rng, serial)
            seen.add("capture")
        elif roll < 0.45:
            chunk = rng.choice([1, 7, outbox.FOLD_CHUNK])
            assert outbox.fold(bare_db, at_least=rng.choice([0, 1, 5]), chunk=chunk) in (
                True,
                False,
            )
            seen.add("fold")
        else:
            index = rng.randrange(len(CHANGES))
            with write(bare_db):
                changed = bare_db.execute(CHANGES[index], {"n": rng.randint(1, 8)}).rowcount
            if changed:
                seen.add(index)
        check(bare_db)
    # every kind of change happened at least once, so each was checked
    assert seen == {"capture", "fold", *range(len(CHANGES))}


def test_a_new_row_after_the_newest_rows_went_is_counted(bare_db: sqlite3.Connection) -> None:
    with write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        for i in range(5):
            bare_db.execute(
                "INSERT INTO messages (id, chat_id, role) VALUES (?, 'c', 'user')", (f"m{i}",)
            )
    assert outbox.fold(bare_db, at_least=0)
    with write(bare_db):  # synced, then pruned: the table is empty, the mark was 6
        bare_db.execute("UPDATE sync_outbox SET status = 'Synced', payload = NULL")
        bare_db.execute("DELETE FROM sync_outbox")
    assert tally(bare_db) == (0, 0)
    with write(bare_db):  # seq 1 again
        bare_db.execute("INSERT INTO messages (id, chat_id, role) VALUES ('new', 'c', 'user')")
    assert outbox.counts(bare_db) == outbox.QueueCounts(pending=1)
    check(bare_db)


def test_a_reader_folds_only_when_the_lock_is_free_and_counts_either_way(
    bare_db: sqlite3.Connection, tmp_path: Path
) -> None:
    with write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        for i in range(20):
            bare_db.execute(
                "INSERT INTO messages (id, chat_id, role) VALUES (?, 'c', 'user')", (f"m{i}",)
            )
    writer = connect(tmp_path / "bare.db")
    try:
        writer.execute("BEGIN IMMEDIATE")
        assert not outbox.fold(bare_db, at_least=1)  # does not wait for the writer
        assert bare_db.execute("PRAGMA busy_timeout").fetchone()[0] > 0  # put back
        assert outbox.counts(bare_db) == outbox.QueueCounts(pending=21)
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert not outbox.fold(bare_db, at_least=100)  # too few rows after the mark
    assert outbox.fold(bare_db, at_least=1)
    assert tally(bare_db) == (21, 21)
    assert outbox.counts(bare_db) == outbox.QueueCounts(pending=21)
    bare_db.execute("BEGIN")
    assert not outbox.fold(bare_db, at_least=0)  # never inside the caller's transaction
    bare_db.execute("ROLLBACK")


def test_0010_tallies_an_existing_outbox(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in shipped("sqlite")[:9]:  # as 0009 left it
        old.executescript(migration.sql)
    old.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
    for i in range(30):
        old.execute("INSERT INTO messages (id, chat_id, role) VALUES (?, 'c', 'user')", (f"m{i}",))
    old.execute("UPDATE sync_outbox SET status = 'Synced', payload = NULL WHERE seq <= 10")
    old.execute("UPDATE sync_outbox SET status = 'Failed', last_error = 'e' WHERE seq > 25")
    old.close()
    conn = connect(path)
    assert migrate_local(conn) == [m.name for m in shipped("sqlite")[9:]]
    assert tally(conn) == (31, 21)
    assert outbox.counts(conn) == outbox.QueueCounts(pending=15, failed=6)
    check(conn)
    conn.close()


def test_a_read_only_workspace_made_before_0010_is_counted_without_the_tally(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in shipped("sqlite")[:9]:  # as 0009 left it, and nobody may migrate it
        old.executescript(migration.sql)
    old.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
    for i in range(12):
        old.execute("INSERT INTO messages (id, chat_id, role) VALUES (?, 'c', 'user')", (f"m{i}",))
    old.execute("UPDATE sync_outbox SET status = 'Failed', last_error = 'e' WHERE seq > 10")
    old.close()
    reader = connect_read_only(path)
    try:
        assert not outbox.fold(reader, at_least=0)
        summary = outbox.summary(reader)
        assert summary.by_type == truth(reader)
        assert summary.counts == outbox.QueueCounts(pending=10, failed=3)
    finally:
        reader.close()


def test_a_fold_goes_in_chunks_to_the_newest_row(bare_db: sqlite3.Connection) -> None:
    with write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        for i in range(20):
            bare_db.execute(
                "INSERT INTO messages (id, chat_id, role) VALUES (?, 'c', 'user')", (f"m{i}",)
            )
        bare_db.execute("UPDATE sync_outbox SET status = 'Synced', payload = NULL WHERE seq <= 4")
    before = bare_db.total_changes
    assert outbox.fold(bare_db, at_least=1, chunk=5)
    assert bare_db.total_changes - before == 5  # five chunks: seqs 1-5, ..., 21
    assert tally(bare_db) == (21, 17)
    check(bare_db)


def test_a_cycle_folds_what_was_captured_even_offline(tmp_path: Path) -> None:
    device = make_device(tmp_path, "offline", "postgresql://nobody@127.0.0.1:1/acode")
    conn = device.db()
    chat = store.new_chat(conn, "c")
    with write(conn):
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO messages (id, chat_id, role, content) "
            "SELECT 'm' || i, ?, 'user', 'x' FROM n",
            (outbox.FOLD_AT, chat),
        )
    assert tally(conn) == (0, 0)
    with pytest.raises(ConnectionFailed):
        device.sync()
    assert tally(conn) == (outbox.FOLD_AT + 1, outbox.FOLD_AT + 1)
    assert outbox.counts(conn) == outbox.QueueCounts(pending=outbox.FOLD_AT + 1)
    conn.close()
