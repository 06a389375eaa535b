"""The upload's planning of a round (``Uploader._plan``: claim, the item checks,
privacy now, the batch, the wire JSON) against a reference: the plainer code
it replaced (one lookup per concern, a ``json.dumps`` per item), kept here.
Random outbox contents with hostile rows (bytes that are not UTF-8, NUL, lone
surrogates, broken or foreign JSON, orphans, oversized payloads), every
privacy level changed after capture, rows waiting out a backoff or failed for
good; both plan the same copy of the workspace, round after round, and must
agree on every round, every report and every row they mark."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from acode_sync import claim, privacy, validate
from acode_sync.apply import ENTITY_TABLE
from acode_sync.batching import coalesce, take_batch
from acode_sync.clock import iso
from acode_sync.config import parse_config
from acode_sync.errors import CONNECTION_FAILED, INVALID_PAYLOAD
from acode_sync.migrations import migrate_local
from acode_sync.outbox import COLUMNS, OPEN, PENDING, OutboxRow
from acode_sync.queries import query
from acode_sync.rounds import PushReport, Round
from acode_sync.text import printable
from acode_sync.upload import Uploader
from acode_sync.workspace import connect, write

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LEVELS = privacy.LEVELS
RANK = {level: rank for rank, level in enumerate(LEVELS)}

# -- the reference: the planning as it was before the claim read the facts ----

CHECK_JSON = """
SELECT o.seq,
       CASE WHEN NOT json_valid(o.payload) THEN 'payload: not valid JSON'
            WHEN json_type(o.payload) <> 'object' THEN 'payload: not a JSON object'
            WHEN json_extract(o.payload, '$.id') IS NOT o.entity_id
                THEN 'id: the payload''s id ' || quote(json_extract(o.payload, '$.id'))
                     || ' differs from the item''s ' || quote(o.entity_id)
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND json_type(o.payload, '$.chat_id') IS NOT 'text'
                THEN 'chat_id: missing'
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND NOT EXISTS (SELECT 1 FROM chats c
                                 WHERE c.id = json_extract(o.payload, '$.chat_id'))
                THEN 'chat_id: no chat ' || quote(json_extract(o.payload, '$.chat_id'))
                     || ' in this workspace'
       END
FROM sync_outbox o
WHERE o.seq IN (SELECT value FROM json_each(:seqs))
"""


def reference_claim(
    conn: sqlite3.Connection,
    now: datetime,
    limit: int,
    after: int,
    ignore_backoff: bool,
    release_link_failures: bool,
) -> tuple[list[OutboxRow], bool]:
    stamp = iso(now)

    def due(row: OutboxRow) -> bool:
        return (
            ignore_backoff
            or row.status == "Pending"
            or (row.next_retry_at or "") <= stamp
            or (release_link_failures and row.link_failure)
        )

    cursor = conn.execute(
        f"SELECT {COLUMNS} FROM sync_outbox WHERE {OPEN} "
        f"AND ({PENDING} OR next_retry_at IS NOT NULL) AND seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    )
    cursor.row_factory = None
    rows = [OutboxRow(*values) for values in cursor.fetchall()]
    if all(due(row) for row in rows):
        return rows, True
    return claim._claim_around(conn, due, limit, after, claim._NEWEST), False


def reference_check(
    conn: sqlite3.Connection, rows: Sequence[OutboxRow], item_bytes_max: int
) -> dict[int, str]:
    reasons: dict[int, str] = {}
    for row in rows:
        why = validate._check_text_and_size(row, item_bytes_max)
        if why is not None:
            reasons[row.seq] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
    unjudged = [row.seq for row in rows if row.seq not in reasons]
    if unjudged:
        for seq, why in conn.execute(CHECK_JSON, {"seqs": json.dumps(unjudged)}):
            if why is not None:
                reasons[int(seq)] = f"{INVALID_PAYLOAD}: invalid payload: {why}"
    return reasons


def reference_levels(
    conn: sqlite3.Connection, rows: Sequence[OutboxRow]
) -> dict[tuple[str, str], str]:
    chats = json.dumps([r.entity_id for r in rows if r.entity_type == "chat"])
    messages = json.dumps([r.entity_id for r in rows if r.entity_type == "message"])
    levels = {
        ("chat", str(entity_id)): str(level)
        for entity_id, level in conn.execute(
            "SELECT id, privacy FROM chats WHERE id IN (SELECT value FROM json_each(?))",
            (chats,),
        )
    }
    for entity_id, own, chat in conn.execute(
        "SELECT m.id, m.privacy, coalesce(c.privacy, 'FULL') "
        "FROM messages m LEFT JOIN chats c ON c.id = m.chat_id "
        "WHERE m.id IN (SELECT value FROM json_each(?))",
        (messages,),
    ):
        levels[("message", str(entity_id))] = str(max((own, chat), key=RANK.__getitem__))
    return levels


def reference_wire(items: Sequence[tuple[OutboxRow, str]]) -> str:
    parts = []
    for row, payload in items:
        head = json.dumps(
            {
                "key": row.idempotency_key,
                "entity_type": row.entity_type,
                "entity_id": row.entity_id,
                "op": row.op,
                "base_version": row.base_version,
                "changed_at": row.changed_at,
            }
        )
        parts.append(f'{head[:-1]}, "payload": {payload}}}')
    return "[" + ", ".join(parts) + "]"


class ReferenceUploader(Uploader):
    def reference_isolate(self, rows: list[OutboxRow], report: PushReport) -> list[OutboxRow]:
        reasons = reference_check(self.conn, rows, self.config.upload.item_bytes_max)
        if not reasons:
            return rows
        now = iso(self.clock())
        with write(self.conn):
            for row in rows:
                reason = reasons.get(row.seq)
                if reason is None:
                    continue
                report.rejected += 1
                report.errors.append(f"{row.entity_type} {printable(row.entity_id)}: {reason}")
                self.conn.execute(query("fail_for_good"), {"error": reason, "seq": row.seq})
                self.conn.execute(query("supersede_older_by_seq"), {"seq": row.seq, "now": now})
                self.conn.execute(
                    f"UPDATE {ENTITY_TABLE[row.entity_type]} SET sync_status = 'Failed' "
                    "WHERE id = (SELECT entity_id FROM sync_outbox WHERE seq = ?)",
                    (row.seq,),
                )
        return [row for row in rows if row.seq not in reasons]

    def _plan(self, after: int, report: PushReport, ignore_backoff: bool) -> Round | None:
        rows, clean = reference_claim(
            self.conn,
            self.clock(),
            self.config.upload.batch_size,
            after,
            ignore_backoff,
            report.reached,
        )
        if not rows:
            return None
        send = self.reference_isolate(coalesce(rows), report)
        batch = (
            take_batch(send, self.config.upload.batch_size, self.config.upload.batch_bytes_max)
            if send
            else []
        )
        items: list[tuple[OutboxRow, str]] = []
        withheld: list[OutboxRow] = []
        levels = reference_levels(self.conn, batch)
        for row in batch:
            payload = row.payload
            if row.op == "upsert":
                level = levels.get((row.entity_type, row.entity_id), "FULL")
                if level == "LOCAL_ONLY":
                    withheld.append(row)
                    continue
                payload = privacy.at_level(row.entity_type, payload, level)
            items.append((row, payload))
        wire = reference_wire(items) if items else ""
        return Round(rows, send, batch, items, withheld, wire, clean and len(batch) == len(send))


# -- random workspaces ------------------------------------------------------------

HOSTILE_MESSAGES = [
    "CAST(X'41FF42' AS TEXT)",  # not UTF-8
    "'a' || char(0) || 'b'",  # NUL
    "CAST(X'78EDA080' AS TEXT)",  # an encoded lone surrogate
    "'caf' || char(233) || ' ' || char(128512)",  # fit, not ASCII
    "'quote \" back\\\\slash ' || char(10) || char(1)",  # fit, escapes
]


def fill(conn: sqlite3.Connection, rng: random.Random, item_bytes_max: int) -> None:
    """Chats and messages through the capture triggers, then what a hand in
    the sqlite3 shell can do to them and to the outbox."""
    conn.execute("PRAGMA foreign_keys = OFF")  # as the sqlite3 shell
    chats = [f"chat-{n}" for n in range(rng.randint(1, 6))]
    messages: list[str] = []
    with write(conn):
        for chat_id in chats:
            conn.execute(
                "INSERT INTO chats (id, title, privacy) VALUES (?, ?, ?)",
                (chat_id, f"title {chat_id} é", rng.choice(LEVELS)),
            )
        for n in range(rng.randint(20, 160)):
            # Ids JSON must escape, or that are not ASCII: the wire's heads.
            message_id = f"msg-{n}" + rng.choice(["", "", "é", '"q', "\\", "\t", "😀"])
            content = "x" * rng.choice([1, 50, 600, item_bytes_max // 2, item_bytes_max])
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content, privacy) VALUES (?, ?, ?, ?, ?)",
                (message_id, rng.choice(chats), "user", content, rng.choice(LEVELS)),
            )
            messages.append(message_id)
    for _ in range(rng.randint(0, 40)):  # later edits, privacy made stricter or looser
        with write(conn):
            kind = rng.random()
            if kind < 0.4:
                conn.execute(
                    "UPDATE messages SET content = content || '!' WHERE id = ?",
                    (rng.choice(messages),),
                )
            elif kind < 0.6:
                conn.execute(
                    "UPDATE messages SET privacy = ? WHERE id = ?",
                    (rng.choice(LEVELS), rng.choice(messages)),
                )
            elif kind < 0.8:
                conn.execute(
                    "UPDATE chats SET privacy = ? WHERE id = ?",
                    (rng.choice(LEVELS), rng.choice(chats)),
                )
            else:
                conn.execute(
                    "UPDATE chats SET title = title || '?' WHERE id = ?", (rng.choice(chats),)
                )
    with write(conn):
        for n in range(rng.randint(0, 8)):
            hostile = rng.choice(HOSTILE_MESSAGES)
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content) "
                f"VALUES (?, ?, 'user', {hostile})",
                (f"hostile-{n}", rng.choice([*chats, "no-such-chat"])),
            )
        if rng.random() < 0.5:  # an id that is not UTF-8
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content) "
                "VALUES (CAST(X'6261642DFF' AS TEXT), ?, 'user', 'hello')",
                (chats[0],),
            )
        for (seq,) in conn.execute(
            "SELECT seq FROM sync_outbox ORDER BY random() LIMIT ?", (rng.randint(0, 12),)
        ).fetchall():
            edit = rng.choice(
                [
                    "payload = '{\"id\": broken'",
                    "payload = '[1, 2]'",
                    "payload = json_set(payload, '$.id', 'someone-else')",
                    "payload = json_remove(payload, '$.chat_id')",
                    "payload = replace(payload, '\"x', '\"\\ud800x')",
                    "payload = replace(payload, '\"x', '\"\\u00e9x')",
                    "status = 'Failed', next_retry_at = :past, last_error = 'boom'",
                    "status = 'Failed', next_retry_at = :future, last_error = 'boom'",
                    "status = 'Failed', next_retry_at = :future, last_error = :link",
                    "status = 'Failed', next_retry_at = NULL, last_error = 'for good'",
                    "op = 'withdraw'",
                    "base_version = 2.5",  # what a hand can store in an INTEGER column
                    "base_version = 'seven'",
                ]
            )
            conn.execute(
                f"UPDATE sync_outbox SET {edit} WHERE seq = :seq",
                {
                    "seq": seq,
                    "past": iso(NOW - timedelta(minutes=5)),
                    "future": iso(NOW + timedelta(minutes=5)),
                    "link": f"{CONNECTION_FAILED}: the link broke",
                },
            )
        if rng.random() < 0.5:  # entities gone from the workspace, rows still queued
            conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages LIMIT 3)")
            conn.execute("DELETE FROM chats WHERE id = ?", (rng.choice(chats),))
    conn.execute("PRAGMA foreign_keys = ON")


def state(conn: sqlite3.Connection) -> list[Any]:
    """Every row the planning may mark, bytes as stored."""
    return [
        conn.execute(
            "SELECT seq, status, next_retry_at, CAST(last_error AS BLOB) FROM sync_outbox "
            "ORDER BY seq"
        ).fetchall(),
        conn.execute("SELECT CAST(id AS BLOB), sync_status FROM chats ORDER BY 1").fetchall(),
        conn.execute("SELECT CAST(id AS BLOB), sync_status FROM messages ORDER BY 1").fetchall(),
    ]


def uploader(cls: type[Uploader], conn: sqlite3.Connection, rng: random.Random) -> Uploader:
    config = parse_config(
        {
            "sync": {
                "device_id": "dev",
                "upload": {
                    "batch_size": rng.choice([1, 3, 10, 50, 1000]),
                    "batch_bytes_max": rng.choice([700, 5_000, 1_048_576]),
                    "item_bytes_max": 4_000,
                },
            }
        },
        "test",
    )
    return cls(conn, config, "dev", clock=lambda: NOW)


@pytest.mark.parametrize("seed", range(24))
def test_plan_matches_the_reference(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    source = connect(tmp_path / "source.db")
    migrate_local(source)
    fill(source, rng, 4_000)
    conns = []
    for name in ("reference.db", "new.db"):
        conn = connect(tmp_path / name)
        source.backup(conn)
        conns.append(conn)
    source.close()
    # The same limits for both.
    reference = uploader(ReferenceUploader, conns[0], random.Random(seed))
    new = uploader(Uploader, conns[1], random.Random(seed))
    after = 0
    rounds = 0
    while True:
        ignore_backoff = rng.random() < 0.3
        reached = rng.random() < 0.5
        reports = [PushReport(reached=reached), PushReport(reached=reached)]
        want = reference._plan(after, reports[0], ignore_backoff)
        got = new._plan(after, reports[1], ignore_backoff)
        assert got == want, f"round {rounds}"
        assert asdict(reports[1]) == asdict(reports[0])
        assert state(conns[1]) == state(conns[0])
        if want is None:
            if after == 0:
                break
            after = 0
            continue
        rounds += 1
        # As if the batch was answered: its rows and those withheld are done,
        # and the next round starts after it when the round allows.
        done = [row.seq for row in (*want.batch, *want.withheld)] or [want.rows[0].seq]
        for conn in conns:
            with write(conn):
                conn.executemany(
                    "UPDATE sync_outbox SET status = 'Synced' WHERE seq = ?",
                    [(seq,) for seq in done],
                )
        after = want.last_seq if want.clean and rng.random() < 0.5 else 0
    assert rounds > 0
    for conn in conns:
        conn.close()
