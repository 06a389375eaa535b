"""A push whose transaction logged nothing but its own items' changes, right
after the pull cursor, moves the cursor past them (``pull_past_own_push``):
the pull that follows does not fetch them back. Anything else in the push's
span of the change log (another device's commit, the messages a chat's
withdrawal took with it, a batch split into several transactions) is left to
the pull."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from acode_sync import store
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device


def _cursor(device: Device) -> int:
    conn = device.db()
    try:
        return int(conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0])
    finally:
        conn.close()


def _head(server: psycopg.Connection[Any]) -> int:
    """The newest seq of the change log (one owner here)."""
    row = server.execute("SELECT max(seq) FROM acode_sync.changes").fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def _versions(device: Device, server: psycopg.Connection[Any]) -> tuple[Any, Any]:
    conn = device.db()
    try:
        local = sorted(tuple(row) for row in conn.execute("SELECT id, version FROM messages"))
    finally:
        conn.close()
    remote = sorted(server.execute("SELECT id, version FROM acode_sync.messages").fetchall())
    return local, remote


def test_a_caught_up_device_fetches_none_of_its_own_batches_back(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"), **{"upload.batch_size": 2})
    conn = laptop.db()
    chat = store.new_chat(conn, "mine")
    for n in range(5):
        store.add_message(conn, chat, f"message {n}")
    conn.close()
    report = laptop.sync()
    assert report.push.batches == 3 and report.push.applied == 6
    assert report.pull.received == 0  # was 6: each fetched, then skipped as known
    assert _cursor(laptop) == _head(server)
    local, remote = _versions(laptop, server)
    assert local == remote and all(version == 1 for _id, version in local)
    conn = laptop.db()
    assert conn.execute("SELECT count(*) FROM sync_inbox").fetchone()[0] == 0
    conn.close()


def test_another_devices_change_before_the_push_is_pulled_with_the_push(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    conn = laptop.db()
    chat = store.new_chat(conn, "shared")
    laptop.sync()
    desktop.sync()
    dconn = desktop.db()
    theirs = store.add_message(dconn, chat, "from the desktop")
    dconn.close()
    desktop.sync()
    store.add_message(conn, chat, "from the laptop")
    conn.close()
    report = laptop.sync()
    # The desktop's change lies between the cursor and the push: both come.
    assert report.pull.received == 2
    assert _cursor(laptop) == _head(server)
    conn = laptop.db()
    assert conn.execute("SELECT content FROM messages WHERE id = ?", (theirs,)).fetchone()[0] == (
        "from the desktop"
    )
    conn.close()


def test_the_messages_a_chats_withdrawal_takes_along_are_pulled_as_versions(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    conn = laptop.db()
    chat = store.new_chat(conn, "soon private")
    for n in range(3):
        store.add_message(conn, chat, f"message {n}")
    laptop.sync()
    store.set_privacy(conn, chat, "LOCAL_ONLY")
    conn.close()
    report = laptop.sync()
    assert report.push.applied == 1  # the chat's withdrawal; the server withdrew its messages
    # Its span held four changes for one written item: the cursor was left for
    # the pull, which took the messages' new versions as this device's own.
    assert report.pull.received == 4
    local, remote = _versions(laptop, server)
    assert local == remote and all(version == 2 for _id, version in remote)
    assert _cursor(laptop) == _head(server)
