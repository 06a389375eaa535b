"""The local migration chain adds up to the canonical schema, by runner or by hand."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from acode_sync.migrations import canonical_schema, migrate_local, pending_local, shipped
from acode_sync.workspace import AGENT_DIR, Workspace, connect
from tests.fix_local import needs


def schema_of(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
    ).fetchall()
    return [(kind, name, " ".join(text.split())) for kind, name, text in rows]


def test_chain_equals_canonical_schema(tmp_path: Path) -> None:
    migrated = connect(tmp_path / "migrated.db")
    assert migrate_local(migrated) == [m.name for m in shipped("sqlite")]
    canonical = connect(tmp_path / "canonical.db")
    canonical.executescript(canonical_schema("sqlite"))
    assert schema_of(migrated) == schema_of(canonical)
    # sqlite_master holds them all, so the comparison covers every kind: the
    # capture triggers and the views as much as the tables and indexes.
    kinds = {kind for kind, _, _ in schema_of(migrated)}
    assert {"table", "index", "trigger", "view"} <= kinds, kinds
    names = {name for _, name, _ in schema_of(migrated)}
    for table in (
        "chats",
        "messages",
        "sync_outbox",
        "sync_inbox",
        "sync_conflicts",
        "sync_state",
        "sync_migrations",
        "sync_migration_checksums",
    ):
        assert table in names
    migrated.close()
    canonical.close()


def test_runner_is_idempotent(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.db")
    assert migrate_local(conn)
    assert migrate_local(conn) == []
    assert pending_local(conn) == []
    conn.close()


@needs("sqlite3")
def test_files_apply_by_hand_and_runner_agrees(tmp_path: Path) -> None:
    path = tmp_path / "by_hand.db"
    for migration in shipped("sqlite"):
        for _ in range(2):  # a second run by hand changes nothing
            subprocess.run(["sqlite3", str(path)], input=migration.sql, text=True, check=True)
    conn = connect(path)
    assert pending_local(conn) == []
    assert migrate_local(conn) == []
    reference = connect(tmp_path / "runner.db")
    migrate_local(reference)
    assert schema_of(conn) == schema_of(reference)
    conn.close()
    reference.close()


def test_a_workspace_of_an_earlier_version_is_migrated_when_opened(tmp_path: Path) -> None:
    (tmp_path / AGENT_DIR).mkdir()
    workspace = Workspace(tmp_path)
    old = connect(workspace.db_path)
    old.executescript(shipped("sqlite")[0].sql)  # as version 0001 left it
    assert pending_local(old)
    old.close()
    conn = workspace.connect()
    assert pending_local(conn) == []
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "sync_recapture" in tables
    conn.close()


def test_an_existing_file_becomes_incremental_and_a_new_one_starts_so(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for migration in shipped("sqlite")[:6]:  # as 0006 left it: no auto_vacuum
        old.executescript(migration.sql)
    assert old.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    old.close()
    conn = connect(tmp_path / "old.db")
    assert migrate_local(conn) == [m.name for m in shipped("sqlite")[6:]]
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    fresh = connect(tmp_path / "new.db")
    migrate_local(fresh)
    assert fresh.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()
    fresh.close()


def test_0008_rebuilds_the_outbox_with_its_rows_and_the_same_checks(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in shipped("sqlite")[:7]:  # as 0007 left it
        old.executescript(migration.sql)
    old.execute("INSERT INTO chats (id, title) VALUES ('c', 't')")
    old.execute("INSERT INTO messages (id, chat_id, role) VALUES ('m', 'c', 'user')")
    old.execute("UPDATE sync_outbox SET status = 'Synced', payload = NULL WHERE seq = 1")
    before = old.execute("SELECT * FROM sync_outbox ORDER BY seq").fetchall()
    old.close()
    conn = connect(path)
    assert migrate_local(conn) == [m.name for m in shipped("sqlite")[7:]]
    after = conn.execute("SELECT * FROM sync_outbox ORDER BY seq").fetchall()
    assert [tuple(row) for row in after] == before
    assert len(before) == 2
    open_rows = (
        "SELECT count(*) FROM sync_outbox INDEXED BY {} WHERE status IN ('Pending', 'Failed')"
    )
    # (0010 replaced 0006's sync_outbox_open_state by one no pending message enters)
    for index in ("sync_outbox_open", "sync_outbox_entity"):
        assert conn.execute(open_rows.format(index)).fetchone()[0] == 1
    for status in ("Pending", "Synced", "Failed", "Conflict", "Superseded"):
        conn.execute(
            "INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, base_version, "
            "payload, status, changed_at) VALUES ('k', 'chat', 'c', 0, '{}', ?, 'now')",
            (status,),
        )
    for bad in ("pending", "Done", ""):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, base_version, "
                "payload, status, changed_at) VALUES ('k', 'chat', 'c', 0, '{}', ?, 'now')",
                (bad,),
            )
    conn.close()
