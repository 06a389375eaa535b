"""Two workspaces of one owner against the real PostgreSQL: the full round trip."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from acode_sync import store
from acode_sync.download import Puller
from acode_sync.upload import Uploader
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device


@pytest.fixture
def laptop(tmp_path: Path, pg: PgDatabase) -> Device:
    return make_device(tmp_path, "laptop", pg.device_url("alice"))


@pytest.fixture
def desktop(tmp_path: Path, pg: PgDatabase) -> Device:
    return make_device(tmp_path, "desktop", pg.device_url("alice"))


def rows(device: Device, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = device.db()
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def title(device: Device, chat_id: str) -> str:
    return str(rows(device, "SELECT title FROM chats WHERE id = ?", chat_id)[0][0])


def test_data_made_on_one_device_appears_on_the_other(laptop: Device, desktop: Device) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "Feature: Auth")
    store.add_message(conn, chat, "How should tokens expire?")
    store.add_message(conn, chat, "Short-lived access tokens.", role="assistant")
    secret = store.new_chat(conn, "scratch", privacy="LOCAL_ONLY")
    store.add_message(conn, secret, "never leaves the laptop")
    hidden = store.new_chat(conn, "redacted chat", privacy="REDACTED")
    store.add_message(conn, hidden, "content stays home")
    conn.close()
    laptop.sync()
    report = desktop.sync()
    assert report.pull.applied == 5
    assert rows(
        desktop, "SELECT title, privacy, sync_status, version FROM chats ORDER BY title"
    ) == [
        ("Feature: Auth", "FULL", "Synced", 1),
        ("redacted chat", "REDACTED", "Synced", 1),
    ]
    assert rows(
        desktop, "SELECT content, role FROM messages WHERE chat_id = ? ORDER BY created_at", chat
    ) == [("How should tokens expire?", "user"), ("Short-lived access tokens.", "assistant")]
    assert rows(desktop, "SELECT content, privacy FROM messages WHERE chat_id = ?", hidden) == [
        ("", "REDACTED")
    ]
    assert rows(desktop, "SELECT count(*) FROM chats WHERE id = ?", secret) == [(0,)]
    assert rows(desktop, "SELECT count(*) FROM sync_outbox") == [(0,)]  # applies do not echo

    back = desktop.db()
    reply = store.add_message(back, chat, "Written on the desktop")
    back.close()
    desktop.sync()
    assert laptop.sync().pull.applied == 1
    assert rows(laptop, "SELECT content FROM messages WHERE id = ?", reply) == [
        ("Written on the desktop",)
    ]
    # Own changes come back through the log and are recognised, not re-applied
    # nor stored: the push's answer already gave their versions.
    assert laptop.sync().pull.applied == 0
    assert rows(
        laptop, "SELECT count(*) FROM sync_inbox WHERE origin_device = ?", laptop.config.device_id
    ) == [(0,)]


def test_making_a_synced_chat_local_only_withdraws_it_everywhere(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "oops, private")
    store.add_message(conn, chat, "sensitive")
    laptop.sync()
    desktop.sync()
    assert rows(desktop, "SELECT count(*) FROM messages") == [(1,)]
    store.set_privacy(conn, chat, "LOCAL_ONLY")
    conn.close()
    laptop.sync()
    desktop.sync()
    assert rows(desktop, "SELECT count(*) FROM chats") == [(0,)]
    assert rows(desktop, "SELECT count(*) FROM messages") == [(0,)]
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE content IS NOT NULL"
    ).fetchone() == (0,)
    assert server.execute("SELECT title, privacy FROM acode_sync.chats").fetchone() == (
        "",
        "LOCAL_ONLY",
    )
    assert rows(laptop, "SELECT title FROM chats") == [("oops, private",)]  # still at home


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("last_write_wins", "desktop"), ("remote_wins", "laptop"), ("local_wins", "desktop")],
)
def test_concurrent_renames_resolve_by_policy_everywhere(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any], policy: str, winner: str
) -> None:
    for device in (laptop, desktop):
        device.overrides["conflict.policy"] = policy
    conn = laptop.db()
    chat = store.new_chat(conn, "original")
    laptop.sync()
    desktop.sync()
    store.rename_chat(conn, chat, "renamed on laptop")
    time.sleep(0.01)
    other = desktop.db()
    store.rename_chat(other, chat, "renamed on desktop")
    laptop.sync()  # the laptop's rename reaches the server first (version 2)
    report = desktop.sync()  # the desktop's was made on version 1: a conflict
    assert report.push.conflicts == 1
    laptop.sync()
    desktop.sync()
    expected = f"renamed on {winner}"
    loser = "renamed on laptop" if winner == "desktop" else "renamed on desktop"
    assert title(laptop, chat) == expected
    assert title(desktop, chat) == expected
    assert server.execute("SELECT title FROM acode_sync.chats").fetchone() == (expected,)

    # The loser is kept in all three places.
    kept = rows(
        desktop,
        "SELECT winner, local_payload, remote_payload, preserved_path, "
        "detected_by, policy FROM sync_conflicts",
    )
    assert len(kept) == 1
    side_won, local_payload, remote_payload, path, detected_by, used = kept[0]
    assert (detected_by, used) == ("push", policy)
    assert side_won == ("local" if winner == "desktop" else "remote")
    lost = json.loads(remote_payload if side_won == "local" else local_payload)
    assert lost["title"] == loser
    preserved = json.loads(Path(path).read_text())
    assert preserved["payload"]["title"] == loser
    assert Path(path).name.startswith(f"{chat}_v")
    logged = server.execute("SELECT incoming, server_row FROM acode_sync.conflicts").fetchall()
    assert len(logged) == 1
    sides = {logged[0][0]["payload"]["title"], logged[0][1]["title"]}
    assert sides == {"renamed on laptop", "renamed on desktop"}

    # Lifecycle: a conflict lost by this device shows until acknowledged.
    status = rows(desktop, "SELECT sync_status FROM chats WHERE id = ?", chat)[0][0]
    assert status == ("Conflict" if winner == "laptop" else "Synced")
    conn.close()
    other.close()


def test_conflict_detected_at_pull(laptop: Device, desktop: Device) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "original")
    laptop.sync()
    desktop.sync()
    store.rename_chat(conn, chat, "laptop's title")
    laptop.sync()
    other = desktop.db()
    store.rename_chat(other, chat, "desktop's title")  # pending, not pushed
    puller = Puller(
        other,
        desktop.config,
        desktop.config.device_id or "",
        conflicts_dir=desktop.workspace.conflicts_dir,
    )
    with psycopg.connect(desktop.url, autocommit=True) as pg:
        report = puller.pull(pg)
    assert report.conflicts == 1
    # last_write_wins: the desktop's rename is the later one, so it stays and is
    # now based on the laptop's version: the next push applies without conflict.
    assert title(desktop, chat) == "desktop's title"
    assert rows(desktop, "SELECT base_version FROM sync_outbox WHERE status = 'Pending'") == [(2,)]
    assert desktop.sync().push.applied == 1
    laptop.sync()
    assert title(laptop, chat) == "desktop's title"
    kept = rows(desktop, "SELECT detected_by, winner FROM sync_conflicts")
    assert kept == [("pull", "local")]
    conn.close()
    other.close()


def test_messages_appended_concurrently_all_survive(laptop: Device, desktop: Device) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "busy")
    laptop.sync()
    desktop.sync()
    other = desktop.db()
    for i in range(5):
        store.add_message(conn, chat, f"laptop {i}")
        store.add_message(other, chat, f"desktop {i}")
    laptop.sync()
    desktop.sync()
    laptop.sync()
    for device in (laptop, desktop):
        assert rows(device, "SELECT count(*) FROM messages") == [(10,)]
        assert rows(device, "SELECT count(*) FROM sync_conflicts") == [(0,)]
    conn.close()
    other.close()


def test_edit_racing_a_delete_resolves_by_policy(laptop: Device, desktop: Device) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "t")
    message = store.add_message(conn, chat, "draft")
    laptop.sync()
    desktop.sync()
    other = desktop.db()
    store.delete(conn, message)  # the laptop deletes
    time.sleep(0.01)
    with write(other):  # the desktop edits, later
        other.execute("UPDATE messages SET content = 'edited' WHERE id = ?", (message,))
    laptop.sync()
    desktop.sync()
    laptop.sync()
    for device in (laptop, desktop):  # last write wins: the edit, not deleted
        assert rows(device, "SELECT content, deleted_at FROM messages WHERE id = ?", message) == [
            ("edited", None)
        ]
    conn.close()
    other.close()


def test_out_of_order_commit_is_still_delivered(
    laptop: Device, desktop: Device, pg: PgDatabase
) -> None:
    conn = laptop.db()
    store.new_chat(conn, "seed")
    laptop.sync()
    desktop.sync()
    url = pg.device_url("alice")
    first = psycopg.connect(url)  # takes its change first ...
    first.execute("INSERT INTO acode_sync.chats (id, title) VALUES ('slow', 'committed last')")

    def second() -> None:
        with psycopg.connect(url) as t2:
            t2.execute("INSERT INTO acode_sync.chats (id, title) VALUES ('fast', 'second')")
            t2.commit()

    worker = threading.Thread(target=second)
    worker.start()
    time.sleep(0.2)
    desktop.sync()  # pulls while the first is still open
    first.commit()  # ... and commits last
    worker.join(timeout=10)
    first.close()
    desktop.sync()
    assert rows(desktop, "SELECT id FROM chats WHERE id IN ('slow', 'fast') ORDER BY id") == [
        ("fast",),
        ("slow",),
    ]
    conn.close()


def test_offline_device_catches_up_in_pages_and_survives_a_crash(
    laptop: Device, desktop: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop.overrides["download.page_size"] = 100
    conn = laptop.db()
    chat = store.new_chat(conn, "long")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((f"m{i:04d}", chat, f"message {i}") for i in range(999)),
        )
    laptop.overrides["upload.batch_size"] = 1000
    laptop.sync()

    crashes = {"left": 1}
    real_apply = Puller._apply_pending

    def apply_then_crash(self: Puller, report: Any, now: str, *part: Any) -> None:
        # The process dies while the second page is stored and applied: that
        # slice's transaction rolls back, the first page stays applied.
        stored = self.conn.execute("SELECT count(*) FROM sync_inbox").fetchone()[0]
        if stored > 100 and crashes["left"]:
            crashes["left"] -= 1
            raise KeyboardInterrupt("killed while applying a page")
        real_apply(self, report, now, *part)

    monkeypatch.setattr(Puller, "_apply_pending", apply_then_crash)
    with pytest.raises(KeyboardInterrupt):
        desktop.sync()
    assert rows(desktop, "SELECT count(*), min(status) FROM sync_inbox") == [(100, "Applied")]
    assert rows(desktop, "SELECT pull_cursor FROM sync_state") == [(100,)]
    report = desktop.sync()
    assert report.pull.pages == 9
    assert rows(desktop, "SELECT count(*) FROM messages") == [(999,)]
    assert rows(desktop, "SELECT count(*) FROM sync_inbox WHERE status = 'Applied'") == [(1000,)]
    assert rows(desktop, "SELECT pull_cursor FROM sync_state") == [(1000,)]
    conn.close()


def test_an_admin_edit_in_postgres_reaches_every_device(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "before")
    laptop.sync()
    desktop.sync()
    server.execute("UPDATE acode_sync.chats SET title = 'fixed by an admin' WHERE id = %s", (chat,))
    laptop.sync()
    desktop.sync()
    for device in (laptop, desktop):
        assert rows(device, "SELECT title, version, sync_status FROM chats") == [
            ("fixed by an admin", 2, "Synced")
        ]
    conn.close()


def test_no_local_only_row_ever_reaches_the_server(
    laptop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "private", privacy="LOCAL_ONLY")
    store.add_message(conn, chat, "secret")
    public = store.new_chat(conn, "public")
    store.add_message(conn, public, "shh", privacy="LOCAL_ONLY")
    laptop.sync()
    assert server.execute("SELECT count(*) FROM acode_sync.messages").fetchone() == (0,)
    assert server.execute("SELECT id FROM acode_sync.chats").fetchall() == [(public,)]
    conn.close()


def test_conflicts_command_shows_both_sides_and_ack_ends_the_conflict_state(
    laptop: Device, desktop: Device
) -> None:
    from click.testing import CliRunner

    from acode_sync.cli import acode

    desktop.overrides["conflict.policy"] = "remote_wins"
    conn = laptop.db()
    chat = store.new_chat(conn, "Feature: Auth")
    laptop.sync()
    desktop.sync()
    store.rename_chat(conn, chat, "Auth by laptop")
    other = desktop.db()
    store.rename_chat(other, chat, "Auth by desktop")
    laptop.sync()
    desktop.sync()  # the desktop's rename loses

    def run(*args: str) -> Any:
        return CliRunner().invoke(
            acode, ["sync", *args, "--workspace", str(desktop.workspace.root)]
        )

    # The config file on disk says last_write_wins; what was recorded is remote_wins.
    shown = run("conflicts")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[:3] == ["Conflicts", "─" * 36, "1 conflict found"]
    assert lines[4].startswith(f'Chat: {chat} "Auth by laptop"')
    assert lines[5].startswith("  Local version: 1 (modified ")
    assert lines[6].startswith("  Remote version: 2 (modified ")
    assert lines[7] == "  Resolution: Remote wins (remote-wins policy)"
    assert lines[9] == f"  Local changes preserved in: .agent/conflicts/{chat}_v1.json"
    record = json.loads(run("conflicts", "--json").output)[0]
    assert record["local"]["payload"]["title"] == "Auth by desktop"
    assert record["remote"]["payload"]["title"] == "Auth by laptop"
    assert rows(desktop, "SELECT sync_status FROM chats") == [("Conflict",)]

    acked = run("conflicts", "--ack", str(record["id"]))
    assert acked.exit_code == 0 and "Acknowledged 1 conflict." in acked.output
    assert rows(desktop, "SELECT sync_status FROM chats") == [("Synced",)]
    assert run("conflicts").output.splitlines()[2] == "0 conflicts found"
    assert run("conflicts", "--ack", "999").exit_code == 2
    conn.close()
    other.close()


def test_a_withdrawal_beats_a_later_edit_from_another_device(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "shared, then private")
    message = store.add_message(conn, chat, "original")
    laptop.sync()
    desktop.sync()
    other = desktop.db()
    store.set_privacy(other, chat, "LOCAL_ONLY")  # the desktop withdraws the chat
    desktop.sync()
    time.sleep(0.01)
    with write(conn):  # the laptop, not yet aware, edits later (last write would win)
        conn.execute("UPDATE messages SET content = 'edited later' WHERE id = ?", (message,))
        conn.execute("UPDATE chats SET title = 'renamed later' WHERE id = ?", (chat,))
    report = laptop.sync()
    assert report.push.conflicts + report.push.rejected >= 1
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE content IS NOT NULL"
    ).fetchone() == (0,)
    assert server.execute("SELECT title, privacy FROM acode_sync.chats").fetchone() == (
        "",
        "LOCAL_ONLY",
    )
    assert rows(laptop, "SELECT count(*) FROM chats") == [(0,)]  # withdrawn here too
    kept = rows(laptop, "SELECT local_payload FROM sync_conflicts WHERE entity_type = 'chat'")
    assert json.loads(kept[0][0])["title"] == "renamed later"  # the loser is kept
    assert rows(desktop, "SELECT title, privacy FROM chats") == [
        ("shared, then private", "LOCAL_ONLY")
    ]
    conn.close()
    other.close()


def test_messages_are_captured_again_once_the_pull_has_caught_up_even_across_cuts(
    tmp_path: Path, pg: PgDatabase, server: psycopg.Connection[Any]
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"), **{"download.page_size": 2})
    conn = desktop.db()
    chat = store.new_chat(conn, "shared")
    for i in range(3):
        store.add_message(conn, chat, f"seen {i}")
    desktop.sync()
    laptop.sync()
    unseen = [store.add_message(conn, chat, f"unseen {i}") for i in range(2)]
    desktop.sync()
    other = laptop.db()
    store.set_privacy(other, chat, "REDACTED")  # captures the three it has again
    laptop.sync()
    puller = Puller(conn, desktop.config, desktop.config.device_id or "")
    with psycopg.connect(desktop.url, autocommit=True) as remote:
        puller.pull(remote, max_pages=1)  # cut short: more of the log is waiting
    assert rows(desktop, "SELECT chat_id FROM sync_recapture") == [(chat,)]
    assert rows(desktop, "SELECT count(*) FROM sync_outbox WHERE status = 'Pending'") == [(0,)]

    desktop.sync()  # pulls the rest, then captures again only what the laptop never had

    recaptured = rows(
        desktop,
        "SELECT entity_id, json_extract(payload, '$.privacy'), json_extract(payload, '$.content') "
        "FROM sync_outbox WHERE status = 'Pending' ORDER BY entity_id",
    )
    assert recaptured == sorted((m, "REDACTED", None) for m in unseen)
    assert rows(desktop, "SELECT count(*) FROM sync_recapture") == [(0,)]
    desktop.sync()
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE content IS NOT NULL"
    ).fetchone() == (0,)
    assert rows(desktop, "SELECT count(*) FROM sync_conflicts") == [(0,)]
    conn.close()
    other.close()


def test_a_chat_redacted_elsewhere_leaves_no_content_on_the_server(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = desktop.db()
    chat = store.new_chat(conn, "shared")
    store.add_message(conn, chat, "seen by both")
    desktop.sync()
    laptop.sync()
    store.add_message(conn, chat, "written after the laptop's last pull")
    desktop.sync()
    other = laptop.db()
    store.set_privacy(other, chat, "REDACTED")  # the laptop has not seen it
    for device in (laptop, desktop, desktop, laptop):  # the desktop captures on its pull
        device.sync()
    conn.close()
    other.close()
    assert server.execute(
        "SELECT count(*) FROM acode_sync.messages WHERE content IS NOT NULL"
    ).fetchone() == (0,)


def test_a_redacted_chat_made_full_elsewhere_shares_its_content_again(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any]
) -> None:
    conn = desktop.db()
    chat = store.new_chat(conn, "redacted at first", "REDACTED")
    store.add_message(conn, chat, "only the desktop has this text")
    desktop.sync()
    laptop.sync()
    other = laptop.db()
    store.set_privacy(other, chat, "FULL")
    for device in (laptop, desktop, desktop, laptop):  # the desktop captures on its pull
        device.sync()
    conn.close()
    other.close()
    assert server.execute("SELECT content FROM acode_sync.messages").fetchall() == [
        ("only the desktop has this text",)
    ]


@pytest.mark.parametrize("pulled_between", [True, False], ids=["pulled", "push-only"])
def test_a_chat_withdrawn_then_shared_again_keeps_and_brings_back_its_messages(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any], pulled_between: bool
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "shared, private, shared")
    first = store.add_message(conn, chat, "before")
    laptop.sync()
    desktop.sync()
    store.set_privacy(conn, chat, "LOCAL_ONLY")
    # The server withdraws the chat and, with it, its messages (version 2).
    if pulled_between:
        laptop.sync()
        # The laptop took the versions of that withdrawal from the log (its
        # own change), so sharing again is made on them.
        want_version = 2
    else:  # the pull after the push failed: the laptop never saw version 2
        mover = Uploader(conn, laptop.config, laptop.config.device_id or "")
        with psycopg.connect(laptop.url, autocommit=True) as remote:
            assert mover.push(remote).applied == 1
        want_version = 1  # the server takes it anyway: its own last write
    desktop.sync()
    assert rows(desktop, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(laptop, "SELECT id, content, version FROM messages") == [
        (first, "before", want_version)
    ]
    later = store.add_message(conn, chat, "while private")
    store.set_privacy(conn, chat, "FULL")

    report = laptop.sync()

    assert report.push.conflicts == 0 and report.push.errors == []
    assert rows(laptop, "SELECT content FROM messages ORDER BY id") == [
        ("before",),
        ("while private",),
    ]
    assert server.execute(
        "SELECT id, content, privacy FROM acode_sync.messages ORDER BY id"
    ).fetchall() == [(first, "before", "FULL"), (later, "while private", "FULL")]
    desktop.sync()
    assert rows(desktop, "SELECT content FROM messages ORDER BY id") == [
        ("before",),
        ("while private",),
    ]
    assert rows(
        laptop, "SELECT count(*) FROM sync_outbox WHERE status NOT IN ('Synced', 'Superseded')"
    ) == [(0,)]
    conn.close()


@pytest.mark.parametrize("rename_chat", [False, True], ids=["messages-alone", "with-chat-edit"])
def test_messages_of_a_chat_withdrawn_elsewhere_are_conflicts_never_errors_or_writes(
    laptop: Device, desktop: Device, server: psycopg.Connection[Any], rename_chat: bool
) -> None:
    conn = laptop.db()
    chat = store.new_chat(conn, "shared, then private")
    edited = store.add_message(conn, chat, "original")
    laptop.sync()
    desktop.sync()
    other = desktop.db()
    store.set_privacy(other, chat, "LOCAL_ONLY")  # the desktop withdraws the chat
    desktop.sync()
    # The laptop, not yet aware, edits a message and adds one (under 0001 the
    # server rejected both for good); and, in the second case, renames the chat
    # so the new message travels beside an edit of its chat (under 0001 it was
    # then written, content and all, into the withdrawn chat).
    with write(conn):
        conn.execute("UPDATE messages SET content = 'edited' WHERE id = ?", (edited,))
    added = store.add_message(conn, chat, "written after the withdrawal")
    if rename_chat:
        with write(conn):
            conn.execute("UPDATE chats SET title = 'renamed' WHERE id = ?", (chat,))

    report = laptop.sync()

    assert report.push.rejected == 0 and report.push.errors == []
    assert report.push.conflicts == 2 + rename_chat  # both messages (and the chat)
    # Nothing of it reached the server: the new message was never written and
    # the withdrawn ones hold no content.
    assert server.execute(
        "SELECT id, content, privacy FROM acode_sync.messages ORDER BY id"
    ).fetchall() == [(edited, None, "LOCAL_ONLY")]
    assert server.execute(
        "SELECT entity_type, entity_id, server_version FROM acode_sync.conflicts "
        "WHERE entity_type = 'message' ORDER BY entity_id"
    ).fetchall() == sorted([("message", edited, 2), ("message", added, 0)])
    # The withdrawal won here too, nothing is left owed, and what the laptop
    # wrote is kept in its conflict log.
    assert rows(laptop, "SELECT count(*) FROM chats") == [(0,)]
    assert rows(laptop, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(
        laptop, "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
    ) == [(0,)]
    kept = dict(
        rows(
            laptop,
            "SELECT entity_id, json_extract(local_payload, '$.content') FROM sync_conflicts "
            "WHERE entity_type = 'message' AND winner = 'remote'",
        )
    )
    assert kept == {edited: "edited", added: "written after the withdrawal"}
    again = laptop.sync()
    assert again.push.sent == 0 and again.push.errors == []
    conn.close()
    other.close()
