"""The link fails under the batch mover: a real TCP proxy cuts real connections."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from acode_sync import store
from acode_sync.clock import iso
from acode_sync.engine import connect_remote
from acode_sync.upload import Uploader
from tests.fix_sync import Device, FakeClock, through
from tests.proxy import TcpProxy


def server_counts(server: psycopg.Connection[Any]) -> tuple[int, int]:
    row = server.execute(
        "SELECT (SELECT count(*) FROM acode_sync.messages), "
        "(SELECT count(*) FROM acode_sync.changes)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def uploader(device: Device, clock: Any = None, rand: Any = None) -> Uploader:
    config = device.config
    return Uploader(
        device.db(),
        config,
        config.device_id or "",
        clock=clock or FakeClock(),
        rand=rand or (lambda: 0.5),
    )


def test_cut_mid_batch_loses_nothing_and_duplicates_nothing(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    for i in range(50):
        store.add_message(conn, chat, f"message {i} " + "x" * 200)
    url = through(proxy, alice.url)
    mover = uploader(alice)
    with connect_remote(url) as pg:
        proxy.cut_after_bytes(3_000)  # the batch is ~20 kB: cut inside it
        report = mover.push(pg)
    assert report.failed == 50  # the first batch (batch_size 50) was on the wire
    assert report.errors and report.errors[0].startswith("ACODE-SYNC-001")
    assert server_counts(server) == (0, 0)  # the server transaction never committed
    failed = conn.execute(
        "SELECT count(*), min(retry_count), max(retry_count) FROM sync_outbox "
        "WHERE status = 'Failed' AND next_retry_at IS NOT NULL"
    ).fetchone()
    assert tuple(failed) == (50, 1, 1)

    proxy.restore()
    with connect_remote(url) as pg:
        report = mover.push(pg, ignore_backoff=True)
    assert report.applied == 51
    assert server_counts(server) == (50, 51)
    assert [tuple(r) for r in conn.execute("SELECT DISTINCT status FROM sync_outbox")] == [
        ("Synced",)
    ]
    conn.close()


def test_lost_acknowledgement_then_resend_leaves_exactly_one_change(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    for i in range(20):
        store.add_message(conn, chat, f"message {i}")
    url = through(proxy, alice.url)
    mover = uploader(alice)
    with connect_remote(url) as pg:
        pg.execute("SELECT 1")
        proxy.lose_replies(then_cut_after=0.5)
        report = mover.push(pg)
    assert report.failed == 21  # the client never heard back ...
    assert server_counts(server) == (20, 21)  # ... but the server had committed

    proxy.restore()
    with connect_remote(url) as pg:
        report = mover.push(pg, ignore_backoff=True)
    assert (report.applied, report.duplicates) == (0, 21)
    assert server_counts(server) == (20, 21)  # exactly one change per write
    states = conn.execute("SELECT DISTINCT sync_status FROM messages").fetchall()
    assert [tuple(s) for s in states] == [("Synced",)]
    conn.close()


def test_an_edit_after_a_lost_acknowledgement_is_no_conflict_with_itself(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "first title")
    alice.sync()
    store.rename_chat(conn, chat, "second title")
    url = through(proxy, alice.url)
    mover = uploader(alice)
    with connect_remote(url) as pg:
        pg.execute("SELECT 1")
        proxy.lose_replies(then_cut_after=0.5)
        assert mover.push(pg).failed == 1  # applied on the server, never acknowledged
    proxy.restore()
    # Edited again before the resend: the newest row stands for both and goes
    # out on the version the device knows, which its own lost write moved.
    store.rename_chat(conn, chat, "third title")
    with connect_remote(url) as pg:
        report = mover.push(pg, ignore_backoff=True)
    assert (report.applied, report.conflicts) == (1, 0)
    assert server.execute("SELECT title, version FROM acode_sync.chats").fetchone() == (
        "third title",
        3,
    )
    assert conn.execute("SELECT count(*) FROM sync_conflicts").fetchone()[0] == 0
    conn.close()


def test_backoff_schedule_and_max_attempts(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    store.new_chat(conn, "t")
    clock = FakeClock()
    start = clock.now
    mover = uploader(alice, clock=clock, rand=lambda: 0.5)  # full jitter at its midpoint
    url = through(proxy, alice.url)

    def attempt() -> Any:
        proxy.restore()
        with connect_remote(url) as pg:
            proxy.cut_after_bytes(10)
            return mover.push(pg)

    def state() -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT status, retry_count, next_retry_at, last_error FROM sync_outbox"
        ).fetchone()
        return tuple(row)

    expected_waits = [0.5, 1.0, 2.0, 4.0]  # 0.5 * min(300, 1 * 2**n)
    for count, wait in enumerate(expected_waits, start=1):
        assert attempt().failed == 1
        status, retries, next_at, error = state()
        assert (status, retries) == ("Failed", count)
        assert next_at == iso(clock.now + timedelta(seconds=wait))
        assert error.startswith("ACODE-SYNC-001")
        clock.advance(wait - 0.001)
        proxy.restore()
        with connect_remote(url) as pg:  # not due yet: nothing is sent
            assert mover.push(pg).batches == 0
        clock.advance(0.001)
    assert attempt().failed == 1  # the fifth failure: max_attempts reached
    status, retries, next_at, error = state()
    assert (status, retries, next_at) == ("Failed", 5, None)
    assert error.startswith("ACODE-SYNC-004: max retries exceeded")
    clock.advance(10_000)
    proxy.restore()
    with connect_remote(url) as pg:  # only `retry` re-queues it now
        assert mover.push(pg).batches == 0
    assert server_counts(server) == (0, 0)
    assert clock.now > start
    conn.close()
