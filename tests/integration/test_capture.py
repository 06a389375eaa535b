"""Capture: every write to chats/messages, from any client, lands in the outbox."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess

import pytest
from ulid import ULID

from acode_sync import store
from acode_sync.apply import applying_remote
from acode_sync.workspace import Workspace, write
from tests.fix_local import needs

needs_shell = needs("sqlite3")


def outbox(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM sync_outbox ORDER BY seq").fetchall()


@needs_shell
def test_sqlite3_shell_writes_are_captured_with_ulid_keys(
    workspace: Workspace, db: sqlite3.Connection
) -> None:
    script = """
        INSERT INTO chats (id, title) VALUES ('chat-shell', 'from the shell');
        INSERT INTO messages (id, chat_id, role, content)
        VALUES ('msg-shell', 'chat-shell', 'user', 'typed by hand');
    """
    subprocess.run(["sqlite3", str(workspace.db_path)], input=script, text=True, check=True)
    rows = outbox(db)
    assert [(r["entity_type"], r["entity_id"]) for r in rows] == [
        ("chat", "chat-shell"),
        ("message", "msg-shell"),
    ]
    for row in rows:
        key = ULID.from_str(row["idempotency_key"])  # raises if not a ULID
        assert abs(key.timestamp - ULID().timestamp) < 60
        assert row["status"] == "Pending"
        assert row["retry_count"] == 0
        assert row["base_version"] == 0
        assert row["changed_at"].endswith("Z")
    message = json.loads(rows[1]["payload"])
    assert message["content"] == "typed by hand"
    assert message["chat_id"] == "chat-shell"


def test_hundred_thousand_writes_carry_distinct_keys(bare_db: sqlite3.Connection) -> None:
    with write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        # One multi-row statement: the key must be fresh per row, not per statement.
        bare_db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) "
            "INSERT INTO messages (id, chat_id, role, content) "
            "SELECT 'm' || i, 'c', 'user', 'x' FROM n"
        )
        bare_db.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, 'c', 'user', 'y')",
            ((f"p{i}",) for i in range(49_999)),
        )
    count, distinct = bare_db.execute(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM sync_outbox"
    ).fetchone()
    assert count == 100_000
    assert distinct == 100_000


def test_chat_privacy_change_recaptures_messages_with_distinct_keys(
    bare_db: sqlite3.Connection,
) -> None:
    chat = store.new_chat(bare_db, "t")
    for i in range(20):
        store.add_message(bare_db, chat, f"m{i}")
    store.set_privacy(bare_db, chat, "REDACTED")
    rows = outbox(bare_db)
    recaptured = rows[22:]
    assert len(recaptured) == 20
    assert len({r["idempotency_key"] for r in rows}) == len(rows)
    assert rows[21]["entity_type"] == "chat"  # the chat's own row comes first
    for row in recaptured:
        payload = json.loads(row["payload"])
        assert payload["privacy"] == "REDACTED"
        assert payload["content"] is None


def test_failed_transaction_leaves_neither_data_nor_outbox(bare_db: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c1', 't')")
        raise RuntimeError("the application fails after its data write")
    assert bare_db.execute("SELECT count(*) FROM chats").fetchone()[0] == 0
    assert outbox(bare_db) == []


def test_failed_outbox_insert_rolls_back_the_data_write(bare_db: sqlite3.Connection) -> None:
    bare_db.execute(
        "CREATE TEMP TRIGGER outbox_breaks BEFORE INSERT ON sync_outbox "
        "BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="outbox unavailable"), write(bare_db):
        bare_db.execute("INSERT INTO chats (id, title) VALUES ('c1', 't')")
    bare_db.execute("DROP TRIGGER outbox_breaks")
    assert bare_db.execute("SELECT count(*) FROM chats").fetchone()[0] == 0
    assert outbox(bare_db) == []


def test_local_only_chat_and_its_messages_never_reach_the_outbox(
    bare_db: sqlite3.Connection,
) -> None:
    chat = store.new_chat(bare_db, "secret", privacy="LOCAL_ONLY")
    message = store.add_message(bare_db, chat, "private words")
    store.rename_chat(bare_db, chat, "still secret")
    with write(bare_db):
        bare_db.execute("UPDATE messages SET content = 'edited' WHERE id = ?", (message,))
    visible = store.new_chat(bare_db, "public")
    store.add_message(bare_db, visible, "shh", privacy="LOCAL_ONLY")
    assert [(r["entity_id"]) for r in outbox(bare_db)] == [visible]
    assert "private" not in json.dumps([dict(r) for r in outbox(bare_db)])


def test_redacted_payloads_carry_no_content(bare_db: sqlite3.Connection) -> None:
    chat = store.new_chat(bare_db, "title travels", privacy="REDACTED")
    store.add_message(bare_db, chat, "the secret content")
    open_chat = store.new_chat(bare_db, "open")
    store.add_message(bare_db, open_chat, "redact me", privacy="REDACTED")
    payloads = [json.loads(r["payload"]) for r in outbox(bare_db)]
    assert payloads[0]["title"] == "title travels"
    messages = [p for p in payloads if "chat_id" in p]
    assert len(messages) == 2
    assert all(p["content"] is None and p["privacy"] == "REDACTED" for p in messages)
    assert "secret content" not in json.dumps(payloads)
    assert "redact me" not in json.dumps(payloads)


def test_status_only_updates_create_no_outbox_row(bare_db: sqlite3.Connection) -> None:
    chat = store.new_chat(bare_db, "t")
    message = store.add_message(bare_db, chat, "x")
    before = len(outbox(bare_db))
    with write(bare_db):
        bare_db.execute(
            "UPDATE chats SET sync_status = 'Synced', version = 4 WHERE id = ?", (chat,)
        )
        bare_db.execute("UPDATE messages SET sync_status = 'Failed' WHERE id = ?", (message,))
        bare_db.execute("UPDATE chats SET title = title WHERE id = ?", (chat,))  # no change
        bare_db.execute("UPDATE messages SET updated_at = 'x' WHERE id = ?", (message,))
    assert len(outbox(bare_db)) == before


def test_guarded_remote_apply_is_not_captured(bare_db: sqlite3.Connection) -> None:
    with applying_remote(bare_db):
        bare_db.execute("INSERT INTO chats (id, title, version) VALUES ('r1', 'remote', 3)")
        bare_db.execute("UPDATE chats SET title = 'remote 2' WHERE id = 'r1'")
    assert outbox(bare_db) == []
    assert bare_db.execute("SELECT applying FROM sync_state").fetchone()[0] == 0
    store.rename_chat(bare_db, "r1", "local edit")  # the guard is down again
    rows = outbox(bare_db)
    assert len(rows) == 1
    assert rows[0]["base_version"] == 3


def test_soft_delete_is_captured_as_an_update(bare_db: sqlite3.Connection) -> None:
    chat = store.new_chat(bare_db, "t")
    message = store.add_message(bare_db, chat, "x")
    store.delete(bare_db, message)
    store.delete(bare_db, chat)
    rows = outbox(bare_db)
    assert [r["entity_id"] for r in rows] == [chat, message, message, chat]
    assert json.loads(rows[2]["payload"])["deleted_at"] is not None
    assert json.loads(rows[3]["payload"])["deleted_at"] is not None
    assert bare_db.execute("SELECT count(*) FROM chats").fetchone()[0] == 1


def test_becoming_local_only_sends_one_withdrawal_then_nothing(
    bare_db: sqlite3.Connection,
) -> None:
    chat = store.new_chat(bare_db, "t")
    store.add_message(bare_db, chat, "x")
    store.set_privacy(bare_db, chat, "LOCAL_ONLY")
    store.rename_chat(bare_db, chat, "now private")
    store.add_message(bare_db, chat, "private")
    rows = outbox(bare_db)
    assert [(r["entity_type"], r["op"]) for r in rows] == [
        ("chat", "upsert"),
        ("message", "upsert"),
        ("chat", "withdraw"),
    ]
    assert json.loads(rows[2]["payload"]) == {"id": chat}


def test_the_key_is_a_ulid_of_its_millisecond_for_any_time(bare_db: sqlite3.Connection) -> None:
    """The view's spelling of the time agrees with python-ulid's for times across
    the whole 48-bit range (the view with the time given instead of read)."""
    sql = bare_db.execute("SELECT sql FROM sqlite_master WHERE name = 'sync_new_key'").fetchone()[0]
    now = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    assert sql.count(now) == 1
    select = sql.split(" AS\n", 1)[1].replace(now, ":t")
    rng = random.Random(9)
    times = [0, 1, 1023, 1024, 2**48 - 1, *(rng.randrange(2**48) for _ in range(2000))]
    for ms in times:
        key = bare_db.execute(select, {"t": ms}).fetchone()[0]
        parsed = ULID.from_str(key)
        assert parsed.milliseconds == ms
        assert str(parsed) == key and len(key) == 26
    # The random part: 16 hex digits, fresh per key.
    tails = {bare_db.execute("SELECT key FROM sync_new_key").fetchone()[0][10:] for _ in range(200)}
    assert len(tails) == 200
    assert all(len(tail) == 16 and set(tail) <= set("0123456789ABCDEF") for tail in tails)
