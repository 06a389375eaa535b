"""push() as migration 0002 left it, against 0001's, on the same random batches.

0002 rewrote push() for speed (one classifying pass) and changed two things on
purpose:

* a message upsert whose chat is withdrawn (on the server, or by the same
  batch) is a conflict with the message's withdrawn row, where 0001 rejected
  it, wrote it, or refused the whole batch;
* a device never conflicts with itself: a change made on an older version of
  a row the same device wrote last is applied, where 0001 called it a conflict.

This test holds the rewrite to exactly that: two databases, one at 0001 and
one at 0002, get the same batches (each from one of two devices) from
the same device role; the answers and the whole server state must be equal,
and where they part, the first difference must be one of those two changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from acode_sync.migrations import shipped
from tests.fix_pg import PgDatabase, admin_url

ROLE = "acode_test_alice"
CHATS = ("c1", "c2", "c3")
MESSAGES = ("m1", "m2", "m3", "m4", "m5")
PUSH = (
    "SELECT idx, idempotency_key, result, version, reason, server_row "
    "FROM acode_sync.push(%s, %s, %s::jsonb)"
)
DEVICES = ("fuzz-a", "fuzz-b")
STATE = {
    "chats": "SELECT * FROM acode_sync.chats ORDER BY id",
    "messages": "SELECT * FROM acode_sync.messages ORDER BY id",
    "changes": "SELECT owner_id, seq, entity_type, entity_id, version, op, idempotency_key, "
    "batch_id, origin_device, changed_at FROM acode_sync.changes ORDER BY seq",
    "conflicts": "SELECT entity_type, entity_id, idempotency_key, base_version, "
    "server_version, incoming, server_row FROM acode_sync.conflicts ORDER BY id",
}


def _url(dbname: str, user: str | None = None) -> str:
    return PgDatabase(admin_url(), dbname).url(user)


@dataclass
class Pair:
    reference: psycopg.Connection[Any]  # at the earlier migration
    current: psycopg.Connection[Any]  # at the later migration
    admin_urls: tuple[str, str]

    def reset(self) -> None:
        for url in self.admin_urls:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "TRUNCATE acode_sync.messages, acode_sync.chats, acode_sync.changes, "
                    "acode_sync.conflicts, acode_sync.owner_clock"
                )

    def states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        found = []
        for url in self.admin_urls:
            with psycopg.connect(url) as conn:
                found.append({k: conn.execute(q).fetchall() for k, q in STATE.items()})
        return found[0], found[1]


@contextmanager
def pair_at(reference_upto: str, current_upto: str) -> Iterator[Pair]:
    """Two scratch databases, migrated up to (and including) the two names."""
    names = [f"acode_sync_push_ref_{id(object())}", f"acode_sync_push_cur_{id(object())}"]
    migrations = shipped("postgres")
    order = [m.name for m in migrations]
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        for name, upto in zip(names, (reference_upto, current_upto), strict=True):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with psycopg.connect(_url(name), autocommit=True) as conn:
                for migration in migrations[: order.index(upto) + 1]:
                    conn.execute(migration.sql.encode())
    try:
        with (
            psycopg.connect(_url(names[0], ROLE), autocommit=True) as reference,
            psycopg.connect(_url(names[1], ROLE), autocommit=True) as current,
        ):
            yield Pair(reference, current, (_url(names[0]), _url(names[1])))
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture(scope="module")
def pair(device_roles: tuple[str, ...]) -> Iterator[Pair]:
    # 0004 rewrote push() again and changed the shape of server_row: it has
    # its own differential test against 0002 (test_push_0004_against_0002).
    with pair_at("0001_server_schema", "0002_withdrawn_chat_messages") as found:
        yield found


@dataclass
class Model:
    """What the test device believes: versions it was told, keys it has used."""

    versions: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    chat_of: dict[str, str] = field(default_factory=dict)
    n: int = 0


def _time(n: int) -> str:
    return f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"


@st.composite
def items_of_a_batch(draw: st.DrawFn, model: Model, withdrawals: bool) -> list[dict[str, Any]]:
    kinds = ["chat upsert", "message upsert", "message withdraw"]
    if withdrawals:
        kinds.append("chat withdraw")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    keys: set[str] = set()
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        entity_type, op = kind.split()
        entity_id = draw(st.sampled_from(CHATS if entity_type == "chat" else MESSAGES))
        if entity_id in seen:  # the client coalesces: one item per entity
            continue
        seen.add(entity_id)
        model.n += 1
        n = model.n
        key = f"k{n}"
        earlier = [k for k in model.keys if k not in keys]  # a batch repeats no key
        if earlier and draw(st.integers(0, 9)) == 0:
            key = draw(st.sampled_from(earlier))  # a resend, or another item's key
        model.keys.append(key)
        keys.add(key)
        known = model.versions.get(entity_id, 0)
        base = draw(st.sampled_from([known, known, known, 0, known + 1, max(0, known - 1), -1]))
        item: dict[str, Any] = {
            "key": key,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "op": draw(st.sampled_from([op] * 20 + ["delete"])),
            "base_version": base,
            "changed_at": draw(st.sampled_from([_time(n)] * 20 + ["yesterday"])),
            "payload": None,
        }
        if op == "upsert":
            privacy = draw(st.sampled_from(["FULL"] * 6 + ["REDACTED", "LOCAL_ONLY"]))
            payload: dict[str, Any] = {
                "id": draw(st.sampled_from([entity_id] * 30 + ["someone-else"])),
                "privacy": privacy,
                "created_at": draw(st.sampled_from([_time(n)] * 30 + ["not a time"])),
                "updated_at": _time(n + 1),
                "deleted_at": draw(st.sampled_from([None] * 10 + [_time(n + 2)])),
            }
            if entity_type == "chat":
                payload["title"] = f"title {n}"
            else:
                chat = model.chat_of.setdefault(
                    entity_id, draw(st.sampled_from([*CHATS, "not-a-chat"]))
                )
                payload["chat_id"] = chat
                payload["role"] = draw(st.sampled_from(["user", "assistant"] * 15 + ["narrator"]))
                payload["content"] = f"content {n}" if privacy == "FULL" else None
            item["payload"] = payload
        items.append(item)
    return items


def _push(
    conn: psycopg.Connection[Any], batch: str, device: str, items: list[dict[str, Any]]
) -> Any:
    try:
        found = conn.execute(PUSH, (batch, device, json.dumps(items))).fetchall()
        return [tuple(r) for r in found]
    except psycopg.Error as exc:
        return ("refused", type(exc).__name__)


def _is_withdrawn_chat_message(item: dict[str, Any], answer: tuple[Any, ...]) -> bool:
    """0002's change: a message upsert answered as a conflict with a withdrawn row."""
    row = answer[5] or {}
    return (
        item["entity_type"] == "message"
        and item["op"] == "upsert"
        and answer[2] == "conflict"
        and row.get("privacy") == "LOCAL_ONLY"
        and row.get("content") is None
    )


def _is_own_row(device: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    """0002's other change: 0001 called it a conflict with a row this device wrote."""
    row = old[5] or {}
    return old[2] == "conflict" and new[2] == "applied" and row.get("origin_device") == device


def _run(pair: Pair, data: st.DataObject, withdrawals: bool) -> bool:
    """Push the same batches to both; True if they never parted."""
    pair.reset()
    model = Model()
    for number in range(data.draw(st.integers(1, 8), label="batches")):
        device = data.draw(st.sampled_from(DEVICES), label=f"device {number}")
        items = data.draw(items_of_a_batch(model, withdrawals), label=f"batch {number}")
        old = _push(pair.reference, f"b{number}", device, items)
        new = _push(pair.current, f"b{number}", device, items)
        if old != new:
            assert isinstance(new, list), f"0002 refused a batch 0001 took: {new}"
            if isinstance(old, list):
                changed = [(i, a, b) for i, a, b in zip(items, old, new, strict=True) if a != b]
                assert changed, (old, new)
                for item, a, b in changed:
                    assert _is_own_row(device, a, b) or (
                        withdrawals and _is_withdrawn_chat_message(item, b)
                    ), (item, a, b)
            else:  # 0001 refused the whole batch (a message written into a gone chat)
                assert withdrawals, f"0001 refused a batch without a withdrawal: {old}"
                pairs = zip(items, new, strict=True)
                assert any(_is_withdrawn_chat_message(i, b) for i, b in pairs), new
            return False
        if isinstance(new, list):
            for item, answer in zip(items, new, strict=True):
                if answer[2] in ("applied", "duplicate", "conflict") and answer[3] is not None:
                    model.versions[item["entity_id"]] = answer[3]
    old_state, new_state = pair.states()
    for table in ("chats", "messages", "changes"):
        assert old_state[table] == new_state[table], table
    # 0002 also logs a conflict 0001 answered without logging (a message of a
    # chat withdrawn earlier in the same batch); it never logs fewer.
    assert all(row in new_state["conflicts"] for row in old_state["conflicts"])
    if not withdrawals:
        assert old_state["conflicts"] == new_state["conflicts"]
    return True


def same_as_reference(pair: Pair, data: st.DataObject, withdrawals: bool) -> None:
    """For a migration that changed only what push() costs: on random batches the
    current push() gives the reference's answers, server rows included, and
    leaves the same entities, change log (seq for seq) and conflict log."""
    pair.reset()
    model = Model()
    for number in range(data.draw(st.integers(1, 8), label="batches")):
        device = data.draw(st.sampled_from(DEVICES), label=f"device {number}")
        items = data.draw(items_of_a_batch(model, withdrawals), label=f"batch {number}")
        old = _push(pair.reference, f"b{number}", device, items)
        new = _push(pair.current, f"b{number}", device, items)
        assert new == old, items
        if isinstance(new, list):
            for item, answer in zip(items, new, strict=True):
                if answer[2] in ("applied", "duplicate", "conflict") and answer[3] is not None:
                    model.versions[item["entity_id"]] = answer[3]
    old_state, new_state = pair.states()
    for table in ("chats", "messages", "changes", "conflicts"):
        assert old_state[table] == new_state[table], table


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data())
def test_without_chat_withdrawals_they_part_only_where_a_device_met_its_own_row(
    pair: Pair, data: st.DataObject
) -> None:
    _run(pair, data, withdrawals=False)


@SETTINGS
@given(data=st.data())
def test_with_chat_withdrawals_they_part_only_where_0002_meant_to(
    pair: Pair, data: st.DataObject
) -> None:
    _run(pair, data, withdrawals=True)
