"""Restart the server and kill the engine: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from acode_sync import devserver, store
from acode_sync.errors import ConnectionFailed
from acode_sync.migrations import migrate_remote
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device


@pytest.fixture
def private_server() -> Iterator[tuple[Path, str]]:
    """A private cluster this test may stop and start: (its directory, device URL)."""
    directory = Path(tempfile.mkdtemp(prefix="acode-restart-"))
    try:
        admin = devserver.start(directory)
        params = conninfo_to_dict(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE acode")
        params["dbname"] = "acode"
        migrate_remote(make_conninfo("", **params))
        with psycopg.connect(make_conninfo("", **params), autocommit=True) as conn:
            conn.execute("CREATE ROLE acode_restart_alice LOGIN")
            conn.execute("GRANT acode_sync_device TO acode_restart_alice")
        params["user"] = "acode_restart_alice"
        yield directory, make_conninfo("", **params)
    finally:
        devserver.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_server_restart_loses_nothing(tmp_path: Path, private_server: tuple[Path, str]) -> None:
    directory, url = private_server
    device = make_device(tmp_path, "laptop", url)
    conn = device.db()
    chat = store.new_chat(conn, "before the restart")
    device.sync()
    devserver.stop(directory)
    store.add_message(conn, chat, "written while the server is down")
    before = [dict(r) for r in conn.execute("SELECT * FROM sync_outbox WHERE status = 'Pending'")]
    with pytest.raises(ConnectionFailed, match="ACODE-SYNC-001"):
        device.sync()
    after = [dict(r) for r in conn.execute("SELECT * FROM sync_outbox WHERE status = 'Pending'")]
    assert after == before  # offline touches nothing
    devserver.start(directory)
    assert device.sync().push.applied == 1
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT count(*) FROM acode_sync.changes").fetchone() == (2,)
    conn.close()


def server_counts(pg: PgDatabase) -> tuple[int, int]:
    with pg.admin() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM acode_sync.messages), "
            "(SELECT count(*) FROM acode_sync.changes)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_killed_engine_resumes_without_loss_or_duplicates(tmp_path: Path, pg: PgDatabase) -> None:
    device: Device = make_device(tmp_path, "laptop", pg.device_url("alice"))
    conn = device.db()
    chat = store.new_chat(conn, "big backlog")
    total = 3_000
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((f"m{i:05d}", chat, f"message {i}") for i in range(total)),
        )
    env: dict[str, Any] = {**os.environ, "ACODE_SYNC_REMOTE_URL": device.url}
    run = subprocess.Popen(
        [sys.executable, "-m", "acode_sync", "run", "--workspace", str(device.workspace.root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while server_counts(pg)[0] < total // 4:  # let it get well into the backlog
            assert time.monotonic() < deadline, "the engine did not start uploading"
            assert run.poll() is None, "the engine exited"
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)  # no chance to finish the batch or mark it
    finally:
        run.wait(timeout=10)
    assert server_counts(pg)[0] < total  # killed mid-drain
    once = subprocess.run(
        [sys.executable, "-m", "acode_sync", "now", "--workspace", str(device.workspace.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    assert server_counts(pg) == (total, total + 1)  # one change per write, no more
    statuses = conn.execute("SELECT DISTINCT status FROM sync_outbox").fetchall()
    assert [tuple(s) for s in statuses] == [("Synced",)]
    conn.close()
