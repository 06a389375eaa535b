"""push() reaches a grown table by index, whatever its session planned earlier.

Server migration 0008 lets push() keep cached plans for its look-ups too (0007
planned them for each call; its upserts, the foreign-key checks and the
change-log trigger under them kept cached plans), with sequential scans
disabled inside push(). The trap it must stay out of (the reason 0002 set
force_custom_plan): a plan made while the tables were small, kept by the
session, scanning them whole once they have grown. Here a device's session
pushes on small tables first (past the calls after which a cached plan goes
generic), an admin then grows chats, messages and the change log by 30,000
rows each (no ANALYZE), and the same session pushes a batch of every kind:
the transaction's own statistics (``pg_stat_xact_user_tables``) must show
index scans of each and no sequential scan. Without the guard (static
look-ups, sequential scans allowed) the cached plans scan the grown tables.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.fix_pg import PgDatabase

PUSH = "SELECT idempotency_key, result FROM acode_sync.push(%s, %s, %s::jsonb)"
T = "2026-01-01T00:00:00.000Z"
GROWN = 30_000


def _chat(key: str, chat_id: str, base: int = 0, op: str = "upsert") -> dict[str, Any]:
    payload = {"id": chat_id, "title": "t", "privacy": "FULL", "created_at": T, "updated_at": T}
    return {
        "key": key,
        "entity_type": "chat",
        "entity_id": chat_id,
        "op": op,
        "base_version": base,
        "changed_at": T,
        "payload": {**payload, "deleted_at": None},
    }


def _message(key: str, message_id: str, base: int = 0, op: str = "upsert") -> dict[str, Any]:
    return {
        "key": key,
        "entity_type": "message",
        "entity_id": message_id,
        "op": op,
        "base_version": base,
        "changed_at": T,
        "payload": {
            "id": message_id,
            "chat_id": "c1",
            "role": "user",
            "content": f"text of {message_id}",
            "privacy": "FULL",
            "created_at": T,
            "updated_at": T,
            "deleted_at": None,
        },
    }


def _push(conn: psycopg.Connection[Any], batch: str, device: str, items: list[Any]) -> list[Any]:
    return [tuple(row) for row in conn.execute(PUSH, (batch, device, json.dumps(items)))]


def _scans(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """Sequential and index scans per table, counted by this session and not
    reported yet."""
    return {
        name: (seq, idx)
        for name, seq, idx in conn.execute(
            "SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables "
            "WHERE schemaname = 'acode_sync'"
        )
    }


def test_a_session_planned_on_small_tables_probes_grown_ones_by_index(pg: PgDatabase) -> None:
    with psycopg.connect(pg.device_url(), autocommit=True) as device:
        _push(device, "b0", "dev-a", [_chat("k-c1", "c1"), _chat("k-c2", "c2")])
        for n in range(8):  # past the five calls after which a cached plan may go generic
            items = [_message(f"k-{n}-{i}", f"m-{n}-{i}") for i in range(5)]
            assert {r[1] for r in _push(device, f"b{n + 1}", "dev-a", items)} == {"applied"}
        with pg.admin() as admin:
            admin.execute(
                "INSERT INTO acode_sync.messages (owner_id, id, chat_id, role, content) "
                "SELECT 'acode_test_alice', 'grown-' || n, 'c1', 'user', 'x' "
                "FROM generate_series(1, %s) n",
                (GROWN,),
            )
            # Admin rows are versioned and logged by the triggers: the change
            # log grows with them.
            admin.execute(
                "INSERT INTO acode_sync.chats (owner_id, id, title) "
                "SELECT 'acode_test_alice', 'grown-chat-' || n, 't' "
                "FROM generate_series(1, %s) n",
                (GROWN,),
            )
        batch = [
            _message("k-new", "m-new"),
            _message("k-edit", "m-0-0", base=1),  # an edit on the version it has
            _message("k-stale", "m-0-1", base=0),  # on a version behind: a conflict
            _message("k-0-2", "m-0-2"),  # a key logged already: a duplicate
            _message("k-gone", "m-0-3", op="withdraw"),
            _chat("k-c1-again", "c1", base=1),
            _chat("k-c2-gone", "c2", base=1, op="withdraw"),
        ]
        with device.transaction():
            # The session's counts not yet reported (its earlier transactions'
            # too) are the baseline: the difference is this push's.
            before = _scans(device)
            answers = dict(_push(device, "b-grown", "dev-b", batch))
            after = _scans(device)
        scans = {
            name: (after[name][0] - seq, after[name][1] - idx)
            for name, (seq, idx) in before.items()
        }
    assert answers == {
        "k-new": "applied",
        "k-edit": "applied",
        "k-stale": "conflict",
        "k-0-2": "duplicate",
        "k-gone": "applied",
        "k-c1-again": "applied",
        "k-c2-gone": "applied",
    }
    for table in ("chats", "messages", "changes"):
        seq, idx = scans[table]
        assert seq == 0, (table, scans)
        assert idx > 0, (table, scans)
