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
* the change log holds each idempotency key once.

The default run is short; ``-m slow`` runs many more seeds and steps (20 x 400,
about 35 s).
"""

from __future__ import annotations

import random
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
        if action == "chat" or (action == "message" and not chats):
            store.new_chat(conn, text, rng.choice(LEVELS))
        elif action == "message":
            store.add_message(conn, rng.choice(chats), text, privacy=rng.choice(LEVELS))
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
            store.set_privacy(conn, rng.choice(chats + messages), rng.choice(LEVELS))
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


def run_world(root: Path, pg: PgDatabase, proxy: TcpProxy, seed: int, steps: int) -> None:
    world = World(root, pg, proxy, seed)
    try:
        for _ in range(steps):
            world.step()
        world.settle()
        with pg.admin() as server:
            for device in (world.laptop, world.desktop):
                conn = world.conns[device.name]
                owed = conn.execute(
                    "SELECT entity_type, entity_id, status, last_error FROM sync_outbox "
                    "WHERE status IN ('Pending', 'Failed')"
                ).fetchall()
                assert [tuple(r) for r in owed] == [], (seed, device.name)
                assert _shared_view(conn) == _server_view(server), (seed, device.name)
            assert server.execute(
                "SELECT count(*) - count(DISTINCT (owner_id, idempotency_key)) "
                "FROM acode_sync.changes"
            ).fetchone() == (0,)
    finally:
        world.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_two_devices_converge_after_random_work_and_broken_links(
    tmp_path: Path, pg: PgDatabase, proxy: TcpProxy, seed: int
) -> None:
    run_world(tmp_path, pg, proxy, seed, steps=80)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_two_devices_converge_soak(
    tmp_path: Path, pg: PgDatabase, proxy: TcpProxy, seed: int
) -> None:
    run_world(tmp_path, pg, proxy, seed, steps=400)
