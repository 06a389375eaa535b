"""The server side of a benchmark: a scratch database migrated like any
server, the device role that logs in to it, and the baselines a push is held
against (a raw COPY into a table without triggers, and the floor: the same rows
INSERTed straight into ``acode_sync.messages``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from acode_sync.migrations import migrate_remote

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# A login role granted acode_sync_device, created if missing and left in place
# like the test suite's device roles: roles are cluster-wide.
DEVICE_ROLE = "acode_bench_device"

# The COPY baseline's table: LIKE acode_sync.messages INCLUDING ALL (the same
# columns, primary key and index; no triggers, RLS, change log or FK).
COPY_TABLE = "bench_copy.messages"
COPY_COLUMNS = (
    "owner_id",
    "id",
    "chat_id",
    "role",
    "content",
    "privacy",
    "created_at",
    "updated_at",
    "deleted_at",
    "version",
    "changed_at",
    "origin_device",
    "idempotency_key",
    "batch_id",
)
FLOOR_BATCH = 1000  # rows per statement of the floor (see floor_rows)
FLOOR_INSERT = (
    "INSERT INTO acode_sync.messages (id, chat_id, role, content, privacy, created_at, "
    "updated_at, deleted_at, version, changed_at, origin_device, idempotency_key, batch_id) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::bigint[], "
    "%s::timestamptz[], %s::text[], %s::text[], %s::text[])"
)


def with_params(url: str, **changes: Any) -> str:
    """``url`` with some parameters changed; a new user drops the password."""
    params = conninfo_to_dict(url)
    params.update(changes)
    if "user" in changes:
        params.pop("password", None)
    return make_conninfo("", **params)


@contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    """A new database migrated with the server schema, with the device role and
    the COPY baseline's table; dropped on the way out, whatever happens."""
    admin = psycopg.connect(admin_url, autocommit=True)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(sql.Identifier(name))
            )
            url = with_params(admin_url, dbname=name)
            migrate_remote(url)
            ensure_device_role(admin, DEVICE_ROLE)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE SCHEMA bench_copy")
                conn.execute(f"CREATE TABLE {COPY_TABLE} (LIKE acode_sync.messages INCLUDING ALL)")
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA bench_copy TO {}").format(
                        sql.Identifier(DEVICE_ROLE)
                    )
                )
                conn.execute(
                    sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
                        sql.SQL(COPY_TABLE), sql.Identifier(DEVICE_ROLE)
                    )
                )
            yield url
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


def ensure_device_role(admin: psycopg.Connection[Any], role: str) -> None:
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        # A concurrent run may create it meanwhile.
        with suppress(psycopg.errors.DuplicateObject):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT acode_sync_device TO {}").format(sql.Identifier(role)))


def reset_server(db_url: str) -> None:
    """Empty the entity tables, the log and the baseline table (a fresh server, as
    after the migrations); reset the statistics."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE acode_sync.messages, acode_sync.chats, acode_sync.changes, "
            f"acode_sync.conflicts, acode_sync.owner_clock, {COPY_TABLE}"
        )
        conn.execute("CHECKPOINT")  # no checkpoint of an earlier phase lands in this one
        conn.execute("SELECT pg_stat_reset()")


def copy_rows(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> float:
    """One COPY of ``rows`` (COPY_COLUMNS order) into the baseline table, its
    own transaction; seconds."""
    statement = f"COPY {COPY_TABLE} ({', '.join(COPY_COLUMNS)}) FROM STDIN"
    with conn.cursor() as cur:
        start = time.perf_counter()
        with cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - start


def floor_rows(
    conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]], device: str
) -> float:
    """The same rows written straight into ``acode_sync.messages``, 1,000 per
    statement and transaction, through everything the table itself costs: its
    keys and index, the foreign key, row-level security and the change-log
    trigger. No validation, idempotency or conflict check, no local work: what
    no upload of these rows at this batch size can beat. Seconds (the
    connection is in autocommit)."""
    chat_id = rows[0][2]
    conn.execute(
        "INSERT INTO acode_sync.chats (id, title, changed_at, origin_device, idempotency_key) "
        "VALUES (%s, 'floor', now(), %s, %s)",
        (chat_id, device, f"floor-chat-{chat_id}"),
    )
    start = time.perf_counter()
    for first in range(0, len(rows), FLOOR_BATCH):
        part = rows[first : first + FLOOR_BATCH]
        batch_id = f"floor-{first}"
        # COPY_COLUMNS order, owner_id left to its default (current_user).
        columns = [list(column) for column in zip(*(row[1:13] for row in part), strict=True)]
        conn.execute(FLOOR_INSERT, (*columns, [batch_id] * len(part)))
    return time.perf_counter() - start
