"""The upload path against the real PostgreSQL: versions, idempotency, batching,
isolation of bad items, and the ordering of the change log."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

import psycopg
import pytest

from acode_sync import store
from acode_sync.engine import connect_remote
from acode_sync.errors import ConnectionFailed, SetupError
from acode_sync.remote import push_batch
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, FakeClock, corrupt, make_device


def outbox_statuses(device: Device) -> dict[str, int]:
    conn = device.db()
    try:
        return dict(conn.execute("SELECT status, count(*) FROM sync_outbox GROUP BY status"))
    finally:
        conn.close()


def test_uploads_land_with_versions_and_one_change_each(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "Feature: Auth")
    first = store.add_message(conn, chat, "How should tokens expire?")
    store.add_message(conn, chat, "Short-lived.", role="assistant")
    report = alice.sync()
    assert (report.push.applied, report.push.batches) == (3, 1)
    assert server.execute("SELECT title, version, owner_id FROM acode_sync.chats").fetchall() == [
        ("Feature: Auth", 1, "acode_test_alice")
    ]
    assert server.execute("SELECT count(*) FROM acode_sync.messages").fetchone() == (2,)
    assert server.execute("SELECT count(*) FROM acode_sync.changes").fetchone() == (3,)

    store.rename_chat(conn, chat, "Auth v2")
    with write(conn):
        conn.execute(
            "UPDATE messages SET content = 'How long should tokens live?' WHERE id = ?", (first,)
        )
    alice.sync()
    assert server.execute("SELECT title, version FROM acode_sync.chats").fetchone() == (
        "Auth v2",
        2,
    )
    assert server.execute(
        "SELECT content, version FROM acode_sync.messages WHERE id = %s", (first,)
    ).fetchone() == ("How long should tokens live?", 2)
    assert server.execute("SELECT count(*) FROM acode_sync.changes").fetchone() == (5,)
    assert server.execute(
        "SELECT array_agg(seq ORDER BY seq) FROM acode_sync.changes"
    ).fetchone() == ([1, 2, 3, 4, 5],)
    assert outbox_statuses(alice) == {"Synced": 5}
    states = conn.execute(
        "SELECT sync_status, version FROM chats UNION ALL SELECT sync_status, version FROM messages"
    ).fetchall()
    assert sorted(map(tuple, states)) == [("Synced", 1), ("Synced", 2), ("Synced", 2)]
    conn.close()


def test_replayed_batch_is_answered_as_duplicates(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    for i in range(10):
        store.add_message(conn, chat, f"m{i}")
    sent = dict(conn.execute("SELECT seq, payload FROM sync_outbox").fetchall())
    alice.sync()
    with write(conn):  # as if every acknowledgement had been lost
        conn.executemany(
            "UPDATE sync_outbox SET status = 'Pending', synced_at = NULL, payload = ? "
            "WHERE seq = ?",
            [(payload, seq) for seq, payload in sent.items()],
        )
    report = alice.sync()
    assert (report.push.applied, report.push.duplicates) == (0, 11)
    assert server.execute("SELECT count(*) FROM acode_sync.changes").fetchone() == (11,)
    assert server.execute("SELECT count(*) FROM acode_sync.messages").fetchone() == (10,)
    assert server.execute("SELECT max(version) FROM acode_sync.messages").fetchone() == (1,)
    assert outbox_statuses(alice) == {"Synced": 11}
    conn.close()


def batches_on_server(server: psycopg.Connection[Any]) -> list[int]:
    rows = server.execute(
        "SELECT count(*) FROM acode_sync.changes GROUP BY batch_id ORDER BY min(seq)"
    ).fetchall()
    return [count for (count,) in rows]


def test_hundred_messages_at_batch_fifty_travel_as_two_batches(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    for i in range(100):
        store.add_message(conn, chat, f"message {i}")
    report = alice.sync()
    assert report.push.batches == 2
    assert server.execute(
        "SELECT count(DISTINCT batch_id) FROM acode_sync.changes WHERE entity_type = 'message'"
    ).fetchone() == (2,)
    assert batches_on_server(server) == [1, 50, 50]
    conn.close()


def test_byte_limit_splits_and_a_partial_batch_is_sent(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    alice.overrides["upload.batch_bytes_max"] = 2_000
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    for i in range(7):
        store.add_message(conn, chat, f"{i}" + "x" * 600)  # ~800 bytes of payload each
    store.add_message(conn, chat, "y" * 5_000)  # larger than the limit: travels alone
    report = alice.sync()
    assert batches_on_server(server)[1:] == [2, 2, 2, 1, 1]
    assert report.push.applied == 8
    conn.close()


def test_one_invalid_item_fails_alone_and_the_queue_moves_on(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    ids = [store.add_message(conn, chat, f"m{i}") for i in range(50)]
    corrupt(conn, ids[17], "role", "narrator")
    report = alice.sync()
    assert (report.push.applied, report.push.rejected) == (49, 1)
    failed = conn.execute(
        "SELECT entity_id, status, last_error, next_retry_at FROM sync_outbox "
        "WHERE status <> 'Synced'"
    ).fetchall()
    assert len(failed) == 1
    assert failed[0]["entity_id"] == ids[17]
    assert failed[0]["status"] == "Failed"
    assert failed[0]["last_error"].startswith("ACODE-SYNC-005: invalid payload")
    assert "narrator" in failed[0]["last_error"]
    assert failed[0]["next_retry_at"] is None
    later = store.add_message(conn, chat, "after the bad one")
    assert alice.sync().push.applied == 1  # the bad item does not block what follows
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE id = %s", (later,)
    ).fetchone() == (1,)
    conn.close()


def test_item_the_server_cannot_even_parse_is_isolated(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    ids = [store.add_message(conn, chat, f"m{i}") for i in range(6)]
    # Passes the server's checks but fails its cast: month 13.
    corrupt(conn, ids[3], "created_at", "2026-13-01T00:00:00.000Z")
    report = alice.sync()
    assert (report.push.applied, report.push.rejected) == (5, 1)
    assert server.execute("SELECT count(*) FROM acode_sync.messages").fetchone() == (5,)
    conn.close()


def test_offline_changes_nothing_and_says_acode_sync_001(alice: Device) -> None:
    conn = alice.db()
    store.new_chat(conn, "t")
    before = conn.execute("SELECT * FROM sync_outbox").fetchall()
    with pytest.raises(ConnectionFailed, match="ACODE-SYNC-001"):
        alice.sync(url="postgresql://acode_test_alice@127.0.0.1:1/nothing")
    after = conn.execute("SELECT * FROM sync_outbox").fetchall()
    assert [dict(r) for r in before] == [dict(r) for r in after]
    conn.close()


def test_privacy_is_rechecked_at_send_time(alice: Device, server: psycopg.Connection[Any]) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    message = store.add_message(conn, chat, "was public")
    other = store.new_chat(conn, "u")
    redacted = store.add_message(conn, other, "secret later")
    with write(conn):  # as if privacy had changed without a capture
        conn.execute("UPDATE sync_state SET applying = 1")
        conn.execute("UPDATE messages SET privacy = 'LOCAL_ONLY' WHERE id = ?", (message,))
        conn.execute("UPDATE messages SET privacy = 'REDACTED' WHERE id = ?", (redacted,))
        conn.execute("UPDATE sync_state SET applying = 0")
    report = alice.sync()
    assert report.push.withheld == 1
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE id = %s", (message,)
    ).fetchone() == (0,)
    assert server.execute(
        "SELECT content, privacy FROM acode_sync.messages WHERE id = %s", (redacted,)
    ).fetchone() == (None, "REDACTED")
    conn.close()


def test_two_owners_see_only_their_own_rows(tmp_path: Any, pg: PgDatabase) -> None:

    a = make_device(tmp_path, "a", pg.device_url("alice"))
    b = make_device(tmp_path, "b", pg.device_url("bob"))
    conn = a.db()
    store.add_message(conn, store.new_chat(conn, "alice's"), "alice's words")
    a.sync()
    keys = [r[0] for r in conn.execute("SELECT idempotency_key FROM sync_outbox")]
    with psycopg.connect(pg.device_url("bob")) as bob:
        for table in ("chats", "messages", "changes", "conflicts"):
            assert bob.execute(f"SELECT count(*) FROM acode_sync.{table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bob.execute("UPDATE acode_sync.owner_clock SET seq = 0")
    # Bob's device reusing Alice's keys is not answered "duplicate": keys are per owner.
    bconn = b.db()
    store.new_chat(bconn, "bob's")
    with write(bconn):
        bconn.execute("UPDATE sync_outbox SET idempotency_key = ?", (keys[0],))
    assert b.sync().push.applied == 1
    conn.close()
    bconn.close()


def test_commit_order_is_seq_order_for_one_owner(pg: PgDatabase) -> None:
    """T1 takes its seq first and commits last: nobody may see T2's seq before T1's.
    Against a plain sequence this fails: T2 would commit seq 2 while seq 1 is open."""
    url = pg.device_url("alice")
    t1 = psycopg.connect(url)
    t1.execute("INSERT INTO acode_sync.chats (id, title) VALUES ('c1', 'first')")
    done = threading.Event()

    def second() -> None:
        with psycopg.connect(url) as t2:
            t2.execute("INSERT INTO acode_sync.chats (id, title) VALUES ('c2', 'second')")
            t2.commit()
        done.set()

    worker = threading.Thread(target=second)
    worker.start()
    seen: list[list[int]] = []
    with psycopg.connect(url, autocommit=True) as reader:
        for _ in range(10):
            seen.append(
                [s for (s,) in reader.execute("SELECT seq FROM acode_sync.changes ORDER BY seq")]
            )
            time.sleep(0.05)
        assert not done.is_set()  # T2 waits for T1's counter lock
        t1.commit()
        worker.join(timeout=10)
        assert done.is_set()
        seen.append(
            [s for (s,) in reader.execute("SELECT seq FROM acode_sync.changes ORDER BY seq")]
        )
    t1.close()
    assert all(observed == [] for observed in seen[:-1])
    assert seen[-1] == [1, 2]


def test_direct_server_update_is_versioned_and_logged(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    server.execute(
        "UPDATE acode_sync.chats SET title = 'edited by an admin' WHERE id = %s", (chat,)
    )
    row = server.execute(
        "SELECT version, op, origin_device, idempotency_key FROM acode_sync.changes "
        "ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    assert row[:3] == (2, "upsert", "server")
    assert row[3].startswith("srv-")
    conn.close()


def test_a_remote_that_was_never_migrated_touches_no_item(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    store.new_chat(conn, "t")
    before = [dict(r) for r in conn.execute("SELECT * FROM sync_outbox")]
    server.execute("DROP SCHEMA acode_sync CASCADE")
    with pytest.raises(SetupError, match="ACODE-SYNC-002: the remote is not ready"):
        alice.sync()
    assert [dict(r) for r in conn.execute("SELECT * FROM sync_outbox")] == before
    conn.close()


def test_an_edit_made_while_its_batch_is_in_flight_is_rebased_not_a_conflict(
    alice: Device, server: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import acode_sync.upload as upload
    from acode_sync.remote import push_batch as real_push

    conn = alice.db()
    chat = store.new_chat(conn, "first title")

    def edit_during_flight(*args: Any) -> Any:
        writer = alice.db()  # another writer, while the batch is on the wire
        store.rename_chat(writer, chat, "renamed in flight")
        writer.close()
        return real_push(*args)

    monkeypatch.setattr(upload, "push_batch", edit_during_flight)
    report = alice.sync(max_batches=1)
    monkeypatch.setattr(upload, "push_batch", real_push)
    assert report.push.applied == 1
    pending = conn.execute("SELECT base_version FROM sync_outbox WHERE status = 'Pending'")
    assert [tuple(r) for r in pending] == [(1,)]  # rebased onto the acknowledged version
    report = alice.sync()
    assert (report.push.applied, report.push.conflicts) == (1, 0)
    assert server.execute("SELECT title, version FROM acode_sync.chats").fetchone() == (
        "renamed in flight",
        2,
    )
    assert server.execute("SELECT count(*) FROM acode_sync.conflicts").fetchone() == (0,)
    conn.close()


def test_a_push_ends_at_the_rows_it_found_while_another_writer_keeps_writing(
    tmp_path: Any, pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that adds a row during every round trip (an assistant's reply
    streamed into its message) would keep a push going for as long as it
    writes: the push takes what was queued when it began, the rest waits
    for the next cycle."""
    import acode_sync.upload as upload
    from acode_sync.remote import push_batch as real_push

    device = make_device(tmp_path, "busy", pg.device_url("alice"), **{"upload.batch_size": 2})
    conn = device.db()
    chat = store.new_chat(conn, "streamed")
    for i in range(5):
        store.add_message(conn, chat, f"before the push {i}")
    written: list[str] = []

    def write_during_flight(*args: Any) -> Any:
        if len(written) < 50:  # the old push chased them all
            writer = device.db()
            written.append(store.add_message(writer, chat, f"during the push {len(written)}"))
            writer.close()
        return real_push(*args)

    monkeypatch.setattr(upload, "push_batch", write_during_flight)
    report = device.sync()
    monkeypatch.setattr(upload, "push_batch", real_push)
    assert (report.push.sent, report.push.batches) == (6, 3)  # the chat and its 5 messages
    assert len(written) == 3  # one per round trip
    assert outbox_statuses(device) == {"Synced": 6, "Pending": 3}
    assert device.sync().push.sent == 3
    assert outbox_statuses(device) == {"Synced": 9}
    conn.close()


def test_server_clamps_change_times_from_the_future(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    store.new_chat(conn, "from a clock ahead")
    with write(conn):
        conn.execute("UPDATE sync_outbox SET changed_at = '2099-01-01T00:00:00.000Z'")
    alice.sync()
    row = server.execute(
        "SELECT changed_at <= now(), changed_at > now() - interval '1 minute' "
        "FROM acode_sync.changes"
    ).fetchone()
    assert row == (True, True)
    conn.close()


def test_server_never_writes_a_message_beside_its_chats_withdrawal(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    # Our client never sends this (the send-time privacy check withholds a
    # message of a LOCAL_ONLY chat); the server must hold without that help.
    conn = alice.db()
    chat = store.new_chat(conn, "private soon")
    alice.sync()
    stamp = "2026-01-01T00:00:00.000Z"
    message = {
        "id": "m-late",
        "chat_id": chat,
        "role": "user",
        "content": "must not reach the server",
        "privacy": "FULL",
        "created_at": stamp,
        "updated_at": stamp,
        "deleted_at": None,
    }
    items = [
        {"key": "k-withdraw", "entity_type": "chat", "entity_id": chat, "op": "withdraw",
         "base_version": 1, "changed_at": stamp, "payload": None},
        {"key": "k-message", "entity_type": "message", "entity_id": "m-late", "op": "upsert",
         "base_version": 0, "changed_at": stamp, "payload": message},
    ]  # fmt: skip
    with connect_remote(alice.url) as remote:
        results = push_batch(remote, "b-crafted", "crafted", json.dumps(items)).results
    assert [(r.key, r.outcome) for r in results] == [
        ("k-withdraw", "applied"),
        ("k-message", "conflict"),
    ]
    assert results[1].server_row is not None
    assert results[1].server_row["privacy"] == "LOCAL_ONLY"
    assert results[1].server_row["content"] is None
    assert server.execute("SELECT count(*) FROM acode_sync.messages").fetchone() == (0,)
    assert server.execute(
        "SELECT entity_id, server_version FROM acode_sync.conflicts"
    ).fetchall() == [("m-late", 0)]
    conn.close()


def test_retention_prunes_synced_history_but_never_open_items(alice: Device) -> None:

    conn = alice.db()
    chat = store.new_chat(conn, "t")
    store.add_message(conn, chat, "synced long ago")
    alice.sync()
    failing = store.add_message(conn, chat, "rejected, kept")
    corrupt(conn, failing, "role", "narrator")
    clock = FakeClock()  # eight days on, past the 7-day retention default
    clock.now = clock.now.replace(year=2027)
    alice.clock = clock
    alice.sync()
    left = conn.execute("SELECT entity_id, status FROM sync_outbox ORDER BY seq").fetchall()
    assert [tuple(r) for r in left] == [(failing, "Failed")]
    assert conn.execute("SELECT count(*) FROM sync_inbox").fetchone()[0] == 0
    conn.close()


def test_a_pull_page_is_an_ordered_index_scan_not_a_scan_of_the_log(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', 'x')",
            ((f"m{i:04d}", chat) for i in range(2_000)),
        )
    alice.overrides["upload.batch_size"] = 1000
    alice.sync()
    server.execute("ANALYZE acode_sync.changes")
    plans: list[str] = []
    server.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    server.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on"):
        server.execute(f"SET auto_explain.{setting}")
    server.execute("SET client_min_messages = log")
    server.execute("SET ROLE acode_test_alice")
    # Both forms: the one this client calls (with its device) and 0001's.
    for call in ("pull(1000, 100, 'some-device')", "pull(1000, 100)"):
        plans.clear()
        assert len(server.execute(f"SELECT * FROM acode_sync.{call}").fetchall()) == 100
        inner = [p for p in plans if "acode_sync.changes" in p and "LIMIT" in p.upper()]
        assert inner, (call, plans)
        assert "Index Scan using changes_pkey" in inner[0], (call, inner[0])
        assert "Seq Scan on changes" not in inner[0], call
        assert "Sort" not in inner[0], call
    server.execute("RESET ROLE")
    conn.close()


def test_a_pull_brings_back_no_payload_of_the_devices_own_changes(
    alice: Device, tmp_path: Any, pg: PgDatabase
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "mine")
    mine = store.add_message(conn, chat, "written here")
    alice.sync()
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    desktop.sync()
    dconn = desktop.db()
    theirs = store.add_message(dconn, chat, "written there")
    dconn.close()
    desktop.sync()
    alice.sync()
    inbox = {
        entity_id: (status, payload)
        for entity_id, status, payload in conn.execute(
            "SELECT entity_id, status, payload FROM sync_inbox"
        )
    }
    # Its own changes, at the versions the push's answer gave, are not stored at all.
    assert mine not in inbox
    assert chat not in inbox
    assert tuple(conn.execute("SELECT version FROM messages WHERE id = ?", (mine,)).fetchone()) == (
        1,
    )
    assert inbox[theirs][0] == "Applied"
    # Applied, it keeps of its payload only what recapture reads; messages has the rest.
    assert json.loads(inbox[theirs][1]) == {"privacy": "FULL"}
    assert conn.execute("SELECT content FROM messages WHERE id = ?", (theirs,)).fetchone()[0] == (
        "written there"
    )
    # Acknowledged outbox rows keep their key, entity and status, not their payload.
    assert tuple(
        conn.execute(
            "SELECT count(*), count(payload) FROM sync_outbox WHERE status = 'Synced'"
        ).fetchone()
    ) == (2, 0)
    conn.close()


def test_a_new_device_keeps_what_it_pulled_in_full_pages(
    alice: Device, tmp_path: Any, pg: PgDatabase
) -> None:
    """A pulled message's inbox row, once applied, is stored again holding only
    its privacy, not updated in place (which left it the whole payload, in
    pages split half full as applied_at grew it): the new device's file stays
    near the size of the messages it holds (it was 2.5 times that)."""
    conn = alice.db()
    chat = store.new_chat(conn, "long")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((store.new_id(), chat, f"{i} " + "words " * 130) for i in range(3000)),
        )
    conn.close()
    alice.sync()
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    assert desktop.sync().pull.applied == 3001

    dconn = desktop.db()
    kept = dconn.execute(
        "SELECT payload, count(*) FROM sync_inbox WHERE entity_type = 'message' GROUP BY payload"
    ).fetchall()
    assert [tuple(row) for row in kept] == [('{"privacy":"FULL"}', 3000)]
    copy = tmp_path / "data-only.db"
    dconn.execute("VACUUM INTO ?", (str(copy),))
    dconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dconn.close()
    data = sqlite3.connect(copy, isolation_level=None)
    for kind in ("trigger", "view", "table"):
        for (name,) in data.execute(
            "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%' "
            "AND name NOT IN ('chats', 'messages')",
            (kind,),
        ).fetchall():
            data.execute(f'DROP {kind.upper()} "{name}"')
    data.execute("VACUUM")
    data.close()
    assert desktop.workspace.db_path.stat().st_size <= 1.5 * copy.stat().st_size
