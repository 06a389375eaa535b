"""Events for a host UI: what a started :class:`~acode_sync.SyncEngine` tells
its listeners.

Three kinds, each fired once per change of state, on the engine's own thread
(the one :meth:`SyncEngine.start` made), right after the cycle that caused it:

- :class:`EntityStatusChanged`: a chat's or message's ``sync_status`` moved
  (``Pending`` -> ``Synced``, ``Failed``, ``Conflict``; or a change pulled from
  another device landed: ``old`` is ``None`` for an entity new here);
- :class:`ConflictResolved`: a conflict was decided against this device (the
  remote side won; the local version is preserved, see ``acode sync conflicts``);
- :class:`HealthChanged`: the engine's mode (online, offline, paused, error)
  or health changed; the first one, at start, has ``old`` = ``None``.

A listener must return quickly and must not call back into the engine and
wait for it (``sync_now``, ``stop``) from the engine's thread; hand work to the
host's own thread or a queue (``queue.Queue.put`` is a fine listener).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from acode_sync import outbox
from acode_sync.config import SyncConfig
from acode_sync.health import Health, figures

# The open outbox rows' entities with their current status, one probe each.
_OPEN_ENTITIES = """
SELECT 'chat', c.id, c.sync_status FROM chats c
WHERE c.id IN (SELECT entity_id FROM sync_outbox
               WHERE entity_type = 'chat' AND status IN ('Pending', 'Failed'))
UNION ALL
SELECT 'message', m.id, m.sync_status FROM messages m
WHERE m.id IN (SELECT entity_id FROM sync_outbox
               WHERE entity_type = 'message' AND status IN ('Pending', 'Failed'))
"""
_TABLES = {"chat": "chats", "message": "messages"}
_CHUNK = 500


@dataclass(frozen=True)
class EntityStatusChanged:
    entity_type: str  # 'chat' or 'message'
    entity_id: str
    old: str | None  # None: the entity arrived from another device
    new: str  # 'Pending', 'Synced', 'Conflict' or 'Failed'


@dataclass(frozen=True)
class ConflictResolved:
    conflict_id: int  # the row in sync_conflicts (acode sync conflicts)
    entity_type: str
    entity_id: str
    detected_by: str  # 'push' or 'pull'
    policy: str


@dataclass(frozen=True)
class HealthChanged:
    old: Health | None
    new: Health


Event = EntityStatusChanged | ConflictResolved | HealthChanged

Key = tuple[str, str]


class Tracker:
    """Snapshots before a cycle, differences after it (one local connection)."""

    def __init__(self, conn: sqlite3.Connection, config: SyncConfig) -> None:
        self.conn = conn
        self.config = config
        self._before: dict[Key, str] = {}
        self._outbox = 0
        self._inbox = self._max("SELECT max(seq) FROM sync_inbox")
        self._conflict = self._max("SELECT max(id) FROM sync_conflicts")
        self._health: Health | None = None
        self._shape: tuple[str, bool, bool] | None = None

    def _max(self, sql: str) -> int:
        return int(self.conn.execute(sql).fetchone()[0] or 0)

    def before(self) -> None:
        self._outbox = outbox.max_seq(self.conn)
        self._before = {(t, i): s for t, i, s in self.conn.execute(_OPEN_ENTITIES)}

    def after(self) -> list[Event]:
        events: list[Event] = []
        inbox = self.conn.execute(
            "SELECT entity_type, entity_id FROM sync_inbox "
            "WHERE seq > ? AND status IN ('Applied', 'Conflict') ORDER BY seq",
            (self._inbox,),
        ).fetchall()
        self._inbox = max(self._inbox, self._max("SELECT max(seq) FROM sync_inbox"))
        keys: dict[Key, str | None] = dict(self._before)
        # Written while the cycle ran (and maybe pushed by it): they were Pending.
        for kind, ident in self.conn.execute(
            "SELECT entity_type, entity_id FROM sync_outbox WHERE seq > ?", (self._outbox,)
        ):
            keys.setdefault((kind, ident), "Pending")
        for kind, ident in inbox:
            keys.setdefault((kind, ident), None)
        now = self._statuses(keys)
        for key, old in keys.items():
            new = now.get(key)
            if new is not None and new != old:
                events.append(EntityStatusChanged(key[0], key[1], old, new))
        self._before = {}
        for row in self.conn.execute(
            "SELECT id, entity_type, entity_id, detected_by, policy FROM sync_conflicts "
            "WHERE id > ? AND winner = 'remote' ORDER BY id",
            (self._conflict,),
        ):
            events.append(ConflictResolved(int(row[0]), row[1], row[2], row[3], row[4]))
        self._conflict = max(self._conflict, self._max("SELECT max(id) FROM sync_conflicts"))
        return events

    def _statuses(self, keys: Iterable[Key]) -> dict[Key, str]:
        found: dict[Key, str] = {}
        by_type: dict[str, list[str]] = {}
        for kind, ident in keys:
            by_type.setdefault(kind, []).append(ident)
        for kind, ids in by_type.items():
            table = _TABLES[kind]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT id, sync_status FROM {table} WHERE id IN ({marks})"
                for ident, status in self.conn.execute(sql, chunk):
                    found[(kind, ident)] = status
        return found

    def health(self, now: datetime) -> list[Event]:
        """A HealthChanged when the mode, health or pause flag moved."""
        current = figures(self.conn, now, self.config)
        shape = (current.mode, current.healthy, current.paused)
        if shape == self._shape:
            return []
        old, self._health, self._shape = self._health, current, shape
        return [HealthChanged(old, current)]
