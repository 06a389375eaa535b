"""Conflict resolution (the specification's ConflictResolver).

A conflict is a local change and a remote change to the same entity, neither
made on top of the other. It is detected at push (the change's base version is
behind the server's) and at pull (a remote change arrives for an entity with
local changes still pending). The policy picks the winner:

* ``last_write_wins`` (default): the later change time wins (the server clamps
  times in the future); equal times fall to the larger device id, so every
  device picks the same winner;
* ``local_wins`` / ``remote_wins``.

The losing side is never lost: it is kept in ``sync_conflicts``, written to
``.agent/conflicts/<entity_id>_v<version>.json`` when ``preserve_original``,
and the server keeps both sides in its own conflict log. Every conflict is
logged with ACODE-SYNC-003.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acode_sync.apply import ENTITY_TABLE, apply_row
from acode_sync.clock import iso, parse_iso
from acode_sync.config import SyncConfig
from acode_sync.errors import CONFLICT_DETECTED
from acode_sync.outbox import OutboxRow
from acode_sync.queries import query
from acode_sync.remote import ItemResult
from acode_sync.workspace import write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Side:
    version: int
    changed_at: str
    device: str
    payload: dict[str, Any]


def choose_winner(policy: str, local: Side, remote: Side, now: str) -> str:
    """'local' or 'remote', the same answer on every device for the same pair."""
    if policy == "local_wins":
        return "local"
    if policy == "remote_wins":
        return "remote"
    # A local clock ahead of the server's cannot win by that: clamp like the server.
    local_time = min(parse_iso(local.changed_at), parse_iso(now))
    remote_time = parse_iso(remote.changed_at)
    if local_time != remote_time:
        return "local" if local_time > remote_time else "remote"
    return "local" if local.device > remote.device else "remote"


def record(
    conn: sqlite3.Connection,
    config: SyncConfig,
    where: tuple[str, str, str],
    winner: str,
    local: Side,
    remote: Side,
    conflicts_dir: Path | None,
) -> int:
    """Keep both sides; write the loser to a file when asked. ``where``:
    (entity_type, entity_id, detected_by). Returns the conflict id."""
    entity_type, entity_id, detected_by = where
    loser = remote if winner == "local" else local
    path: str | None = None
    if config.conflict.preserve_original and conflicts_dir is not None:
        conflicts_dir.mkdir(parents=True, exist_ok=True)
        target = conflicts_dir / f"{entity_id}_v{loser.version}.json"
        document = {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "side": "remote" if winner == "local" else "local",
            "version": loser.version,
            "changed_at": loser.changed_at,
            "device": loser.device,
            "policy": config.conflict.policy,
            "payload": loser.payload,
        }
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", "utf-8")
        path = str(target)
    cursor = conn.execute(
        query("insert_conflict"),
        {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "detected_by": detected_by,
            "policy": config.conflict.policy,
            "winner": winner,
            "local_version": local.version,
            "local_changed_at": local.changed_at,
            "local_payload": json.dumps(local.payload),
            "remote_version": remote.version,
            "remote_changed_at": remote.changed_at,
            "remote_payload": json.dumps(remote.payload),
            "preserved_path": path,
        },
    )
    log.warning(
        "%s: conflict detected on %s %s (local v%s, remote v%s): %s wins by %s%s",
        CONFLICT_DETECTED,
        entity_type,
        entity_id,
        local.version,
        remote.version,
        winner,
        config.conflict.policy,
        f"; loser kept in {path}" if path else "",
    )
    return int(cursor.lastrowid or 0)


def remote_side(row: dict[str, Any]) -> Side:
    """The server's row (as returned by push or pull) as one side of a conflict,
    its times in the wire shape (UTC, milliseconds)."""
    payload = {
        k: v
        for k, v in row.items()
        if k not in ("version", "changed_at", "origin_device", "idempotency_key", "batch_id")
    }
    for key in ("created_at", "updated_at", "deleted_at"):
        if isinstance(payload.get(key), str):
            payload[key] = iso(parse_iso(payload[key]))
    return Side(
        version=int(row["version"]),
        changed_at=iso(parse_iso(str(row["changed_at"]))),
        device=str(row.get("origin_device") or ""),
        payload=payload,
    )


def _decide(
    conn: sqlite3.Connection,
    config: SyncConfig,
    where: tuple[str, str, str],
    local_side: Side,
    remote: Side,
    *,
    withdrawn: bool,
    now: str,
    conflicts_dir: Path | None,
) -> str:
    """The winner, with both sides recorded. ``where``: (entity_type,
    entity_id, detected_by). A withdrawal (privacy LOCAL_ONLY on its origin
    device) is the owner's privacy decision: no policy overrides it."""
    winner = (
        "remote" if withdrawn else choose_winner(config.conflict.policy, local_side, remote, now)
    )
    record(conn, config, where, winner, local_side, remote, conflicts_dir)
    return winner


def _newest_open(conn: sqlite3.Connection, entity_type: str, entity_id: str) -> Any:
    """The entity's newest open outbox row: it carries the local side."""
    return conn.execute(
        query("newest_open_outbox_row"), {"entity_type": entity_type, "entity_id": entity_id}
    ).fetchone()


def _remote_wins(
    conn: sqlite3.Connection,
    config: SyncConfig,
    entity_type: str,
    entity_id: str,
    remote: Side,
    now: str,
    *,
    from_seq: int = 0,
) -> None:
    """This device's open rows of the entity lost (from ``from_seq`` on): they
    become Conflict history, and the server's row is applied."""
    conn.execute(
        query("outbox_lost_conflict"),
        {
            "now": now,
            "error": f"{CONFLICT_DETECTED}: conflict: remote wins ({config.conflict.policy})",
            "entity_type": entity_type,
            "entity_id": entity_id,
            "from_seq": from_seq,
        },
    )
    apply_row(conn, entity_type, entity_id, remote.version, remote.payload, status="Conflict")


def _rebase(
    conn: sqlite3.Connection, entity_type: str, entity_id: str, version: int, after_seq: int = 0
) -> None:
    """The entity's open rows after ``after_seq`` now stand on the server's ``version``."""
    conn.execute(
        query("rebase_open_outbox_rows"),
        {
            "version": version,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "after_seq": after_seq,
        },
    )


def resolve_push_conflict(
    conn: sqlite3.Connection,
    config: SyncConfig,
    device_id: str,
    row: OutboxRow,
    payload: str,
    result: ItemResult,
    now: str,
    conflicts_dir: Path | None = None,
) -> str:
    """The server refused ``row`` as a conflict: resolve it by policy, inside the
    caller's write transaction. Returns the winner."""
    server_row = result.server_row or {}
    remote = remote_side(server_row)
    newest = _newest_open(conn, row.entity_type, row.entity_id)
    local_payload = json.loads(newest["payload"]) if newest else json.loads(payload)
    changed_at = newest["changed_at"] if newest else row.changed_at
    local_side = Side(row.base_version, changed_at, device_id, local_payload)
    winner = _decide(
        conn,
        config,
        (row.entity_type, row.entity_id, "push"),
        local_side,
        remote,
        withdrawn=server_row.get("privacy") == "LOCAL_ONLY",
        now=now,
        conflicts_dir=conflicts_dir,
    )
    if winner == "remote":
        _remote_wins(conn, config, row.entity_type, row.entity_id, remote, now, from_seq=row.seq)
        return winner
    # Made again on top of the server's version, it goes out on the next batch.
    conn.execute(
        query("requeue_on_server_version"),
        {
            "version": remote.version,
            "error": f"{CONFLICT_DETECTED}: conflict: local wins ({config.conflict.policy}); "
            f"resent on version {remote.version}",
            "seq": row.seq,
        },
    )
    _rebase(conn, row.entity_type, row.entity_id, remote.version, after_seq=row.seq)
    return winner


def resolve_pull_conflict(
    conn: sqlite3.Connection,
    config: SyncConfig,
    device_id: str,
    change: sqlite3.Row,
    now: str,
    conflicts_dir: Path | None = None,
) -> str:
    """A pulled change (an inbox row) for an entity with local changes pending:
    a conflict, unless the remote version is one this device already has.
    Resolved by policy inside the caller's write transaction; returns the
    inbox row's new status: ``Skipped`` (no conflict) or ``Conflict``."""
    entity_type, entity_id = change["entity_type"], change["entity_id"]
    table = ENTITY_TABLE[entity_type]
    found = conn.execute(f"SELECT version FROM {table} WHERE id = ?", (entity_id,)).fetchone()
    local_version = int(found[0]) if found else 0
    if change["version"] <= local_version:
        return "Skipped"
    newest = _newest_open(conn, entity_type, entity_id)
    local_side = Side(local_version, newest["changed_at"], device_id, json.loads(newest["payload"]))
    remote = Side(
        change["version"],
        change["changed_at"],
        change["origin_device"] or "",
        json.loads(change["payload"]),
    )
    winner = _decide(
        conn,
        config,
        (entity_type, entity_id, "pull"),
        local_side,
        remote,
        withdrawn=change["op"] == "withdraw",
        now=now,
        conflicts_dir=conflicts_dir,
    )
    if winner == "remote":
        _remote_wins(conn, config, entity_type, entity_id, remote, now)
        return "Conflict"
    # Keep the local data; its pending change now stands on the remote version.
    _rebase(conn, entity_type, entity_id, remote.version)
    conn.execute(f"UPDATE {table} SET version = ? WHERE id = ?", (remote.version, entity_id))
    return "Conflict"


@dataclass(frozen=True)
class ConflictRecord:
    id: int
    entity_type: str
    entity_id: str
    detected_at: str
    detected_by: str
    policy: str
    winner: str
    local_version: int
    local_changed_at: str | None
    local_payload: str | None
    remote_version: int
    remote_changed_at: str | None
    remote_payload: str | None
    preserved_path: str | None
    acknowledged_at: str | None

    def title(self) -> str:
        """The chat's title (or a message's first words) as the winner left it."""
        side = self.remote_payload if self.winner == "remote" else self.local_payload
        data = json.loads(side or "{}")
        text = data.get("title") if self.entity_type == "chat" else data.get("content")
        return str(text or "")


def list_conflicts(
    conn: sqlite3.Connection, *, include_acknowledged: bool = False
) -> list[ConflictRecord]:
    rows = conn.execute(
        "SELECT * FROM sync_conflicts WHERE ? OR acknowledged_at IS NULL ORDER BY id",
        (int(include_acknowledged),),
    ).fetchall()
    return [ConflictRecord(**dict(row)) for row in rows]


def acknowledge(conn: sqlite3.Connection, conflict_id: int | None, now: str) -> int:
    """Mark one conflict (or, with None, all) as seen. An entity that showed
    Conflict goes back to Synced (or Pending, if it has changes waiting), and
    the outbox rows that lost become history that retention may prune."""
    with write(conn):
        targets = conn.execute(query("unacknowledged_conflicts"), {"id": conflict_id}).fetchall()
        for row in targets:
            conn.execute(
                "UPDATE sync_conflicts SET acknowledged_at = ? WHERE id = ?", (now, row["id"])
            )
            conn.execute(
                "UPDATE sync_outbox SET status = 'Superseded' WHERE status = 'Conflict' "
                "AND entity_type = ? AND entity_id = ?",
                (row["entity_type"], row["entity_id"]),
            )
            waiting = _newest_open(conn, row["entity_type"], row["entity_id"])
            conn.execute(
                f"UPDATE {ENTITY_TABLE[row['entity_type']]} SET sync_status = ? "
                "WHERE id = ? AND sync_status = 'Conflict'",
                ("Pending" if waiting else "Synced", row["entity_id"]),
            )
    return len(targets)
