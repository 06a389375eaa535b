"""A writer in another process (as the coding CLI writes: Python sqlite3, a
5 s busy timeout, one insert per transaction) while the sync pulls thousands
of changes into the same workspace file in paced slices (contended: full
gaps, and the WAL checkpointed on a thread beside the slices): neither
waits out the busy timeout, and nothing either wrote is lost or left
uncaptured."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from acode_sync import store
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device

ROWS = 3000

WRITER = r"""
import pathlib, sqlite3, sys, time
db, chat, stop, ready = sys.argv[1:5]
conn = sqlite3.connect(db, timeout=5, isolation_level=None)
written = errors = 0
while not pathlib.Path(stop).exists():
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO messages (id, chat_id, role, content) "
            "VALUES ((SELECT key FROM sync_new_key), ?, 'user', ?)",
            (chat, f"written beside the sync {written}"),
        )
        conn.execute("COMMIT")
        written += 1
    except sqlite3.OperationalError as exc:
        errors += 1
        print(exc, file=sys.stderr)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    if written == 5:
        pathlib.Path(ready).touch()
    time.sleep(0.002)
print(written, errors)
"""


CHECKPOINT_THREAD = "acode-sync-checkpoint"


@contextmanager
def watching_threads() -> Iterator[set[str]]:
    """The names of this process's threads, sampled every millisecond meanwhile."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.001):
            seen.update(t.name for t in threading.enumerate())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def count(device: Device, sql: str, *args: object) -> int:
    conn = device.db()
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def test_a_writer_beside_a_big_pull_loses_nothing_and_waits_for_no_timeout(
    tmp_path: Path, pg: PgDatabase
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    conn = laptop.db()
    remote_chat = store.new_chat(conn, "written on the laptop")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((store.new_id(), remote_chat, f"message {i} " + "x" * 400) for i in range(ROWS)),
        )
    conn.close()
    assert laptop.sync().push.sent == ROWS + 1

    conn = desktop.db()
    local_chat = store.new_chat(conn, "written on the desktop")
    conn.close()
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    db = desktop.workspace.db_path
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), local_chat, str(stop), str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert writer.poll() is None and time.monotonic() < deadline, writer.stderr
            time.sleep(0.01)
        with watching_threads() as seen:
            report = desktop.sync()
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=30)
    written, errors = map(int, out.split())
    # The contended path ran (the checkpoint thread was seen), and ended with the sync.
    assert CHECKPOINT_THREAD in seen
    assert CHECKPOINT_THREAD not in {t.name for t in threading.enumerate()}

    assert (errors, err) == (0, "")
    assert written >= 5
    assert report.pull.applied == ROWS + 1
    assert count(desktop, "SELECT count(*) FROM messages WHERE chat_id = ?", remote_chat) == (ROWS)
    # Every message the writer committed is there and captured: the pull's
    # echo guard (sync_state.applying) never showed in the writer's transactions.
    assert count(desktop, "SELECT count(*) FROM messages WHERE chat_id = ?", local_chat) == written
    assert (
        count(
            desktop,
            "SELECT count(*) FROM messages m WHERE m.chat_id = ? AND EXISTS "
            "(SELECT 1 FROM sync_outbox o WHERE o.entity_id = m.id)",
            local_chat,
        )
        == written
    )
    conn = desktop.db()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    desktop.sync()
    laptop.sync()
    assert count(laptop, "SELECT count(*) FROM messages WHERE chat_id = ?", local_chat) == written
    assert count(laptop, "SELECT count(*) FROM messages") == ROWS + written
