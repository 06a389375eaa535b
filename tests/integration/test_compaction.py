"""A bounded change log: ``acode-sync server compact`` (server migration 0005).

Compaction removes change-log rows superseded by a later change of the same
entity, keeps the keys of removed rows for a window (a resend is still a
duplicate), and every device converges afterwards: with a cursor from before
the compacted rows, from scratch, after its workspace was restored from an
old backup (its unsent writes kept), or with a cursor ahead of a restored server.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from acode_sync import store
from acode_sync.cli import sync
from acode_sync.compaction import compact_log
from acode_sync.errors import NeedsAdmin
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device

OWNER = "acode_test_alice"


def fill(server: psycopg.Connection[Any], rounds: int) -> None:
    """10 chats and 990 messages of alice, then ``rounds`` edits of each, on the
    server (direct writes are logged like any change): 1,000 x (rounds + 1)
    change-log rows. The last round edits the chats after the messages."""
    server.execute(
        "INSERT INTO acode_sync.chats (owner_id, id, title) "
        "SELECT %s, 'chat-' || g, 'chat ' || g FROM generate_series(1, 10) g",
        (OWNER,),
    )
    server.execute(
        "INSERT INTO acode_sync.messages (owner_id, id, chat_id, role, content) "
        "SELECT %s, 'msg-' || g, 'chat-' || (g %% 10 + 1), 'user', 'v0' "
        "FROM generate_series(1, 990) g",
        (OWNER,),
    )
    edit(server, rounds)


def edit(server: psycopg.Connection[Any], rounds: int) -> None:
    server.execute(
        """
        DO $$
        BEGIN
            FOR r IN 1..%s LOOP
                IF r < %s THEN
                    UPDATE acode_sync.chats SET title = 'chat ' || id || ' r' || r
                    WHERE owner_id = 'acode_test_alice';
                END IF;
                UPDATE acode_sync.messages SET content = 'v' || r
                WHERE owner_id = 'acode_test_alice';
                IF r = %s THEN
                    UPDATE acode_sync.chats SET title = 'chat ' || id || ' r' || r
                    WHERE owner_id = 'acode_test_alice';
                END IF;
            END LOOP;
        END $$
        """.replace("%s", str(int(rounds)))
    )


def log_rows(server: psycopg.Connection[Any]) -> int:
    row = server.execute(
        "SELECT count(*) FROM acode_sync.changes WHERE owner_id = %s", (OWNER,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def local_view(device: Device) -> dict[str, tuple[Any, ...]]:
    conn = device.db()
    try:
        view = {
            cid: (title, version)
            for cid, title, version in conn.execute(
                "SELECT id, title, version FROM chats WHERE privacy <> 'LOCAL_ONLY'"
            )
        }
        view.update(
            {
                mid: (chat, content, version)
                for mid, chat, content, version in conn.execute(
                    "SELECT id, chat_id, content, version FROM messages "
                    "WHERE privacy <> 'LOCAL_ONLY'"
                )
            }
        )
        return view
    finally:
        conn.close()


def server_view(server: psycopg.Connection[Any]) -> dict[str, tuple[Any, ...]]:
    view = {
        cid: (title, version)
        for cid, title, version in server.execute(
            "SELECT id, title, version FROM acode_sync.chats "
            "WHERE owner_id = %s AND privacy <> 'LOCAL_ONLY'",
            (OWNER,),
        )
    }
    view.update(
        {
            mid: (chat, content, version)
            for mid, chat, content, version in server.execute(
                "SELECT id, chat_id, content, version FROM acode_sync.messages "
                "WHERE owner_id = %s AND privacy <> 'LOCAL_ONLY'",
                (OWNER,),
            )
        }
    )
    return view


def settle(*devices: Device) -> None:
    for _ in range(2):
        for device in devices:
            report = device.sync()
            assert not report.incomplete, report


def test_a_long_log_compacts_to_one_row_per_entity_and_old_cursors_converge(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    early = make_device(tmp_path, "early", pg.device_url("alice"))
    fill(server, 0)
    early.sync()  # its cursor: the first 1,000 changes
    edit(server, 99)
    assert log_rows(server) == 100_000

    result = CliRunner().invoke(
        sync, ["server", "compact"], env={"ACODE_SYNC_REMOTE_URL": pg.url()}
    )
    assert result.exit_code == 0, result.output
    assert "removed" in result.output
    # The statistics were refreshed: the planner knows alice now.
    known = server.execute(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'acode_sync' "
        "AND tablename IN ('changes', 'chats', 'messages') AND attname = 'owner_id' "
        "AND %s = ANY (most_common_vals::text::text[])",
        (OWNER,),
    ).fetchone()
    assert known == (3,)
    # One row per entity, and the 10 chat rows that precede their messages' rows.
    assert 1_000 <= log_rows(server) <= 1_020
    assert "removed 98990 change-log rows" in result.output or log_rows(server) == 1_010

    fresh = make_device(tmp_path, "fresh", pg.device_url("alice"))
    settle(early, fresh)
    expected = server_view(server)
    assert len(expected) == 1_000
    assert local_view(early) == expected
    assert local_view(fresh) == expected
    # A second run finds nothing more to remove.
    again = compact_log(pg.url())
    assert sum(o.removed for o in again) == 0


def test_a_resend_of_a_batch_acknowledged_before_compaction_is_a_duplicate(
    alice: Device, server: psycopg.Connection[Any], pg: PgDatabase
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "first title")
    first, payload = conn.execute("SELECT seq, payload FROM sync_outbox").fetchone()
    assert alice.sync().push.applied == 1
    store.rename_chat(conn, chat, "second title")
    assert alice.sync().push.applied == 1
    done = compact_log(pg.url())
    assert sum(o.removed for o in done) == 1  # the first title's row
    assert log_rows(server) == 1

    # The first batch again, as after an acknowledgement lost on the way.
    with write(conn):
        conn.execute(
            "UPDATE sync_outbox SET status = 'Pending', payload = ? WHERE seq = ?",
            (payload, first),
        )
    report = alice.sync()
    assert report.push.duplicates == 1 and report.push.applied == 0
    assert report.push.conflicts == 0
    row = server.execute("SELECT title, version FROM acode_sync.chats").fetchone()
    assert row == ("second title", 2)
    assert log_rows(server) == 1
    assert conn.execute("SELECT title FROM chats").fetchone()[0] == "second title"
    conn.close()

    # Past the window the kept keys go.
    dropped = compact_log(pg.url(), keep_keys_days=0)
    assert sum(o.keys_dropped for o in dropped) == 1


def _copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included), as a backup tool makes."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_a_workspace_restored_from_an_old_backup_keeps_its_unsent_writes(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    conn = laptop.db()
    chat = store.new_chat(conn, "plans")
    laptop.sync()
    unsent = store.add_message(conn, chat, "written before the backup")
    conn.close()
    backup = tmp_path / "backup.db"
    _copy(laptop.workspace.db_path, backup)

    # Life goes on after the backup: the message goes, is edited, more is written.
    conn = laptop.db()
    laptop.sync()
    with write(conn):
        conn.execute("UPDATE messages SET content = 'edited after' WHERE id = ?", (unsent,))
    store.rename_chat(conn, chat, "plans, renamed after")
    later = store.add_message(conn, chat, "written after the backup")
    conn.close()
    laptop.sync()
    dconn = desktop.db()
    desktop.sync()
    store.add_message(dconn, chat, "from the desktop")
    dconn.close()
    desktop.sync()
    compact_log(pg.url())  # the first version of `unsent` leaves the log

    # The disk is lost; the backup comes back, and the user writes at once.
    _copy(backup, laptop.workspace.db_path)
    conn = laptop.db()
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    new = store.add_message(conn, chat, "written after the restore")
    conn.close()

    settle(laptop, desktop)
    expected = server_view(server)
    assert expected[new][1] == "written after the restore"
    assert expected[unsent][1] == "edited after"  # the resend was a duplicate
    assert expected[later][1] == "written after the backup"
    assert local_view(laptop) == expected
    assert local_view(desktop) == expected
    keys = server.execute(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM acode_sync.changes"
    ).fetchone()
    assert keys is not None and keys[0] == keys[1]


def test_a_cursor_ahead_of_a_restored_server_starts_over(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    conn = laptop.db()
    chat = store.new_chat(conn, "before")
    settle(laptop, desktop)
    # The server was restored to before changes this device had pulled: its
    # cursor counts a log that is gone.
    with write(conn):
        conn.execute("UPDATE sync_state SET pull_cursor = pull_cursor + 500")
    pending = store.add_message(conn, chat, "not sent yet")
    conn.close()
    dconn = desktop.db()
    store.rename_chat(dconn, chat, "renamed on the desktop")
    dconn.close()
    settle(desktop, laptop)
    expected = server_view(server)
    assert expected[chat][0] == "renamed on the desktop"
    assert expected[pending][1] == "not sent yet"
    assert local_view(laptop) == expected
    conn = laptop.db()
    cursor = conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0]
    conn.close()
    assert cursor <= log_rows(server) + 10


def test_compact_needs_an_admin_role(pg: PgDatabase) -> None:
    with pytest.raises(NeedsAdmin):
        compact_log(pg.device_url("alice"))
    result = CliRunner().invoke(
        sync, ["server", "compact"], env={"ACODE_SYNC_REMOTE_URL": pg.device_url("alice")}
    )
    assert result.exit_code == 2
    assert "needs an admin role" in result.output
