"""The server migrations: by psql or by the runner, twice or once, the same schema."""

from __future__ import annotations

import subprocess
from typing import Any

import psycopg

from acode_sync.migrations import canonical_schema, migrate_remote, shipped
from tests.fix_local import needs

# Everything a migration can make or change in schema acode_sync, each as
# (name, query); every query is ordered, so two equal schemas give equal rows.
CATALOG: tuple[tuple[str, str], ...] = (
    (
        "relations",  # tables, indexes, sequences, composite types; RLS flags; owner
        "SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, "
        "pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = "
        "'acode_sync'::regnamespace ORDER BY 1",
    ),
    (
        "columns",  # of tables and of composite types alike, in their order
        "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull, a.attidentity, a.attgenerated, co.collname, a.attstattarget, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100 "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'acode_sync'::regnamespace AND a.attnum > 0 "
        "AND NOT a.attisdropped AND c.relkind IN ('r', 'c', 'v') ORDER BY 1, 2",
    ),
    (
        "constraints",
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'acode_sync'::regnamespace ORDER BY 1, 2",
    ),
    (
        "indexes",
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'acode_sync' ORDER BY 1",
    ),
    (
        "triggers",
        "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled "
        "FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class "
        "WHERE relnamespace = 'acode_sync'::regnamespace) ORDER BY 1, 2",
    ),
    (
        "functions",  # whole definitions: body, language, volatility, SET, security
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), "
        "pg_get_userbyid(p.proowner) FROM pg_proc p "
        "WHERE p.pronamespace = 'acode_sync'::regnamespace ORDER BY 1",
    ),
    (
        "policies",
        "SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check "
        "FROM pg_policies WHERE schemaname = 'acode_sync' ORDER BY 1, 2",
    ),
    (
        "privileges",  # on the schema, its tables and its functions, one grant a row
        "SELECT kind, name, pg_get_userbyid(a.grantor), "
        "CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable FROM ("
        " SELECT 'schema' AS kind, nspname::text AS name, "
        "  coalesce(nspacl, acldefault('n', nspowner)) AS acl "
        "  FROM pg_namespace WHERE nspname = 'acode_sync'"
        " UNION ALL SELECT 'relation', relname::text, "
        "  coalesce(relacl, acldefault('r', relowner)) FROM pg_class "
        "  WHERE relnamespace = 'acode_sync'::regnamespace AND relkind IN ('r', 'v', 'S')"
        " UNION ALL SELECT 'function', oid::regprocedure::text, "
        "  coalesce(proacl, acldefault('f', proowner)) FROM pg_proc "
        "  WHERE pronamespace = 'acode_sync'::regnamespace"
        " UNION ALL SELECT 'type', typname::text, coalesce(typacl, acldefault('T', typowner)) "
        "  FROM pg_type WHERE typnamespace = 'acode_sync'::regnamespace AND typtype = 'c'"
        "  AND typrelid IN (SELECT oid FROM pg_class WHERE relkind = 'c')"
        ") o CROSS JOIN LATERAL aclexplode(o.acl) a ORDER BY 1, 2, 3, 4, 5",
    ),
    (
        "roles",  # the device group's attributes (memberships are cluster-wide)
        "SELECT rolname, rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, "
        "rolbypassrls FROM pg_roles WHERE rolname = 'acode_sync_device'",
    ),
    ("migrations", "SELECT name FROM acode_sync.migrations ORDER BY 1"),
)


def schema_of(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in CATALOG}


def test_runner_applies_once_and_then_is_a_no_op(empty_db: str) -> None:
    assert migrate_remote(empty_db) == [m.name for m in shipped("postgres")]
    first = schema_of(empty_db)
    assert migrate_remote(empty_db) == []
    assert schema_of(empty_db) == first
    # Row-level security on every table a device can reach (migrations: admins only).
    tables = [(name, rls) for name, kind, rls, _, _ in first["relations"] if kind == "r"]
    assert [name for name, rls in tables if not rls] == ["migrations"]
    assert (
        "changes_idempotency",
        "CREATE UNIQUE INDEX changes_idempotency ON acode_sync.changes USING btree "
        "(owner_id, idempotency_key)",
    ) in first["indexes"]
    (log_changes,) = [d for f, d, _ in first["functions"] if f == "acode_sync.log_changes()"]
    assert "SECURITY DEFINER" in log_changes


@needs("psql")
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


@needs("psql")
def test_every_migration_in_order_equals_schema_sql(empty_db: str) -> None:
    migrate_remote(empty_db)
    migrated = schema_of(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA acode_sync CASCADE")
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db],
        input=canonical_schema("postgres"),
        text=True,
        check=True,
        capture_output=True,
    )
    fresh = schema_of(empty_db)
    for part, _ in CATALOG:
        assert fresh[part] == migrated[part], part
    assert migrate_remote(empty_db) == []  # schema.sql records what it stands for
