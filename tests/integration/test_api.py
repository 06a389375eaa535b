"""The embeddable engine, through the public API only (``acode_sync``'s names),
against the real PostgreSQL: a host writes on its own thread while the engine
syncs on its; stop, pause (from the API and from another process), events.

Nothing here asserts a duration: each test waits on a condition, with a
generous limit.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from acode_sync import (
    ConflictResolved,
    EntityStatusChanged,
    Event,
    HealthChanged,
    SyncConfig,
    SyncEngine,
    SyncTimeout,
    find_workspace,
    store,
)
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device, through
from tests.proxy import TcpProxy

WAIT = 120.0
FOLLOW = {
    "follow.enabled": True,
    "follow.local_check_seconds": 0.05,
    "follow.head_check_seconds": 0.2,
}
LAUNCH = "from acode_sync.cli import sync\nsync(prog_name='acode-sync')\n"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT:g}s waiting for {what}")
        time.sleep(0.05)


def engine_of(device: Device, *, url: str | None = None, **kwargs: Any) -> SyncEngine:
    config = device.config
    if url is not None:
        config = SyncConfig(**{**config.__dict__, "remote_url": url})
    return SyncEngine(find_workspace(str(device.workspace.root)), config, **kwargs)


def device(tmp_path: Path, pg: PgDatabase, name: str, **settings: Any) -> Device:
    return make_device(tmp_path, name, pg.device_url("alice"), **settings)


def count(server: psycopg.Connection[Any], table: str) -> int:
    row = server.execute(f"SELECT count(*) FROM acode_sync.{table}").fetchone()
    assert row is not None
    return int(row[0])


def local(dev: Device, sql: str) -> int:
    conn = dev.db()
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


OPEN = "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"


def test_a_host_writes_1000_messages_while_two_engines_sync(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    a = device(tmp_path, pg, "a", **FOLLOW)
    b = device(tmp_path, pg, "b", **FOLLOW)
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    with engine_of(a, on_event=seen_a.append), engine_of(b, on_event=seen_b.append):
        conn = a.db()
        chat = store.new_chat(conn, "host")
        ids = [store.add_message(conn, chat, f"message {i}") for i in range(1000)]
        conn.close()
        wait_until(lambda: count(server, "messages") == 1000, "A's messages on the server")
        wait_until(lambda: local(a, OPEN) == 0, "A's queue to drain")
        wait_until(lambda: local(b, "SELECT count(*) FROM messages") == 1000, "B to have them")
    # Once per change of state: each message went Pending -> Synced on A once,
    # and arrived on B once.
    on_a = Counter((e.entity_id, e.new) for e in seen_a if isinstance(e, EntityStatusChanged))
    assert all(on_a[(i, "Synced")] == 1 for i in ids)
    assert max(on_a.values()) == 1
    on_b = [e for e in seen_b if isinstance(e, EntityStatusChanged) and e.entity_type == "message"]
    assert sorted(e.entity_id for e in on_b) == sorted(ids)
    assert {e.old for e in on_b} == {None}
    for seen in (seen_a, seen_b):
        health = [e for e in seen if isinstance(e, HealthChanged)]
        assert health and health[0].old is None
        shapes = [(h.new.mode, h.new.healthy, h.new.paused) for h in health]
        assert all(x != y for x, y in itertools.pairwise(shapes))


def test_every_write_returns_while_a_push_waits_on_the_network(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any], proxy: TcpProxy
) -> None:
    a = device(tmp_path, pg, "a", **FOLLOW)
    stalled = threading.Event()

    def stalling(url: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
        if not stalled.is_set():  # the first cycle's push meets a stalled network
            stalled.set()
            proxy.hold()
        return conn

    conn = a.db()
    chat = store.new_chat(conn, "before the stall")
    engine = engine_of(a, url=through(proxy, a.url), connect=stalling)
    engine.start()
    try:
        assert stalled.wait(WAIT)
        written = [store.add_message(conn, chat, f"during {i}") for i in range(200)]
        # Every write above returned while the push was held on the network:
        assert proxy.is_held and count(server, "messages") == 0
        with pytest.raises(SyncTimeout):  # and the engine's cycle is still in it
            engine.sync_now(timeout=0.5)
        proxy.release()
        wait_until(lambda: count(server, "messages") == len(written), "the backlog to go up")
        wait_until(lambda: local(a, OPEN) == 0, "the queue to drain")
    finally:
        proxy.release()
        assert engine.stop(WAIT)
        conn.close()


def test_stop_mid_backlog_leaves_nothing_half_done_and_a_new_engine_continues(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    a = device(tmp_path, pg, "a", **{"upload.batch_size": 10})
    conn = a.db()
    chat = store.new_chat(conn, "backlog")
    for i in range(300):
        store.add_message(conn, chat, f"queued {i}")
    conn.close()
    first = engine_of(a)
    first.start()
    wait_until(lambda: count(server, "messages") >= 20, "a few batches to go up")
    assert first.stop(WAIT)  # the batch in flight finished; the thread is gone
    synced_here = local(a, "SELECT count(*) FROM messages WHERE sync_status = 'Synced'")
    assert synced_here == count(server, "messages") < 300  # nothing half-done
    statuses = local(
        a, "SELECT count(*) FROM sync_outbox WHERE status NOT IN ('Pending', 'Synced')"
    )
    assert statuses == 0
    with engine_of(a):
        wait_until(lambda: local(a, OPEN) == 0, "the new engine to finish the backlog")
    assert count(server, "messages") == 300


def test_pause_from_the_api_and_from_another_process_stops_movement(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    a = device(tmp_path, pg, "a", **FOLLOW)
    modes: list[str] = []

    def note(event: Event) -> None:
        if isinstance(event, HealthChanged):
            modes.append(event.new.mode)

    with engine_of(a, on_event=note) as engine:
        wait_until(lambda: modes[-1:] == ["online"], "the engine to be online")
        engine.pause()
        wait_until(lambda: modes[-1:] == ["paused"], "the engine to see the pause")
        conn = a.db()
        chat = store.new_chat(conn, "paused")
        store.add_message(conn, chat, "waits")
        report = engine.sync_now(timeout=WAIT)
        assert report.paused and count(server, "chats") == 0
        assert engine.status().mode == "paused"
        engine.resume()
        wait_until(lambda: count(server, "messages") == 1, "resume to push")

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-c", LAUNCH, "pause", "--workspace", str(a.workspace.root)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        store.add_message(conn, chat, "waits for the other process")
        report = engine.sync_now(timeout=WAIT)
        assert report.paused and count(server, "messages") == 1
        wait_until(lambda: modes[-1:] == ["paused"], "the engine to honour the CLI's pause")
        engine.resume()
        wait_until(lambda: count(server, "messages") == 2, "resume to push again")
        conn.close()
    into = [m for i, m in enumerate(modes) if m == "paused" and modes[i - 1 : i] != ["paused"]]
    assert len(into) == modes.count("paused") == 2  # once per pause, not once per cycle


def test_a_conflict_lost_by_this_device_is_told_once(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    a = device(tmp_path, pg, "a")
    b = device(tmp_path, pg, "b", **{"conflict.policy": "remote_wins"})
    conn_a, conn_b = a.db(), b.db()
    chat = store.new_chat(conn_a, "original")
    engine_of(a).sync_now(timeout=WAIT)
    engine_of(b).sync_now(timeout=WAIT)
    store.rename_chat(conn_a, chat, "renamed on a")
    store.rename_chat(conn_b, chat, "renamed on b")  # on version 1, like a's
    engine_of(a).sync_now(timeout=WAIT)  # a's reaches the server first
    seen: list[Event] = []
    with engine_of(b, on_event=seen.append) as engine:
        wait_until(lambda: any(isinstance(e, ConflictResolved) for e in seen), "the conflict")
        engine.sync_now(timeout=WAIT)  # more cycles: nothing is told twice
    (lost,) = [e for e in seen if isinstance(e, ConflictResolved)]
    assert (lost.entity_type, lost.entity_id, lost.policy) == ("chat", chat, "remote_wins")
    moves = [e for e in seen if isinstance(e, EntityStatusChanged) and e.entity_id == chat]
    assert [(e.old, e.new) for e in moves] == [("Pending", "Conflict")]
    conn_a.close()
    conn_b.close()
