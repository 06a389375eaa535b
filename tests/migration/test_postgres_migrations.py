"""The server migrations: by psql or by the runner, twice or once, the same schema."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import psycopg
import pytest

from acode_sync.migrations import migrate_remote, shipped


def schema_of(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'acode_sync' ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'acode_sync' ORDER BY 1"
        ).fetchall()
        rls = conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE nspname = 'acode_sync' AND relkind = 'r' ORDER BY 1"
        ).fetchall()
        triggers = conn.execute(
            "SELECT event_object_table, trigger_name, action_timing, event_manipulation "
            "FROM information_schema.triggers WHERE trigger_schema = 'acode_sync' ORDER BY 1, 2, 4"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname, prosecdef FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE nspname = 'acode_sync' ORDER BY 1"
        ).fetchall()
    return {
        "columns": columns,
        "indexes": indexes,
        "rls": rls,
        "triggers": triggers,
        "functions": functions,
    }


def test_runner_applies_once_and_then_is_a_no_op(empty_db: str) -> None:
    assert migrate_remote(empty_db) == [m.name for m in shipped("postgres")]
    first = schema_of(empty_db)
    assert migrate_remote(empty_db) == []
    assert schema_of(empty_db) == first
    # Row-level security on every table a device can reach (migrations: admins only).
    assert [name for name, enabled in first["rls"] if not enabled] == ["migrations"]
    assert (
        "changes_idempotency",
        "CREATE UNIQUE INDEX changes_idempotency ON acode_sync.changes USING btree "
        "(owner_id, idempotency_key)",
    ) in first["indexes"]
    assert ("log_changes", True) in first["functions"]  # SECURITY DEFINER


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs psql")
def test_psql_applies_the_files_twice_to_the_same_schema(empty_db: str) -> None:
    for _ in range(2):
        for migration in shipped("postgres"):
            subprocess.run(
                ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db],
                input=migration.sql,
                text=True,
                check=True,
                capture_output=True,
            )
    assert migrate_remote(empty_db) == []  # the files recorded themselves
    by_psql = schema_of(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA acode_sync CASCADE")
    migrate_remote(empty_db)
    assert schema_of(empty_db) == by_psql
