"""The acknowledgement of pushed rows (``outbox.acknowledge``): what it leaves
in the outbox and the entities, the queue tally, and the file's pages."""

from __future__ import annotations

import sqlite3

from acode_sync import outbox
from acode_sync.workspace import write
from tests.integration.test_queue_tally import check

NOW = "2026-12-07T12:00:00.000Z"


def open_rows(conn: sqlite3.Connection, entity_id: str) -> list[tuple[int, int, str]]:
    return [
        (int(seq), int(base), status)
        for seq, base, status in conn.execute(
            "SELECT seq, base_version, status FROM sync_outbox WHERE entity_id = ? ORDER BY seq",
            (entity_id,),
        )
    ]


def acked(conn: sqlite3.Connection, seqs: list[int]) -> list[tuple[int, str, str, int, int]]:
    """The rows as the server would acknowledge them: one version up."""
    marks = ",".join("?" * len(seqs))
    return [
        (int(seq), kind, entity_id, int(base), int(base) + 1)
        for seq, kind, entity_id, base in conn.execute(
            "SELECT seq, entity_type, entity_id, base_version FROM sync_outbox "
            f"WHERE seq IN ({marks}) ORDER BY seq",
            seqs,
        )
    ]


def test_acknowledged_rows_are_synced_and_their_entities_take_the_version(
    bare_db: sqlite3.Connection,
) -> None:
    conn = bare_db
    with write(conn):
        conn.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        for i in range(6):
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content) VALUES (?, 'c', 'user', 'x')",
                (f"m{i}",),
            )
    outbox.fold(conn, at_least=0)  # every row at or below the tally's mark
    first = [seq for (seq,) in conn.execute("SELECT seq FROM sync_outbox ORDER BY seq")]
    # Alone in the queue: no row of these entities is left open.
    with write(conn):
        outbox.acknowledge(conn, acked(conn, first[:3]), NOW)
    check(conn)
    assert [s for _, _, s in open_rows(conn, "c")] == ["Synced"]
    assert tuple(conn.execute("SELECT version, sync_status FROM chats").fetchone()) == (
        1,
        "Synced",
    )
    row = conn.execute("SELECT payload, synced_at FROM sync_outbox WHERE seq = ?", (first[1],))
    assert tuple(row.fetchone()) == (None, NOW)
    # m3 edited twice while pending: its newest row acknowledged supersedes
    # the older one. m4's first row acknowledged while an edit waits: the
    # edit is rebased onto the new version and the message stays Pending.
    m4_first = first[5]
    with write(conn):
        conn.execute("UPDATE messages SET content = 'y' WHERE id IN ('m3', 'm4')")
    newest_m3 = open_rows(conn, "m3")[-1][0]
    with write(conn):
        outbox.acknowledge(conn, acked(conn, [first[3], newest_m3, m4_first]), NOW)
    check(conn)
    assert [s for _, _, s in open_rows(conn, "m3")] == ["Superseded", "Synced"]
    (synced, edit) = open_rows(conn, "m4")
    assert synced == (m4_first, 0, "Synced")
    assert edit[0] > m4_first and edit[1:] == (1, "Pending")
    states = dict(conn.execute("SELECT id, sync_status || ':' || version FROM messages"))
    assert states == {
        "m0": "Synced:1",
        "m1": "Synced:1",
        "m2": "Synced:1",
        "m3": "Synced:1",
        "m4": "Pending:1",
        "m5": "Pending:0",
    }


def test_the_acknowledgement_keeps_the_queue_tally_whatever_the_build_default(
    bare_db: sqlite3.Connection,
) -> None:
    """The acknowledgement replaces rows; the tally follows only through its
    delete trigger, which a REPLACE fires only with recursive_triggers on:
    the connection sets it, whatever SQLite was built with."""
    conn = bare_db
    assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == 1
    with write(conn):
        conn.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, 'c', 'user', 'x')",
            ((f"m{i}",) for i in range(40)),
        )
    outbox.fold(conn, at_least=0)
    seqs = [seq for (seq,) in conn.execute("SELECT seq FROM sync_outbox ORDER BY seq")]
    with write(conn):
        outbox.acknowledge(conn, acked(conn, seqs[:20]), NOW)
    check(conn)
    assert outbox.counts(conn).pending == 21


def test_acknowledged_rows_give_their_payload_pages_back(bare_db: sqlite3.Connection) -> None:
    """A payload dropped by a shrinking UPDATE would leave its page as sparse
    as before; acknowledged rows must leave their payloads' pages free."""
    conn = bare_db
    with write(conn):
        conn.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, 'c', 'user', ?)",
            ((f"m{i:04d}", "x" * 1500) for i in range(1000)),
        )
    (before,) = conn.execute("PRAGMA freelist_count").fetchone()
    seqs = [seq for (seq,) in conn.execute("SELECT seq FROM sync_outbox ORDER BY seq")]
    for start in range(0, len(seqs), 250):
        with write(conn):
            outbox.acknowledge(conn, acked(conn, seqs[start : start + 250]), NOW)
    (after,) = conn.execute("PRAGMA freelist_count").fetchone()
    # 1,000 payloads of ~1.6 KB: about 400 pages (4 KiB) of the outbox.
    assert after - before > 300
    assert conn.execute("SELECT count(*) FROM sync_outbox WHERE payload IS NULL").fetchone()[0] == (
        1001
    )


def test_the_connections_secure_delete_is_back_after_the_acknowledgement(
    bare_db: sqlite3.Connection,
) -> None:
    """FAST is for the acknowledgement's own deletes; a later delete (a message
    withdrawn by another device) keeps the connection's setting."""
    conn = bare_db
    conn.execute("PRAGMA secure_delete = ON")
    with write(conn):
        conn.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
    seqs = [seq for (seq,) in conn.execute("SELECT seq FROM sync_outbox")]
    with write(conn):
        outbox.acknowledge(conn, acked(conn, seqs), NOW)
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
