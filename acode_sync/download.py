"""The download path: the cursor-based puller and the inbox apply (the
specification's InboxProcessor).

Applying a remote row always happens with the echo guard up (see
``workspace.applying_remote``), so it never comes back as an outbox row.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from acode_sync import conflicts
from acode_sync.clock import Clock, iso, parse_iso, utcnow
from acode_sync.config import SyncConfig
from acode_sync.errors import CONFLICT_DETECTED
from acode_sync.link import note_contact
from acode_sync.remote import pull_page
from acode_sync.workspace import applying_remote, write


def _time(value: Any) -> str | None:
    if value is None:
        return None
    return iso(parse_iso(str(value)))


def apply_entity(
    conn: sqlite3.Connection, entity_type: str, row: dict[str, Any], *, status: str = "Synced"
) -> None:
    """Make the local entity equal to the server's row (caller holds the guard).

    A withdrawn entity (privacy LOCAL_ONLY on the server) is removed here, the
    way its owner asked: a chat goes with its messages.
    """
    entity_id = str(row["id"])
    version = int(row["version"])
    if row.get("privacy") == "LOCAL_ONLY":
        if entity_type == "chat":
            conn.execute("DELETE FROM messages WHERE chat_id = ?", (entity_id,))
            conn.execute("DELETE FROM chats WHERE id = ?", (entity_id,))
        else:
            conn.execute("DELETE FROM messages WHERE id = ?", (entity_id,))
        return
    if entity_type == "chat":
        conn.execute(
            "INSERT INTO chats (id, title, privacy, version, sync_status, created_at, "
            "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET title = excluded.title, "
            "privacy = excluded.privacy, version = excluded.version, "
            "sync_status = excluded.sync_status, created_at = excluded.created_at, "
            "updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
            (
                entity_id,
                row.get("title") or "",
                row.get("privacy") or "FULL",
                version,
                status,
                _time(row.get("created_at")),
                _time(row.get("updated_at")),
                _time(row.get("deleted_at")),
            ),
        )
        return
    conn.execute(
        "INSERT INTO messages (id, chat_id, role, content, privacy, version, sync_status, "
        "created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET chat_id = excluded.chat_id, role = excluded.role, "
        "content = excluded.content, privacy = excluded.privacy, version = excluded.version, "
        "sync_status = excluded.sync_status, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
        (
            entity_id,
            row.get("chat_id"),
            row.get("role"),
            row.get("content") or "",
            row.get("privacy") or "FULL",
            version,
            status,
            _time(row.get("created_at")),
            _time(row.get("updated_at")),
            _time(row.get("deleted_at")),
        ),
    )


@dataclass
class PullReport:
    pages: int = 0
    received: int = 0
    applied: int = 0
    skipped: int = 0
    conflicts: int = 0


# Set-based apply of the pending inbox rows that need no decision: newer than
# the local copy, not this device's own change, no local change pending.
# (SQLite's upsert needs a WHERE on its SELECT, hence `WHERE true`-style ANDs.)
_APPLY_CHATS = """
INSERT INTO chats (id, title, privacy, version, sync_status, created_at, updated_at,
                   deleted_at)
SELECT i.entity_id, json_extract(i.payload, '$.title'), json_extract(i.payload, '$.privacy'),
       i.version, 'Synced', json_extract(i.payload, '$.created_at'),
       json_extract(i.payload, '$.updated_at'), json_extract(i.payload, '$.deleted_at')
FROM sync_inbox i
WHERE i.status = 'Pending' AND i.entity_type = 'chat' AND i.op = 'upsert'
ORDER BY i.seq
ON CONFLICT (id) DO UPDATE SET
    title = excluded.title, privacy = excluded.privacy, version = excluded.version,
    sync_status = 'Synced', created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at
WHERE excluded.version > chats.version
"""
_APPLY_MESSAGES = """
INSERT INTO messages (id, chat_id, role, content, privacy, version, sync_status, created_at,
                      updated_at, deleted_at)
SELECT i.entity_id, json_extract(i.payload, '$.chat_id'), json_extract(i.payload, '$.role'),
       coalesce(json_extract(i.payload, '$.content'), ''),
       json_extract(i.payload, '$.privacy'), i.version, 'Synced',
       json_extract(i.payload, '$.created_at'), json_extract(i.payload, '$.updated_at'),
       json_extract(i.payload, '$.deleted_at')
FROM sync_inbox i
WHERE i.status = 'Pending' AND i.entity_type = 'message' AND i.op = 'upsert'
ORDER BY i.seq
ON CONFLICT (id) DO UPDATE SET
    chat_id = excluded.chat_id, role = excluded.role, content = excluded.content,
    privacy = excluded.privacy, version = excluded.version, sync_status = 'Synced',
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    deleted_at = excluded.deleted_at
WHERE excluded.version > messages.version
"""
_CONFLICTING = """
SELECT * FROM sync_inbox i
WHERE i.status = 'Pending'
  AND EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = i.entity_id
              AND o.status IN ('Pending', 'Failed') AND o.entity_type = i.entity_type)
ORDER BY i.seq
"""
_SKIP_ORPHANS = """
UPDATE sync_inbox SET status = 'Skipped', applied_at = ?
WHERE status = 'Pending' AND entity_type = 'message' AND op = 'upsert'
  AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.id = json_extract(sync_inbox.payload, '$.chat_id')
                  AND c.privacy <> 'LOCAL_ONLY')
"""
_APPLY_WITHDRAWALS = (
    "DELETE FROM messages WHERE chat_id IN (SELECT entity_id FROM sync_inbox "
    "WHERE status = 'Pending' AND op = 'withdraw' AND entity_type = 'chat')",
    "DELETE FROM messages WHERE id IN (SELECT entity_id FROM sync_inbox "
    "WHERE status = 'Pending' AND op = 'withdraw' AND entity_type = 'message')",
    "DELETE FROM chats WHERE id IN (SELECT entity_id FROM sync_inbox "
    "WHERE status = 'Pending' AND op = 'withdraw' AND entity_type = 'chat')",
)


# A chat's privacy is its messages' privacy too (the stricter of the two goes
# to the server). When a chat's level changes on another device, that device
# captures again the messages it has; the ones only this device holds, or holds
# with content the other has not, are this device's to capture again at their
# new level: REDACTED takes their content off the server, FULL puts it back.
# Each page notes the level a chat had before the pull changed it (in a table,
# so that a pull cut short keeps it), and the capture waits until the pull has
# caught up: messages on later pages may bring the new level themselves.
_NOTE_CHAT_LEVELS = """
INSERT OR IGNORE INTO sync_recapture (chat_id, level_before, after_seq)
SELECT c.id, c.privacy, (SELECT min(seq) FROM sync_inbox WHERE status = 'Pending') - 1
FROM chats c
WHERE c.id IN (SELECT entity_id FROM sync_inbox WHERE status = 'Pending' AND entity_type = 'chat')
"""
_LEVEL_CHANGED = """
SELECT 1 FROM sync_recapture r JOIN chats c ON c.id = r.chat_id
WHERE r.level_before <> c.privacy
  AND r.level_before IN ('FULL', 'REDACTED') AND c.privacy IN ('FULL', 'REDACTED')
LIMIT 1
"""
# Messages of their own level FULL (a REDACTED one stays REDACTED, a LOCAL_ONLY
# one never travels) in a chat that went FULL <-> REDACTED, except those that
# arrived during the pull at that level and those already owed to the server
# (the send-time privacy check covers them). The same payload as the capture
# triggers'. CROSS JOIN fixes the order: from the few chats to their messages.
_RECAPTURE_MESSAGES = """
INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version, payload,
                         changed_at)
SELECT (SELECT key FROM sync_new_key WHERE length(m.id) >= 0), 'message', m.id, 'upsert',
       m.version,
       json_object('id', m.id, 'chat_id', m.chat_id, 'role', m.role,
                   'content', CASE WHEN c.privacy = 'FULL' THEN m.content END,
                   'privacy', c.privacy,
                   'created_at', m.created_at, 'updated_at', m.updated_at,
                   'deleted_at', m.deleted_at),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM sync_recapture r
CROSS JOIN chats c ON c.id = r.chat_id
CROSS JOIN messages m ON m.chat_id = c.id
WHERE r.level_before <> c.privacy
  AND r.level_before IN ('FULL', 'REDACTED') AND c.privacy IN ('FULL', 'REDACTED')
  AND m.privacy = 'FULL'
  AND (m.id, c.privacy) NOT IN (SELECT i.entity_id, json_extract(i.payload, '$.privacy')
                                FROM sync_inbox i
                                WHERE i.seq > (SELECT min(after_seq) FROM sync_recapture)
                                  AND i.status = 'Applied' AND i.entity_type = 'message'
                                  AND json_extract(i.payload, '$.privacy') IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = m.id
                  AND o.status IN ('Pending', 'Failed') AND o.entity_type = 'message')
ORDER BY m.created_at, m.id
"""
_RECAPTURED_PENDING = """
UPDATE messages SET sync_status = 'Pending'
WHERE sync_status <> 'Pending'
  AND chat_id IN (SELECT r.chat_id FROM sync_recapture r JOIN chats c ON c.id = r.chat_id
                  WHERE r.level_before <> c.privacy)
  AND EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = messages.id
              AND o.status IN ('Pending', 'Failed') AND o.entity_type = 'message')
"""

# An inbox row carries its entity's current state, so one whose origin is this
# device means the server's current version came from this device's own change.
_OWN_LATEST = (
    "WITH own AS (SELECT entity_id, max(version) AS version FROM sync_inbox "
    "WHERE status = 'Pending' AND origin_device = :me AND entity_type = '{kind}' "
    "GROUP BY entity_id) "
)
_OWN_VERSIONS = tuple(
    statement
    for table, kind in (("chats", "chat"), ("messages", "message"))
    for statement in (
        _OWN_LATEST.format(kind=kind)
        + "UPDATE sync_outbox SET base_version = own.version FROM own "
        f"JOIN {table} e ON e.id = own.entity_id "
        "WHERE sync_outbox.entity_id = own.entity_id AND sync_outbox.status IN ('Pending', "
        f"'Failed') AND sync_outbox.entity_type = '{kind}' "
        "AND sync_outbox.base_version = e.version AND e.version < own.version",
        _OWN_LATEST.format(kind=kind) + f"UPDATE {table} SET version = own.version FROM own "
        f"WHERE {table}.id = own.entity_id AND {table}.version < own.version",
    )
)


class Puller:
    """Pull pages of the change log after the cursor; apply them under the guard."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: SyncConfig,
        device_id: str,
        *,
        clock: Clock = utcnow,
        conflicts_dir: Path | None = None,
    ) -> None:
        self.conn = conn
        self.config = config
        self.device_id = device_id
        self.clock = clock
        self.conflicts_dir = conflicts_dir

    def pull(self, remote: psycopg.Connection[Any], *, max_pages: int | None = None) -> PullReport:
        report = PullReport()
        self.apply_inbox(report)  # whatever a crash left between the two steps
        page_size = self.config.download.page_size
        caught_up = False
        while max_pages is None or report.pages < max_pages:
            cursor = self.conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0]
            rows = pull_page(remote, cursor, page_size, self.device_id)
            with write(self.conn):
                if rows:
                    self.conn.executemany(
                        "INSERT OR IGNORE INTO sync_inbox (seq, idempotency_key, entity_type, "
                        "entity_id, op, version, origin_device, changed_at, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    cursor = rows[-1][0]
                now = iso(self.clock())
                self.conn.execute(
                    "UPDATE sync_state SET pull_cursor = ?, last_pull_at = ? WHERE id = 1",
                    (cursor, now),
                )
                note_contact(self.conn, now)
            if not rows:
                caught_up = True
                break
            report.pages += 1
            report.received += len(rows)
            self.apply_inbox(report)
            if len(rows) < page_size:
                caught_up = True
                break
        if caught_up:  # the log has nothing after the cursor
            self.recapture()
        return report

    def recapture(self) -> None:
        """Capture again the messages of chats whose level this pull changed."""
        if self.conn.execute("SELECT 1 FROM sync_recapture LIMIT 1").fetchone() is None:
            return
        with write(self.conn):
            if self.conn.execute(_LEVEL_CHANGED).fetchone() is not None:
                self.conn.execute(_RECAPTURE_MESSAGES)
                self.conn.execute(_RECAPTURED_PENDING)
            self.conn.execute("DELETE FROM sync_recapture")

    def apply_inbox(self, report: PullReport) -> None:
        """Apply every pending inbox row in one guarded transaction."""
        waiting = "SELECT 1 FROM sync_inbox WHERE status = 'Pending' LIMIT 1"
        if self.conn.execute(waiting).fetchone() is None:
            return
        now = iso(self.clock())
        with applying_remote(self.conn):
            # This device's own changes come back through the log: not re-applied,
            # but their version is taken (and rows captured on the one before are
            # rebased onto it): what the server did of our own change, such as
            # withdrawing the messages of a chat we withdrew, is no conflict.
            for statement in _OWN_VERSIONS:
                self.conn.execute(statement, {"me": self.device_id})
            own = self.conn.execute(
                "UPDATE sync_inbox SET status = 'Skipped', applied_at = ? "
                "WHERE status = 'Pending' AND origin_device = ?",
                (now, self.device_id),
            ).rowcount
            report.skipped += own
            self.conn.execute(_NOTE_CHAT_LEVELS)
            # Conflicts: remote changes for entities with local changes pending,
            # found through the outbox's index of open rows, one probe per change.
            for row in self.conn.execute(_CONFLICTING).fetchall():
                self._resolve(row, now, report)
            for statement in _APPLY_WITHDRAWALS:
                self.conn.execute(statement)
            self.conn.execute(_APPLY_CHATS)
            # A message whose chat is not here (withdrawn, or LOCAL_ONLY on this
            # device) stays out: privacy decided elsewhere is not undone here.
            report.skipped += self.conn.execute(_SKIP_ORPHANS, (now,)).rowcount
            self.conn.execute(_APPLY_MESSAGES)
            applied = self.conn.execute(
                "UPDATE sync_inbox SET status = 'Applied', applied_at = ? WHERE status = 'Pending'",
                (now,),
            ).rowcount
            report.applied += applied

    def _resolve(self, row: sqlite3.Row, now: str, report: PullReport) -> None:
        """A remote change for an entity with local changes pending: a conflict,
        unless the remote version is one this device already has."""
        table = "chats" if row["entity_type"] == "chat" else "messages"
        local_row = self.conn.execute(
            f"SELECT version FROM {table} WHERE id = ?", (row["entity_id"],)
        ).fetchone()
        local_version = int(local_row[0]) if local_row else 0
        if row["version"] <= local_version:
            self._mark(row, "Skipped", now)
            report.skipped += 1
            return
        newest = self.conn.execute(
            "SELECT seq, payload, changed_at FROM sync_outbox WHERE entity_type = ? "
            "AND entity_id = ? AND status IN ('Pending', 'Failed') ORDER BY seq DESC LIMIT 1",
            (row["entity_type"], row["entity_id"]),
        ).fetchone()
        remote_payload = json.loads(row["payload"])
        local = conflicts.Side(
            local_version, newest["changed_at"], self.device_id, json.loads(newest["payload"])
        )
        remote = conflicts.Side(
            row["version"], row["changed_at"], row["origin_device"] or "", remote_payload
        )
        # A withdrawal is the owner's privacy decision: it always wins.
        if row["op"] == "withdraw":
            winner = "remote"
        else:
            winner = conflicts.choose_winner(self.config.conflict.policy, local, remote, now)
        conflicts.record(
            self.conn,
            self.config,
            entity_type=row["entity_type"],
            entity_id=row["entity_id"],
            detected_by="pull",
            winner=winner,
            local=local,
            remote=remote,
            conflicts_dir=self.conflicts_dir,
        )
        report.conflicts += 1
        if winner == "local":
            # Keep the local data; its pending change now stands on the remote version.
            self.conn.execute(
                "UPDATE sync_outbox SET base_version = ? WHERE entity_type = ? "
                "AND entity_id = ? AND status IN ('Pending', 'Failed')",
                (row["version"], row["entity_type"], row["entity_id"]),
            )
            self.conn.execute(
                f"UPDATE {table} SET version = ? WHERE id = ?", (row["version"], row["entity_id"])
            )
            self._mark(row, "Conflict", now)
            return
        self.conn.execute(
            "UPDATE sync_outbox SET status = 'Conflict', synced_at = ?, last_error = ? "
            "WHERE entity_type = ? AND entity_id = ? AND status IN ('Pending', 'Failed')",
            (
                now,
                f"{CONFLICT_DETECTED}: conflict: remote wins ({self.config.conflict.policy})",
                row["entity_type"],
                row["entity_id"],
            ),
        )
        remote_payload["version"] = row["version"]
        apply_entity(self.conn, row["entity_type"], remote_payload, status="Conflict")
        self._mark(row, "Conflict", now)

    def _mark(self, row: sqlite3.Row, status: str, now: str) -> None:
        self.conn.execute(
            "UPDATE sync_inbox SET status = ?, applied_at = ? WHERE seq = ?",
            (status, now, row["seq"]),
        )
