"""Edges of the queue against the real PostgreSQL and a real TCP proxy: the
figures every command shows agree, a lost link never leaves the queue stalled
behind its backoff, and ``retry --force`` sends what is due."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from acode_sync import store
from acode_sync.cli import sync
from acode_sync.engine import connect_remote
from acode_sync.workspace import write
from tests.fix_sync import Device, corrupt, through
from tests.integration.test_faults import uploader
from tests.proxy import TcpProxy

FAR_FUTURE = "2999-01-01T00:00:00.000Z"


def cli(device: Device, *args: str, url: str) -> Result:
    return CliRunner().invoke(
        sync,
        [*args, "--workspace", str(device.workspace.root)],
        env={"ACODE_SYNC_REMOTE_URL": url},
    )


def server_messages(server: psycopg.Connection[Any]) -> int:
    row = server.execute("SELECT count(*) FROM acode_sync.messages").fetchone()
    assert row is not None
    return int(row[0])


def open_rows(conn: Any) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
        ).fetchone()[0]
    )


def fail_on_the_link(device: Device, proxy: TcpProxy, url: str) -> int:
    """Send the head of the queue through a link cut mid-batch: it waits out a
    backoff with the link's error (ACODE-SYNC-001). Returns how many failed."""
    mover = uploader(device)
    with connect_remote(url) as pg:
        proxy.cut_after_bytes(10)  # inside the first batch's query
        report = mover.push(pg, max_batches=1)
    proxy.restore()
    mover.conn.close()
    assert report.errors and report.errors[0].startswith("ACODE-SYNC-001")
    return report.failed


def outlast_the_test(conn: Any) -> None:
    """Make every backoff end far in the future: the test must not depend on
    how long it runs (a real backoff here is a second or two)."""
    with write(conn):
        conn.execute(
            "UPDATE sync_outbox SET next_retry_at = ? WHERE next_retry_at IS NOT NULL",
            (FAR_FUTURE,),
        )


def test_a_cycle_that_uploaded_and_then_lost_its_link_was_a_contact(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    for i in range(400):
        store.add_message(conn, chat, f"message {i} " + "x" * 200)
    url = through(proxy, alice.url)
    proxy.cut_after_bytes(90_000)  # a few batches of ~20 kB get through, then the cut
    report = alice.engine(url).sync_once()
    uploaded = server_messages(server)
    assert 0 < uploaded < 400, report
    assert report.push.failed > 0
    proxy.restore()

    status = cli(alice, "status", url=url)
    assert "Last Sync: never" not in status.output
    assert "Mode: Offline" in status.output
    check = cli(alice, "status", "--check", url=url)
    assert "never reached" not in check.output
    data = json.loads(cli(alice, "status", "--json", url=url).stdout)
    assert data["failed"] == 0
    assert data["waiting"] == report.push.failed
    assert data["pending"] + data["waiting"] == open_rows(conn)

    queue = cli(alice, "queue", url=url)
    assert "Waiting (retry " in queue.output  # "in Ns" or "due": the test takes time
    assert "  Failed " not in queue.output and " Failed  " not in queue.output
    assert "Waiting items will retry with backoff." in queue.output
    assert "Failed items" not in queue.output
    errors = cli(alice, "queue", "--errors", url=url)
    assert "No errors." not in errors.output
    assert "Remote unreachable since" in errors.output
    assert "ACODE-SYNC-001" in errors.output
    conn.close()


def test_status_queue_and_metrics_count_with_one_definition(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    rejected = store.add_message(conn, chat, "will be rejected")
    corrupt(conn, rejected, "role", "narrator")
    assert alice.sync().push.rejected == 1  # failed for good
    for i in range(3):
        store.add_message(conn, chat, f"link {i}")
    url = through(proxy, alice.url)
    assert fail_on_the_link(alice, proxy, url) == 3  # waiting
    outlast_the_test(conn)
    for i in range(2):
        store.add_message(conn, chat, f"pending {i}")  # pending

    data = json.loads(cli(alice, "status", "--json", url=url).stdout)
    assert (data["pending"], data["waiting"], data["failed"]) == (2, 3, 1)
    shown = Counter(
        item["status"]
        for item in json.loads(cli(alice, "queue", "--json", url=url).stdout)["items"]
    )
    assert shown == {"Pending": 2, "Waiting": 3, "Failed": 1}
    table = cli(alice, "queue", url=url).output
    assert "Pending Upload: 6 items (2 pending, 3 waiting, 1 failed)" in table
    rows = [line.split()[2] for line in table.splitlines() if "(msg)" in line]
    assert Counter(rows) == {"Pending": 2, "Waiting": 3, "Failed": 1}
    assert "Waiting items will retry with backoff." in table
    assert "Failed items will not retry by themselves" in table
    assert "Use 'acode sync retry' once the cause is fixed." in table
    text = cli(alice, "status", url=url).output
    assert "Queue: 2 pending, 3 waiting, 1 failed" in text
    assert "  Pending: 2\n  Waiting to retry: 3\n" in text
    assert "  Failed: 1" in text
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(cli(alice, "metrics", url=url).output)
        for sample in family.samples
    }
    depth = {
        state: metrics[("acode_sync_queue_depth", (("status", state),))]
        for state in ("pending", "waiting", "failed")
    }
    assert depth == {"pending": 2, "waiting": 3, "failed": 1}
    conn.close()


def test_once_sends_the_queue_behind_items_in_backoff_when_the_link_is_back(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()  # the chat is on the server; its messages depend on nothing waiting
    for i in range(50):
        store.add_message(conn, chat, f"before the cut {i} " + "x" * 200)
    url = through(proxy, alice.url)
    assert fail_on_the_link(alice, proxy, url) == 50
    outlast_the_test(conn)
    for i in range(800):
        store.add_message(conn, chat, f"after the cut {i}")
    assert open_rows(conn) == 850

    once = cli(alice, "once", url=url)  # the link is back (restored)
    assert once.exit_code == 0, once.output
    assert server_messages(server) == 850
    assert open_rows(conn) == 0
    # In seq order: the server's log carries the 50 older messages first
    # (released once the first batch of the cycle was answered, they went next).
    order = [
        content
        for (content,) in server.execute(
            "SELECT m.content FROM acode_sync.changes c JOIN acode_sync.messages m "
            "ON m.id = c.entity_id WHERE c.entity_type = 'message' ORDER BY c.seq"
        )
    ]
    assert order[:50] == [f"after the cut {i}" for i in range(50)]
    assert [c.split(" x")[0] for c in order[50:100]] == [f"before the cut {i}" for i in range(50)]
    conn.close()


def test_a_row_in_backoff_holds_back_its_entity_and_its_chat_s_messages_only(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    held = store.new_chat(conn, "held")
    store.add_message(conn, held, "held 1")
    with write(conn):  # the server struggled (not the link): backoff stands
        conn.execute(
            "UPDATE sync_outbox SET status = 'Failed', retry_count = 1, next_retry_at = ?, "
            "last_error = 'ACODE-SYNC-002: batch failed: serialization failure'",
            (FAR_FUTURE,),
        )
    store.add_message(conn, held, "held 2")  # depends on the chat still waiting
    free = store.new_chat(conn, "free")
    store.add_message(conn, free, "free 1")

    once = cli(alice, "once", url=alice.url)
    assert once.exit_code == 0, once.output
    titles = [t for (t,) in server.execute("SELECT title FROM acode_sync.chats")]
    assert titles == ["free"]
    contents = [c for (c,) in server.execute("SELECT content FROM acode_sync.messages")]
    assert contents == ["free 1"]
    queue = json.loads(cli(alice, "queue", "--json", url=alice.url).stdout)["items"]
    assert [(item["entity_type"], item["status"]) for item in queue] == [
        ("chat", "Waiting"),
        ("message", "Waiting"),
        ("message", "Pending"),
    ]
    conn.close()


def test_retry_force_with_only_pending_items_sends_them_a_line_each(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    first = store.add_message(conn, chat, "one")
    second = store.add_message(conn, chat, "two")
    result = cli(alice, "retry", "--force", url=alice.url)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "No failed items; sending 3 pending items...\n"
        f"  ✓ {chat}: synced\n"
        f"  ✓ {first}: synced\n"
        f"  ✓ {second}: synced\n"
    )
    assert server_messages(server) == 2
    assert open_rows(conn) == 0
    conn.close()


def test_retry_force_sends_failed_and_pending_items_together(
    alice: Device, proxy: TcpProxy, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    alice.sync()
    waiting = [store.add_message(conn, chat, f"w{i}") for i in range(2)]
    url = through(proxy, alice.url)
    assert fail_on_the_link(alice, proxy, url) == 2
    outlast_the_test(conn)
    pending = store.add_message(conn, chat, "p")
    result = cli(alice, "retry", "--force", url=url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Retrying 2 failed items and sending 1 pending item...",
        *(f"  ✓ {m}: synced" for m in (*waiting, pending)),
    ]
    assert server_messages(server) == 3
    conn.close()
