"""Two devices of one owner, random work, random syncs, a link that breaks.

Each run is a seeded sequence of what a user does on either device (chats,
messages, edits, renames, deletes, privacy changes in every direction) mixed
with syncs, some of them over a TCP proxy that cuts the connection part way.
Then the link is healed and both devices sync until quiet, and the promises
are checked:

* nothing is left owed: no outbox row is Pending or Failed on either device;
* both devices show exactly what the server shows of everything not
  LOCAL_ONLY, field for field (content only where FULL): so nothing still
  LOCAL_ONLY on a device is visible on the server, and nothing written is
  missing from it or from the other device;
* every outbox row a device holds as acknowledged (Synced) has exactly one
  change in the server's log under its idempotency key (a withdrawal at most
  one: there may have been nothing to withdraw), and every change in the log
  is some device's outbox row: nothing acknowledged was lost, nothing arrived
  from nowhere;
* every chat and message the run wrote that never was LOCAL_ONLY (itself or
  through its chat) is on the server once and on each device once: the test's
  own record of what was written, not the stores, says what must be there, so
  something lost everywhere at once is caught too.

The default run is short; ``-m slow`` runs many more seeds and steps (20 x 400,
about 35 s).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from acode_sync import store
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device, through
from tests.proxy import TcpProxy

LEVELS = ("FULL", "FULL", "FULL", "REDACTED", "LOCAL_ONLY")
RANK = {"FULL": 0, "REDACTED": 1, "LOCAL_ONLY": 2}
OWNER = "acode_test_alice"


@dataclass
class Written:
    """What the run wrote, as the test saw it (not as any store says)."""

    chats: set[str] = field(default_factory=set)
    messages: dict[str, str] = field(default_factory=dict)  # message id -> its chat
    made_local_only: set[str] = field(default_factory=set)  # ever LOCAL_ONLY, chat or message

    def note_privacy(self, entity_id: str, level: str) -> None:
        if level == "LOCAL_ONLY":
            self.made_local_only.add(entity_id)

    def shared(self) -> dict[str, set[str]]:
        """Per table, what was never LOCAL_ONLY, itself or through its chat: it
        must end up on the server and on every device."""
        private = self.made_local_only
        return {
            "chats": self.chats - private,
            "messages": {m for m, c in self.messages.items() if not {m, c} & private},
        }


class World:
    """The two devices and the random source of one run."""

    def __init__(self, root: Path, pg: PgDatabase, proxy: TcpProxy, seed: int) -> None:
        url = pg.device_url("alice")
        # Cuts may come often: attempts must not run out inside a run.
        self.laptop = make_device(
            root, "laptop", through(proxy, url), **{"retry.max_attempts": 1000}
        )
        self.desktop = make_device(root, "desktop", url, **{"retry.max_attempts": 1000})
        self.proxy = proxy
        self.rng = random.Random(seed)
        self.conns = {d.name: d.db() for d in (self.laptop, self.desktop)}
        self.step_no = 0
        self.written = Written()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def ids(self, device: Device, table: str, where: str = "1") -> list[str]:
        found = self.conns[device.name].execute(f"SELECT id FROM {table} WHERE {where} ORDER BY id")
        return [str(r[0]) for r in found]

    def step(self) -> None:
        rng = self.rng
        self.step_no += 1
        device = rng.choice((self.laptop, self.desktop))
        conn = self.conns[device.name]
        chats = self.ids(device, "chats", "deleted_at IS NULL")
        messages = self.ids(device, "messages", "deleted_at IS NULL")
        action = rng.choices(
            ["chat", "message", "edit", "rename", "delete", "privacy", "sync"],
            weights=[2, 6, 3, 2, 1, 2, 5],
        )[0]
        text = f"{device.name} step {self.step_no}"
        written = self.written
        if action == "chat" or (action == "message" and not chats):
            level = rng.choice(LEVELS)
            chat_id = store.new_chat(conn, text, level)
            written.chats.add(chat_id)
            written.note_privacy(chat_id, level)
        elif action == "message":
            chat_id, level = rng.choice(chats), rng.choice(LEVELS)
            message_id = store.add_message(conn, chat_id, text, privacy=level)
            written.messages[message_id] = chat_id
            written.note_privacy(message_id, level)
        elif action == "edit" and messages:
            with write(conn):
                conn.execute(
                    "UPDATE messages SET content = ? WHERE id = ?", (text, rng.choice(messages))
                )
        elif action == "rename" and chats:
            store.rename_chat(conn, rng.choice(chats), text)
        elif action == "delete" and (chats or messages):
            store.delete(conn, rng.choice(chats + messages))
        elif action == "privacy" and (chats or messages):
            target, level = rng.choice(chats + messages), rng.choice(LEVELS)
            store.set_privacy(conn, target, level)
            written.note_privacy(target, level)
        elif action == "sync":
            self.sync(device, faulty=device is self.laptop and rng.random() < 0.4)

    def sync(self, device: Device, *, faulty: bool = False) -> None:
        if faulty:
            self.proxy.cut_after_bytes(self.rng.randint(200, 20_000))
        try:
            device.sync()
        finally:
            self.proxy.restore()

    def settle(self) -> None:
        for _ in range(3):
            self.sync(self.laptop)
            self.sync(self.desktop)


def _shared_view(conn: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
    """What a device shows of everything not LOCAL_ONLY (a message counts as
    its chat's level when that is stricter)."""
    view: dict[tuple[str, str], tuple[Any, ...]] = {}
    for chat_id, title, privacy, deleted in conn.execute(
        "SELECT id, title, privacy, deleted_at IS NOT NULL FROM chats"
    ):
        if privacy != "LOCAL_ONLY":
            view[("chat", chat_id)] = (title, privacy, bool(deleted))
    for message_id, chat_id, content, own, chat_level, deleted in conn.execute(
        "SELECT m.id, m.chat_id, m.content, m.privacy, c.privacy, m.deleted_at IS NOT NULL "
        "FROM messages m JOIN chats c ON c.id = m.chat_id"
    ):
        level = max((own, chat_level), key=RANK.__getitem__)
        if level != "LOCAL_ONLY":
            shown = content if level == "FULL" else None
            view[("message", message_id)] = (chat_id, shown, level, bool(deleted))
    return view


def _server_view(server: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[Any, ...]]:
    view: dict[tuple[str, str], tuple[Any, ...]] = {}
    for chat_id, title, privacy, deleted in server.execute(
        "SELECT id, title, privacy, deleted_at IS NOT NULL FROM acode_sync.chats "
        "WHERE privacy <> 'LOCAL_ONLY'"
    ):
        view[("chat", chat_id)] = (title, privacy, bool(deleted))
    for message_id, chat_id, content, privacy, deleted in server.execute(
        "SELECT id, chat_id, content, privacy, deleted_at IS NOT NULL FROM acode_sync.messages "
        "WHERE privacy <> 'LOCAL_ONLY'"
    ):
        view[("message", message_id)] = (chat_id, content, privacy, bool(deleted))
    return view


def check_changes_match_outboxes(conns: dict[str, Any], server: psycopg.Connection[Any]) -> None:
    """Each acknowledged outbox key is logged exactly once, and each logged key
    is some device's.

    Withdrawals are not one to one, by design: a chat's withdrawal also
    withdraws its messages, logged as ``<key>:<message id>``; and a withdrawal
    with nothing to withdraw (the server never held the entity, as when it was
    made LOCAL_ONLY before its first upload, or held it withdrawn already) is
    acknowledged with nothing logged. So an acknowledged withdrawal is logged
    at most once; that the server shows nothing a device withdrew is the view
    comparison's part.

    Synced rows keep their key after their payload is dropped, and rows are
    pruned only after the retention period, days longer than a run: every row
    of the run is still here."""
    logged = Counter(
        str(key)
        for (key,) in server.execute(
            "SELECT idempotency_key FROM acode_sync.changes WHERE owner_id = %s", (OWNER,)
        )
    )
    every_key: set[str] = set()
    chat_withdrawals: set[str] = set()
    for name, conn in conns.items():
        wrong = {}
        for key, kind, entity_id, op, status in conn.execute(
            "SELECT idempotency_key, entity_type, entity_id, op, status FROM sync_outbox"
        ):
            every_key.add(str(key))
            if kind == "chat" and op == "withdraw":
                chat_withdrawals.add(str(key))
            allowed = {0, 1} if op == "withdraw" else {1}
            if status == "Synced" and logged[key] not in allowed:
                wrong[key] = (kind, entity_id, op, logged[key])
        assert wrong == {}, f"{name}: acknowledged keys logged other than once: {wrong}"
    strays = sorted(
        key
        for key in logged
        if key not in every_key and key.partition(":")[0] not in chat_withdrawals
    )
    assert strays == [], f"changes logged under keys no device wrote: {strays}"


def check_written_everywhere(
    written: Written, conns: dict[str, Any], server: psycopg.Connection[Any]
) -> None:
    """Everything written that was never LOCAL_ONLY is on the server once and on
    every device once (deletes are soft: a deleted row is still there)."""
    for table, ids in written.shared().items():
        wanted = sorted(ids)
        on_server = Counter(
            str(entity_id)
            for (entity_id,) in server.execute(
                f"SELECT id FROM acode_sync.{table} WHERE owner_id = %s AND id = ANY(%s)",
                (OWNER, wanted),
            )
        )
        wrong = {i: on_server[i] for i in wanted if on_server[i] != 1}
        assert wrong == {}, f"server: {table} written but held other than once: {wrong}"
        for name, conn in conns.items():
            held = Counter(
                str(entity_id)
                for (entity_id,) in conn.execute(
                    f"SELECT id FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(wanted),),
                )
            )
            wrong = {i: held[i] for i in wanted if held[i] != 1}
            assert wrong == {}, f"{name}: {table} written but held other than once: {wrong}"


def check_converged(world: World, server: psycopg.Connection[Any]) -> None:
    for device in (world.laptop, world.desktop):
        conn = world.conns[device.name]
        owed = conn.execute(
            "SELECT entity_type, entity_id, status, last_error FROM sync_outbox "
            "WHERE status IN ('Pending', 'Failed')"
        ).fetchall()
        assert [tuple(r) for r in owed] == [], device.name
        assert _shared_view(conn) == _server_view(server), device.name
    check_changes_match_outboxes(world.conns, server)
    check_written_everywhere(world.written, world.conns, server)


@contextmanager
def settled_world(
    root: Path, pg: PgDatabase, proxy: TcpProxy, seed: int, steps: int
) -> Iterator[World]:
    """A run of ``steps``, settled and checked."""
    world = World(root, pg, proxy, seed)
    try:
        for _ in range(steps):
            world.step()
        world.settle()
        assert world.written.shared()["messages"], f"seed {seed}: nothing shared to check"
        with pg.admin() as server:
            try:
                check_converged(world, server)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}: {exc}") from exc
        yield world
    finally:
        world.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_two_devices_converge_after_random_work_and_broken_links(
    tmp_path: Path, pg: PgDatabase, proxy: TcpProxy, seed: int
) -> None:
    with settled_world(tmp_path, pg, proxy, seed, steps=80):
        pass


def test_the_checks_catch_a_lost_change_and_a_message_lost_everywhere(
    tmp_path: Path, pg: PgDatabase, proxy: TcpProxy
) -> None:
    with settled_world(tmp_path, pg, proxy, seed=3, steps=40) as world, pg.admin() as server:
        # One acknowledged change goes missing from the server's log.
        desktop = world.conns[world.desktop.name]
        (key,) = desktop.execute(
            "SELECT idempotency_key FROM sync_outbox WHERE status = 'Synced' AND op = 'upsert' "
            "LIMIT 1"
        ).fetchone()
        with server.transaction():
            server.execute("DELETE FROM acode_sync.changes WHERE idempotency_key = %s", (key,))
            with pytest.raises(AssertionError, match="acknowledged keys logged other"):
                check_changes_match_outboxes(world.conns, server)
            raise psycopg.Rollback()
        check_changes_match_outboxes(world.conns, server)

        # A written message vanishes from the server and both devices alike:
        # the views still agree, only the record of what was written knows.
        lost = sorted(world.written.shared()["messages"])[0]
        server.execute("DELETE FROM acode_sync.messages WHERE id = %s", (lost,))
        for conn in world.conns.values():
            with write(conn):
                conn.execute("DELETE FROM messages WHERE id = ?", (lost,))
        for device in (world.laptop, world.desktop):
            assert _shared_view(world.conns[device.name]) == _server_view(server)
        with pytest.raises(AssertionError, match="messages written but held other"):
            check_written_everywhere(world.written, world.conns, server)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_two_devices_converge_soak(
    tmp_path: Path, pg: PgDatabase, proxy: TcpProxy, seed: int
) -> None:
    with settled_world(tmp_path, pg, proxy, seed, steps=400):
        pass
